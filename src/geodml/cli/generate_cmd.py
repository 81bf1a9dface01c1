"""`geodml generate`: write the synthetic regional CTR dataset (one site per region)."""

from __future__ import annotations

import click
from rich.console import Console
from rich.table import Table

from geodml.data.synthetic import DEFAULT_REGIONS, RegionalCTRConfig, write_regional
from geodml.errors import GeodmlError


@click.command()
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--regions", default=",".join(DEFAULT_REGIONS), show_default=True,
              help="Comma-separated region (site) names.")
@click.option("--rows", type=click.IntRange(min=0), default=100_000, show_default=True,
              help="Training rows per region.")
@click.option("--test-rows", type=click.IntRange(min=0), default=None,
              help="Held-out rows per region [default: rows / 5].")
@click.option("--hash-bits", type=click.IntRange(1, 28), default=20, show_default=True,
              help="Categorical values are hashed into 2**B columns.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--feature-shift", type=float, default=0.3, show_default=True,
              help="Share of categorical values drawn from region-specific popular ids.")
@click.option("--label-shift", type=float, default=0.5, show_default=True,
              help="Standard deviation of the region biases (logit scale).")
@click.option("--base-ctr", type=float, default=0.18, show_default=True,
              help="Click rate of the unshifted law (sets the intercept).")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Generator threads [default: CPU count].")
@click.option("--force", is_flag=True, help="Replace an earlier dataset in OUT_DIR.")
def generate(
    out_dir: str,
    regions: str,
    rows: int,
    test_rows: int | None,
    hash_bits: int,
    seed: int,
    feature_shift: float,
    label_shift: float,
    base_ctr: float,
    workers: int | None,
    force: bool,
) -> None:
    """Write a synthetic regional CTR dataset to OUT_DIR/<region>/{train,test}.

    Criteo-like rows (26 Zipf-distributed categorical fields hashed into 2**B
    columns plus 4 numeric fields) with a shared logistic model and per-region
    shifts in features and labels; see docs/synthetic.md.
    """
    try:
        config = RegionalCTRConfig(
            regions=tuple(r.strip() for r in regions.split(",") if r.strip()),
            rows_per_region=rows,
            test_rows_per_region=rows // 5 if test_rows is None else test_rows,
            hash_bits=hash_bits,
            seed=seed,
            feature_shift=feature_shift,
            label_shift=label_shift,
            base_ctr=base_ctr,
        )
        manifest = write_regional(config, out_dir, workers=workers, overwrite=force)
    except GeodmlError as e:
        raise click.ClickException(str(e)) from None
    _print(manifest, out_dir)


def _print(manifest: dict, out_dir: str) -> None:
    table = Table(title=f"synthetic regional CTR -> {out_dir}")
    for col in ("region", "train rows", "train CTR", "test rows", "test CTR", "nnz", "MB"):
        table.add_column(col, justify="left" if col == "region" else "right")
    for s in manifest["sites"]:
        t = s["test"]
        table.add_row(
            s["name"],
            f"{s['rows']:,}",
            _rate(s["positives"], s["rows"]),
            f"{t['rows']:,}",
            _rate(t["positives"], t["rows"]),
            f"{s['nnz'] + t['nnz']:,}",
            f"{(s['bytes'] + t['bytes']) / 1e6:.1f}",
        )
    console = Console()
    console.print(table)
    total = sum(s["rows"] + s["test"]["rows"] for s in manifest["sites"])
    console.print(
        f"{total:,} rows in {manifest['elapsed_seconds']:.2f} s: "
        f"{manifest['rows_per_second']:,.0f} rows/s; "
        f"feature space {manifest['feature_space']['n_features']:,} columns "
        f"(fingerprint {manifest['feature_space_fingerprint']})"
    )


def _rate(positives: int, rows: int) -> str:
    return f"{positives / rows:.4f}" if rows else "-"
