"""What `geodml train` prints: the console, the result and quality tables."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

console = Console()
if not console.is_terminal:  # logs and CI: do not squeeze tables into 80 columns
    console = Console(width=max(console.width, 130))


def metrics_table(title: str, rows: dict[str, dict[str, float]]) -> Table:
    """One row per dataset (train, test), one column per metric."""
    table = Table(title=title)
    table.add_column("data")
    names = sorted({k for r in rows.values() for k in r})
    for name in names:
        table.add_column(name, justify="right")
    for label, r in rows.items():
        table.add_row(label, *(f"{r[n]:.6g}" if n in r else "" for n in names))
    return table


def privacy_table(privacy: dict[str, dict]) -> Table:
    """Each site's budget and what its ledger has spent (the RDP accountant's epsilon)."""
    table = Table(title="differential privacy, per site")
    for col in ("site", "epsilon spent", "budget epsilon", "delta", "noise multiplier",
                "releases"):
        table.add_column(col, justify="right")
    for site, p in privacy.items():
        table.add_row(site, f"{p['epsilon_spent']:.4g}", f"{p['epsilon']:g}",
                      f"{p['delta']:g}", f"{p['noise_multiplier']:.4g}", str(p["releases"]))
    return table


def result_table(method: str, result) -> Table:
    """A geo-distributed run's end: objective, iterations, rounds, WAN bytes, time."""
    table = Table(title=f"{method}: {result.reason}")
    for col in ("objective", "iterations", "rounds", "vector rounds", "WAN bytes", "wall s"):
        table.add_column(col, justify="right")
    last = result.rows[-1]
    table.add_row(f"{result.objective:.10g}", str(last.iteration), str(last.rounds),
                  f"{last.vector_rounds:g}", f"{last.wan_bytes:,}", f"{last.seconds:.1f}")
    return table


def lam_path_table(steps: list[dict], chosen: float) -> Table:
    """A lambda path: each run's rounds, WAN bytes and best held-out log loss."""
    table = Table(title=f"lambda path: chose {chosen:g} (least held-out log loss)")
    for col in ("lambda", "iterations", "vector rounds", "WAN bytes", "held-out log loss",
                "stop"):
        table.add_column(col, justify="left" if col == "stop" else "right")
    for s in steps:
        mark = " *" if s["lam"] == chosen else ""
        table.add_row(f"{s['lam']:g}{mark}", str(s["iterations"]), f"{s['vector_rounds']:g}",
                      f"{s['wan_bytes']:,}", f"{s['best_log_loss']:.6f}", s["reason"])
    return table
