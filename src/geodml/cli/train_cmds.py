"""`geodml train` and `geodml demo`."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from geodml.centralized import SOLVERS, train_centralized
from geodml.data.store import load_dataset
from geodml.models import LOSSES
from geodml.optim import LbfgsOptions

console = Console()
if not console.is_terminal:  # logs and CI: do not squeeze tables into 80 columns
    console = Console(width=max(console.width, 130))


def _metrics_table(title: str, rows: dict[str, dict[str, float]]) -> Table:
    table = Table(title=title)
    table.add_column("data")
    names = sorted({k for r in rows.values() for k in r})
    for name in names:
        table.add_column(name, justify="right")
    for label, r in rows.items():
        table.add_row(label, *(f"{r[n]:.6g}" if n in r else "" for n in names))
    return table


@click.command()
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--test", "test_dir", type=click.Path(exists=True, file_okay=False),
              help="A dataset directory to evaluate the model on.")
@click.option("--loss", type=click.Choice(sorted(LOSSES)), default="logistic", show_default=True)
@click.option("--solver", type=click.Choice(SOLVERS), default="lbfgs", show_default=True)
@click.option("--lam", type=float, default=None, help="L2 weight lambda (default 1/N).")
@click.option("--gtol", type=float, default=LbfgsOptions.gtol, show_default=True,
              help="Stop when ||grad|| <= gtol * ||grad at start||.")
@click.option("--max-iter", type=int, default=LbfgsOptions.max_iter, show_default=True)
@click.option("--threads", type=int, default=None, help="Threads for row blocks (default: cores).")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), default="model.npz",
              show_default=True, help="Where to write the model.")
def train(data_dir, test_dir, loss, solver, lam, gtol, max_iter, threads, out_path) -> None:
    """Train a linear model centrally on DATA_DIR (a `geodml convert` output)."""
    if lam is not None and lam < 0:
        raise click.BadParameter("lambda must be >= 0", param_hint="--lam")
    data = load_dataset(data_dir)
    console.print(f"[bold]{data_dir}[/]: {data.n_rows:,} rows, {data.n_features:,} features, "
                  f"{data.nnz:,} nonzeros")
    start = time.perf_counter()
    with console.status("training") as status:
        def progress(rec, _w):
            status.update(
                f"iteration {rec.iteration}: F = {rec.f:.10g}, ||g|| = {rec.grad_norm:.3g}"
            )

        model, result = train_centralized(
            data, loss, lam, LbfgsOptions(gtol=gtol, max_iter=max_iter), n_threads=threads,
            callback=progress, solver=solver,
        )
    seconds = time.perf_counter() - start
    model.info["seconds"] = seconds
    model.save(out_path)
    console.print(f"{result.reason} after {result.iterations} iterations in {seconds:.2f} s; "
                  f"F = {result.f:.10g}")
    rows = {"train": model.evaluate(data)}
    if test_dir:
        rows["test"] = model.evaluate(load_dataset(test_dir))
    console.print(_metrics_table("model quality", rows))
    console.print(f"model written to {out_path}")
    Path(out_path).with_suffix(".json").write_text(json.dumps({**model.info, **{
        f"{k}_{m}": v for k, r in rows.items() for m, v in r.items()}}, indent=2))


@click.command()
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="geodml-demo",
              show_default=True, help="Where the data, certificates and report go.")
@click.option("--rows", type=click.IntRange(min=1000), default=20_000, show_default=True,
              help="Training rows per data center.")
@click.option("--hash-bits", type=click.IntRange(8, 24), default=14, show_default=True)
def demo(out_dir: str, rows: int, hash_bits: int) -> None:
    """Four DCs on this machine: geo-distributed training vs copying the data home."""
    from geodml.demo import run_demo

    outcome = run_demo(Path(out_dir), rows=rows, test_rows=max(1000, rows // 5),
                       hash_bits=hash_bits, progress=lambda m: console.print(f"[dim]{m}[/]"))
    table = Table(title="geodml demo: 4 DCs, home us-east, logistic regression, lambda = 1/N")
    for col in ("plan", "objective", "test log loss", "test AUC", "WAN bytes", "rounds",
                "wall s"):
        table.add_column(col, justify="right" if col != "plan" else "left")
    geo, central = outcome.geo, outcome.centralized
    for name, run, test in (("geo-distributed (SQM L-BFGS)", geo,
                             outcome.test_metrics["geo-distributed"]),
                            ("centralized, eu-west exception", central,
                             outcome.test_metrics["centralized"])):
        last = run.rows[-1]
        table.add_row(name, f"{run.objective:.8f}", f"{test['log_loss']:.5f}",
                      f"{test['auc']:.5f}", f"{run.wan_bytes:,}", str(last.rounds),
                      f"{last.seconds:.1f}")
    table.add_row("centralized under policy", "-", "-", "-", "-", "-", "-",
                  style="red")
    console.print(table)
    console.print(f"[red]centralized under policy: {outcome.refused}[/] "
                  "(eu-west's policy forbids raw export)")
    ratio = central.wan_bytes / max(1, geo.wan_bytes)
    comparison = f"{ratio:.1f}x fewer" if ratio >= 1 else f"{1 / ratio:.1f}x more"
    auc_gap = abs(outcome.test_metrics["geo-distributed"]["auc"]
                  - outcome.test_metrics["centralized"]["auc"])
    console.print(f"geo-distributed moved {comparison} WAN bytes than centralizing; "
                  f"|test AUC difference| = {auc_gap:.5f}")
    console.print(f"report: {outcome.out_dir / 'report.json'}, audit log: "
                  f"{outcome.out_dir / 'audit.jsonl'} ({outcome.seconds:.0f} s)")
