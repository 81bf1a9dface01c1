"""Fuzzing the config loaders (issue 6, item 4): malformed site and deployment files.

hypothesis mutates a valid site config (``load_site_config``) and a valid deployment
file (``load_deployment``): it deletes keys, puts wrong types, negative, huge and
non-finite numbers, dates and unknown keys in, or replaces the file with garbage or
cuts it short. Every load must either succeed or raise ``ConfigError`` whose message
names the file and a field related to the mutation (for a TOML syntax error: the
line); never another exception type. Bounded in time by ``GEODML_FUZZ_SECONDS``
(15% of it per loader); the number of files tried is printed.

The bugs the fuzz found (all fixed) are pinned by the ``test_bug_*`` tests.
"""

from __future__ import annotations

import copy
import datetime as dt
import math
import os
import re
import time
import tomllib
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from geodml.errors import ConfigError
from geodml.planning.deployment import load_deployment
from geodml.site.config import load_site_config

FUZZ_SECONDS = float(os.environ.get("GEODML_FUZZ_SECONDS", "20"))

SITE_BASE = {
    "name": "eu-west", "region": "europe-west1", "listen": "127.0.0.1:0", "insecure": True,
    "data": {"path": "data/eu-west", "format": "libsvm", "mmap": False,
             "options": {"n_features": 123}},
    "executor": {"kind": "threads", "shards": 2, "threads": 2},
    "policy": {"allow_raw_export": False, "min_rows_per_aggregate": 100,
               "allowed_clients": ["coordinator"], "share_support": True},
    "tls": {"ca": "certs/ca.pem", "cert": "certs/eu-west.pem", "key": "certs/eu-west.key"},
}
DEPLOYMENT_BASE = {
    "home": "us-east", "home_ingress_mbps": 2000.0, "insecure": False,
    "tls": {"ca": "certs/ca.pem", "cert": "certs/coordinator.pem",
            "key": "certs/coordinator.key"},
    "defaults": {"bandwidth_mbps": 400.0},
    "regions": {"my-dc": {"area": "br", "egress_usd_per_gb": 0.05,
                          "internet_usd_per_gb": 0.09}},
    "sites": [
        {"name": "us-east", "region": "aws:us-east-1", "address": "us-east.example.com:7001",
         "data": "data/us-east"},
        {"name": "eu-west", "region": "eu-west-1", "address": "eu-west.example.com:7001",
         "tls_server_name": "eu-west"},
        {"name": "ap-south", "region": "ap-south", "address": "10.2.0.5:7001"},
        {"name": "sa-east", "region": "my-dc", "address": "10.3.0.5:7001"},
    ],
    "links": [{"src": "us-east", "dst": "ap-south", "bandwidth_mbps": 300.0, "rtt_ms": 190.0,
               "egress_usd_per_gb": 0.02}],
}


# ------------------------------------------------------------------ a small TOML writer


def toml_string(s: str) -> str:
    """A TOML basic string (control characters escaped, everything else as is)."""
    out = []
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):
        return toml_string(v)
    if isinstance(v, dt.date | dt.time):
        return v.isoformat()
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{toml_string(k)} = {toml_value(x)}"
                                for k, x in v.items()) + " }"
    raise TypeError(type(v))


def to_toml(doc: dict) -> str:
    """Top-level values, then [tables] and [[arrays of tables]]; deeper levels inline."""
    lines, blocks = [], []
    for key, value in doc.items():
        k = toml_string(key)
        if isinstance(value, dict):
            blocks.append(f"\n[{k}]")
            blocks.extend(f"{toml_string(kk)} = {toml_value(vv)}" for kk, vv in value.items())
        elif isinstance(value, list) and value and all(isinstance(x, dict) for x in value):
            for item in value:
                blocks.append(f"\n[[{k}]]")
                blocks.extend(f"{toml_string(kk)} = {toml_value(vv)}" for kk, vv in item.items())
        else:
            lines.append(f"{k} = {toml_value(value)}")
    return "\n".join(lines + blocks) + "\n"


def test_toml_writer_round_trips_the_base_files():
    for doc in (SITE_BASE, DEPLOYMENT_BASE):
        assert tomllib.loads(to_toml(doc)) == doc
    odd = {"a\x00\x7f\"\\": [1.5, float("inf"), dt.date(2020, 1, 2)], "t": {"k": {"x": -1}}}
    assert tomllib.loads(to_toml(odd)) == odd


# ------------------------------------------------------------------ mutations


def paths(doc, prefix=()) -> list[tuple]:
    """Every key path in doc (list items by index)."""
    out = []
    items = doc.items() if isinstance(doc, dict) else enumerate(doc)
    for k, v in items:
        out.append((*prefix, k))
        if isinstance(v, dict | list):
            out.extend(paths(v, (*prefix, k)))
    return out


def tables(doc, prefix=()) -> list[tuple]:
    """The paths of every table (dict) in doc, the top level included."""
    out = [prefix] if isinstance(doc, dict) else []
    items = doc.items() if isinstance(doc, dict) else enumerate(doc)
    for k, v in items:
        if isinstance(v, dict | list):
            out.extend(tables(v, (*prefix, k)))
    return out


def get_parent(doc, path):
    for k in path[:-1]:
        doc = doc[k]
    return doc


HOSTILE = st.one_of(
    st.sampled_from([0, -1, -(2**63), 2**63 - 1, 5000, 0.0, -0.5, 1e308, float("inf"),
                     float("-inf"), float("nan"), True, False, "", "x", "-1", "\x00",
                     [], [1, "a"], {}, {"k": 1}]),
    st.integers(), st.floats(), st.text(max_size=20), st.booleans(),
    st.datetimes(), st.dates(), st.times(),
    st.lists(st.one_of(st.integers(), st.text(max_size=5)), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)
KEYS = st.one_of(st.sampled_from(["surprise", "Name", "shards ", "path.x", "tls", ""]),
                 st.text(max_size=12))


@st.composite
def mutated(draw, base: dict) -> tuple[str | bytes, list[str]]:
    """(the file's content, what was done to it)."""
    doc = copy.deepcopy(base)
    done = []
    for op in draw(st.lists(st.sampled_from(["delete", "set", "set", "add"]), min_size=1,
                            max_size=3)):
        if op == "add":
            table = draw(st.sampled_from(tables(doc)))
            key = draw(KEYS)
            get_parent(doc, (*table, None))[key] = copy.deepcopy(draw(HOSTILE))  # a fresh copy
            path = (*table, key)
        else:
            options = paths(doc)
            if not options:
                break
            path = draw(st.sampled_from(options))
            parent = get_parent(doc, path)
            if op == "delete":
                del parent[path[-1]]
            else:
                parent[path[-1]] = copy.deepcopy(draw(HOSTILE))
        done.append(f"{op} {'.'.join(map(str, path))}")
    text = to_toml(doc)
    damage = draw(st.sampled_from(["none"] * 6 + ["cut", "insert", "garbage_text",
                                                  "garbage_bytes"]))
    if damage == "cut":
        text = text[:draw(st.integers(0, max(0, len(text) - 1)))]
    elif damage == "insert":
        pos = draw(st.integers(0, len(text)))
        text = text[:pos] + draw(st.sampled_from(["=", "[", "]]", '"', "\n[data]\n", "==",
                                                  "\\u"])) + text[pos:]
    elif damage == "garbage_text":
        text = draw(st.text(max_size=200))
    elif damage == "garbage_bytes":
        return draw(st.binary(max_size=200)), [*done, "garbage bytes"]
    if damage != "none":
        done.append(damage)
    return text, done


# ------------------------------------------------------------------ judging


def _dotted(path: tuple) -> str:
    return ".".join(str(p) if str(p) else '""' for p in path)  # as the loaders print it


def names_related_field(message: str, touched: list[tuple], cross: tuple[str, ...]) -> bool:
    """Whether the message blames (``  <field>: <problem>``) a field a mutation touched,
    a field inside it, a table holding it, or, for a mutation of a top-level key in
    `cross` (keys whose fields refer to each other), any field under those keys."""
    if "tls: missing" in message:  # the site's cross-field rule (insecure / tls)
        message += "\n  tls: missing"
    for path in touched:
        prefixes = [_dotted(path[:i]) for i in range(1, len(path) + 1)]
        if any(f"  {p}: " in message for p in prefixes) or f"  {_dotted(path)}." in message:
            return True
        if str(path[0]) in cross and any(f"\n  {c}{sep}" in message for c in cross
                                         for sep in (": ", ".")):
            return True
    return False


def _same(a, b) -> bool:
    if type(a) is not type(b):  # True == 1 in Python, not in a config file
        return False
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return a == b


def diff_paths(a, b, prefix: tuple = ()) -> list[tuple]:
    """The key paths where documents a and b differ (present in one only, or different)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in [*a, *(k for k in b if k not in a)]:
            if k in a and k in b:
                out.extend(diff_paths(a[k], b[k], (*prefix, k)))
            else:
                out.append((*prefix, k))
        return out
    if isinstance(a, list) and isinstance(b, list):
        out = [] if len(a) == len(b) else [prefix]
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            out.extend(diff_paths(x, y, (*prefix, i)))
        return out
    return [] if _same(a, b) else [prefix]


def has_nul(value) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(has_nul(k) or has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(has_nul(v) for v in value)
    return False


def non_finite_numbers(deployment) -> list[str]:
    """Fields of a loaded deployment that hold inf or nan."""
    bad = []
    numbers = {"home_ingress_mbps": deployment.home_ingress_mbps}
    for i, link in enumerate(deployment.links):
        for f in ("bandwidth_mbps", "rtt_ms", "egress_usd_per_gb"):
            numbers[f"links.{i}.{f}"] = getattr(link, f)
    for f in ("bandwidth_mbps", "rtt_ms", "egress_usd_per_gb"):
        numbers[f"defaults.{f}"] = getattr(deployment.defaults, f)
    for name, region in deployment.regions.items():
        numbers[f"regions.{name}.egress_usd_per_gb"] = region.egress_usd_per_gb
        numbers[f"regions.{name}.internet_usd_per_gb"] = region.internet_usd_per_gb
    for field_, v in numbers.items():
        if v is not None and not math.isfinite(v):
            bad.append(field_)
    return bad


def check_load(loader, path: Path, content: str | bytes, base: dict,
               cross: tuple[str, ...]) -> str:
    """Load the file; returns "ok" or "error". The fields the error may blame are those
    where the file differs from `base`."""
    try:
        loaded = loader(path)
    except ConfigError as e:
        message = str(e)
        assert str(path) in message, f"the message does not name the file: {message!r}"
        if isinstance(content, bytes):
            return "error"  # undecodable: no field to name (see the bug test below)
        try:
            touched = diff_paths(base, tomllib.loads(content))
        except tomllib.TOMLDecodeError:
            assert re.search(r"line \d+|end of document", message), (
                f"no line for a TOML error: {message!r}")
            return "error"
        assert names_related_field(message, touched, cross), (
            f"the message names no field related to the mutation of "
            f"{[_dotted(p) for p in touched]}: {message!r}")
        return "error"
    assert not (loader is load_deployment and non_finite_numbers(loaded)), (
        "a deployment with a non-finite number loaded")
    return "ok"


def fuzz_loader(loader, base: dict, cross: tuple[str, ...], tmp_path: Path, seconds: float
                ) -> tuple[Counter, Counter, float]:
    outcomes = Counter()
    path = tmp_path / ("site.toml" if loader is load_site_config else "deployment.toml")

    @settings(max_examples=50, deadline=None, database=None, print_blob=True,
              phases=(Phase.generate, Phase.shrink), suppress_health_check=list(HealthCheck))
    @given(mutated(base))
    def run(example):
        content, _done = example
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        outcomes[check_load(loader, path, content, base, cross)] += 1

    start = time.monotonic()
    while time.monotonic() - start < seconds:
        run()
    return outcomes, time.monotonic() - start


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["site", "deployment"])
def test_fuzz_config_files_fail_with_config_errors_that_name_the_field(kind, tmp_path, capsys):
    if kind == "site":
        loader, base, cross = load_site_config, SITE_BASE, ("insecure", "tls")
    else:
        loader, base, cross = load_deployment, DEPLOYMENT_BASE, (
            "home", "sites", "links", "regions", "defaults")
    base_file = tmp_path / "base.toml"
    base_file.write_text(to_toml(base))
    loader(base_file)  # the unmutated file is valid
    outcomes, elapsed = fuzz_loader(loader, base, cross, tmp_path, 0.15 * FUZZ_SECONDS)
    with capsys.disabled():
        print(f"\nfuzz {kind} config: {sum(outcomes.values())} files in {elapsed:.1f} s: "
              f"{dict(outcomes)}")
    assert outcomes["error"] > 0


# ------------------------------------------------------------------ bugs the fuzz found (fixed)


@pytest.mark.parametrize("loader", [load_site_config, load_deployment])
def test_bug_non_utf8_config_is_a_config_error(loader, tmp_path):
    path = tmp_path / "bad.toml"
    path.write_bytes(b'name = "eu-west"\n\xff\xfe\n')
    with pytest.raises(ConfigError, match=re.escape(str(path))):
        loader(path)


def test_bug_config_path_that_is_a_directory_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=re.escape(str(tmp_path))):
        load_site_config(tmp_path)


@pytest.mark.parametrize("kind", ["site", "deployment"])
def test_bug_nul_in_a_path_is_a_config_error_naming_the_field(kind, tmp_path):
    path = tmp_path / "bad.toml"
    if kind == "site":
        doc = copy.deepcopy(SITE_BASE)
        doc["data"]["path"] = "data/eu\x00west"
        field_, loader = "data.path", load_site_config
    else:
        doc = copy.deepcopy(DEPLOYMENT_BASE)
        doc["sites"][0]["data"] = "data/us\x00east"
        field_, loader = "sites.0.data", load_deployment
    path.write_text(to_toml(doc))
    with pytest.raises(ConfigError) as err:
        loader(path)
    assert str(path) in str(err.value) and field_ in str(err.value)


@pytest.mark.parametrize("field_", ["links.0.rtt_ms", "links.0.bandwidth_mbps",
                                    "links.0.egress_usd_per_gb", "defaults.bandwidth_mbps",
                                    "home_ingress_mbps", "regions.my-dc.egress_usd_per_gb"])
def test_bug_infinite_deployment_numbers_are_refused(field_, tmp_path):
    doc = copy.deepcopy(DEPLOYMENT_BASE)
    *parents, last = [int(p) if p.isdigit() else p for p in field_.split(".")]
    parent = doc
    for p in parents:
        parent = parent[p]
    parent[last] = float("inf")
    path = tmp_path / "deployment.toml"
    path.write_text(to_toml(doc))
    with pytest.raises(ConfigError) as err:
        load_deployment(path)
    assert field_ in str(err.value)


@pytest.mark.parametrize("kind", ["site", "deployment"])
def test_bug_empty_unknown_key_is_named(kind, tmp_path):
    path = tmp_path / f"{kind}.toml"
    base, loader = (SITE_BASE, load_site_config) if kind == "site" else (
        DEPLOYMENT_BASE, load_deployment)
    path.write_text(to_toml({**base, "": 0}))
    with pytest.raises(ConfigError) as err:
        loader(path)
    assert "(top level)" not in str(err.value) and '""' in str(err.value)
