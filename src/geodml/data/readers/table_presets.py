"""Schemas of the shared datasets (:data:`PRESETS`), and schemas from a preset, a dict
or a TOML file, validated (:func:`resolve_schema`, :func:`load_schema`)."""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path

from pydantic import ValidationError

from geodml.data.readers.table_schema import TableSchema
from geodml.errors import ConfigError

ADULT_COLUMNS = (
    "age", "workclass", "fnlwgt", "education", "education-num", "marital-status",
    "occupation", "relationship", "race", "sex", "capital-gain", "capital-loss",
    "hours-per-week", "native-country", "income",
)
AIRLINE_LEAKY = (
    "DepTime", "ArrTime", "ActualElapsedTime", "AirTime", "ArrDelay", "DepDelay",
    "TaxiIn", "TaxiOut", "Cancelled", "CancellationCode", "Diverted", "CarrierDelay",
    "WeatherDelay", "NASDelay", "SecurityDelay", "LateAircraftDelay", "IsArrDelayed",
)
AVAZU_COLUMNS = (
    "id", "click", "hour", "C1", "banner_pos", "site_id", "site_domain", "site_category",
    "app_id", "app_domain", "app_category", "device_id", "device_ip", "device_model",
    "device_type", "device_conn_type", "C14", "C15", "C16", "C17", "C18", "C19", "C20", "C21",
)
COVTYPE_COLUMNS = tuple(f"c{i}" for i in range(55))
COVTYPE_WILDERNESS = ("c10", "c11", "c12", "c13")  # Wilderness_Area1..4, one-hot
HIGGS_COLUMNS = tuple(f"c{i}" for i in range(29))

# Fixed centres and scales of the tabular presets' numeric columns: x -> (t(x) - C) / S
# (t the identity or log1p). Without an intercept, a column far from zero (a year
# about 2000, a latitude about 41.9, log trip seconds about 6.4) is a badly scaled
# near-constant: L-BFGS stalled on the raw columns (issue 19; docs/data.md). The
# constants are round numbers from what the columns mean (a day's hhmm clock, a
# 12-month year, Chicago's centre at 41.88 N 87.63 W, a 10-minute trip, a 40-hour
# week), near the columns' means and spreads; every DC uses the same ones, so no
# statistic is exchanged. Sparse columns (capital gains) keep 0 as 0: scaled only.
AIRLINE_TRANSFORMS = {
    "Year": "affine:1998:10", "Month": "affine:6.5:3.5", "DayofMonth": "affine:16:9",
    "DayOfWeek": "affine:4:2", "CRSDepTime": "affine:1200:600",
    "CRSArrTime": "affine:1200:600", "CRSElapsedTime": "log1p:4.7:0.5",
    "Distance": "log1p:6.3:0.8",
}
TAXI_TRANSFORMS = {
    "fare": "log1p:2.3:1", "trip_miles": "log1p:1:1", "trip_seconds": "log1p:6.4:1",
    "pickup_latitude": "affine:41.88:0.1", "dropoff_latitude": "affine:41.88:0.1",
    "pickup_longitude": "affine:-87.63:0.1", "dropoff_longitude": "affine:-87.63:0.1",
}
ADULT_TRANSFORMS = {
    "age": "affine:40:15", "fnlwgt": "log1p:12:0.6", "education-num": "affine:10:3",
    "hours-per-week": "affine:40:12", "capital-gain": "log1p:0:9",
    "capital-loss": "log1p:0:7.5",
}


def adult_schema() -> TableSchema:
    """UCI Adult: ", "-separated, no header, ``?`` missing; label ``>50K`` (``>50K.`` in
    adult.test, whose first line must be skipped with ``skip_rows=1``); numerics centred
    and scaled by :data:`ADULT_TRANSFORMS`."""
    return TableSchema(
        label="income", positive=[">50K", ">50K."], negative=["<=50K", "<=50K."],
        numeric=["age", "fnlwgt", "education-num", "capital-gain", "capital-loss",
                 "hours-per-week"],
        transforms=ADULT_TRANSFORMS,
        categorical=["workclass", "education", "marital-status", "occupation",
                     "relationship", "race", "sex", "native-country"],
        missing=["", "?"], header=False, column_names=list(ADULT_COLUMNS), strip=True,
    )


def airline_schema() -> TableSchema:
    """Airline on-time (H2O allyears2k): latin-1, ``NA`` missing, label IsDepDelayed=YES;
    everything known only after departure is dropped (PROVENANCE.md); numerics centred
    and scaled by :data:`AIRLINE_TRANSFORMS`."""
    return TableSchema(
        label="IsDepDelayed", positive=["YES"], negative=["NO"],
        numeric=["Year", "Month", "DayofMonth", "DayOfWeek", "CRSDepTime", "CRSArrTime",
                 "CRSElapsedTime", "Distance"],
        transforms=AIRLINE_TRANSFORMS,
        categorical=["UniqueCarrier", "FlightNum", "TailNum", "Origin", "Dest"],
        drop=list(AIRLINE_LEAKY), missing=["", "NA"], encoding="latin-1",
    )


def taxi_schema() -> TableSchema:
    """Chicago taxi (TFX): label big_tipper; ``tips`` (the label's source) is dropped,
    as is the raw timestamp (its month/day/hour are kept); numerics centred and scaled
    by :data:`TAXI_TRANSFORMS`."""
    return TableSchema(
        label="big_tipper",
        numeric=["fare", "trip_miles", "trip_seconds", "pickup_latitude",
                 "pickup_longitude", "dropoff_latitude", "dropoff_longitude"],
        transforms=TAXI_TRANSFORMS,
        categorical=["pickup_community_area", "dropoff_community_area",
                     "pickup_census_tract", "dropoff_census_tract", "payment_type",
                     "company", "trip_start_month", "trip_start_hour", "trip_start_day"],
        drop=["tips", "trip_start_timestamp"],
    )


def avazu_schema() -> TableSchema:
    """Avazu CTR: label click; ``id`` dropped; every other column categorical. The
    header is recognised when present (``header="auto"``), so the header-less second
    file reads with the same schema."""
    return TableSchema(
        label="click", numeric=[],
        categorical=[c for c in AVAZU_COLUMNS if c not in ("id", "click")],
        drop=["id"], header="auto", column_names=list(AVAZU_COLUMNS),
    )


# Fixed scales of covtype's 10 quantitative columns, from the ranges in UCI's
# covtype.info: elevation (m), aspect (degrees), slope (degrees), horizontal and
# vertical distance to water (m), to roads (m), three hillshade indices (0-255),
# distance to fire points (m). Raw, they span 0..7000 beside 0/1 indicators, which
# leaves logistic regression so ill-conditioned that L-BFGS needs >20,000 iterations.
COVTYPE_SCALES = (4000, 360, 90, 1500, 600, 7500, 255, 255, 255, 7500)


def covtype_schema() -> TableSchema:
    """UCI covtype: no header, columns ``c0..c54``; label class 2 (Lodgepole pine) vs the
    rest; the 54 attributes numeric (``c10..c13`` are the wilderness one-hot), the 10
    quantitative ones divided by fixed scales (:data:`COVTYPE_SCALES`)."""
    return TableSchema(
        label="c54", positive=["2"], negative=["1", "3", "4", "5", "6", "7"],
        numeric=list(COVTYPE_COLUMNS[:54]), header=False, column_names=list(COVTYPE_COLUMNS),
        transforms={c: f"scale:{s}" for c, s in zip(COVTYPE_COLUMNS, COVTYPE_SCALES,
                                                    strict=False)},
    )


def higgs_schema() -> TableSchema:
    """HIGGS (LightGBM example): TSV, no header, label ``c0`` in {0, 1}, 28 dense floats."""
    return TableSchema(
        label="c0", numeric=list(HIGGS_COLUMNS[1:]), delimiter="\t", header=False,
        column_names=list(HIGGS_COLUMNS),
    )


PRESETS: dict[str, Callable[[], TableSchema]] = {
    "adult": adult_schema,
    "airline": airline_schema,
    "taxi": taxi_schema,
    "avazu": avazu_schema,
    "covtype": covtype_schema,
    "higgs": higgs_schema,
}


def resolve_schema(
    schema: TableSchema | dict | None = None, preset: str | None = None, **overrides
) -> TableSchema:
    """A schema from a preset and/or an explicit schema (dict or model), then overrides.

    Later sources win key by key: preset, then ``schema``, then ``overrides``; the
    merged result is validated as a whole (:class:`ConfigError` naming the field).
    """
    merged: dict = {}
    if preset is not None:
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
        merged.update(PRESETS[preset]().model_dump(exclude_unset=True))
    if isinstance(schema, TableSchema):
        merged.update(schema.model_dump(exclude_unset=True))
    elif schema is not None:
        merged.update(schema)
    merged.update({k: v for k, v in overrides.items() if v is not None})
    if not merged:
        raise ConfigError("a table source needs a schema or a preset")
    return _validate(merged, "schema")


def load_schema(path: str | Path, preset: str | None = None, **overrides) -> TableSchema:
    """Read a schema from a TOML file (keys as :class:`TableSchema` fields).

    A ``preset = "name"`` key (or the ``preset`` argument) starts from that preset.
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"{path}: cannot read schema: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None
    named = data.pop("preset", None)
    if named is not None and preset is not None and named != preset:
        raise ConfigError(f"{path}: preset {named!r} conflicts with the given preset {preset!r}")
    preset = named or preset
    base = {} if preset is None else resolve_schema(preset=preset).model_dump(exclude_unset=True)
    base.update(data)
    base.update({k: v for k, v in overrides.items() if v is not None})
    return _validate(base, str(path))


def _validate(data: dict, where: str) -> TableSchema:
    try:
        return TableSchema.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(
            f"field {'.'.join(str(p) for p in err['loc']) or '(schema)'}: {err['msg']}"
            for err in e.errors()
        )
        raise ConfigError(f"{where}: {problems}") from None
