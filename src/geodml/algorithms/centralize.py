"""The status quo as a real baseline: copy every DC's rows home, then train.

Every site exports its rows (Arrow IPC, zstd) through the metered wire to the home
DC; the home DC's own rows move only inside the DC. Then the centralized solver
trains on the union, in the metric the sites build (each DC's rows at the curvature of
its own base rate: :func:`geodml.centralized.train_centralized`'s ``sources``). A site
whose policy forbids raw export makes the baseline impossible: the outcome then says
which sites refused instead of giving a number.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from geodml.algorithms.record import RunRecorder, RunResult
from geodml.algorithms.stop import StopRule
from geodml.centralized import train_centralized
from geodml.data.dataset import Dataset
from geodml.federation import Federation
from geodml.optim import LbfgsOptions
from geodml.optim.preconditioner import DIAG, Preconditioner
from geodml.wire.errors import SiteCallError


@dataclass
class Refused:
    """The centralized plan is not permitted: these sites' policies forbid export (or
    any session that is not masked or private)."""

    sites: list[str]
    messages: list[str]

    def __str__(self) -> str:
        return "not permitted by site " + ", ".join(self.sites)


def train_centralized_baseline(
    fed: Federation, loss: str = "logistic", lam: float | None = None, gtol: float = 1e-7,
    max_iter: int = 2000, recorder: RunRecorder | None = None,
    preconditioner: Preconditioner = DIAG,
) -> RunResult | Refused:
    """Export all rows to the home DC and train there; or say who refused."""
    lam = 1.0 / fed.site_rows if lam is None else float(lam)
    try:  # a session for Export; no support. Masked-only or private sites refuse it
        fed.prepare(loss, lam, restrict_to_support=False, job="export")
    except SiteCallError as e:
        if e.code != "PERMISSION_DENIED":
            raise
        return Refused([e.site], [str(e)])
    recorder = recorder or RunRecorder(fed)
    start = time.perf_counter()
    parts: dict[str, Dataset] = {}
    refused: dict[str, str] = {}

    def export(site: str) -> Dataset | str:
        try:
            return fed.export(site)
        except SiteCallError as e:
            if e.code != "PERMISSION_DENIED":
                raise
            return str(e)

    before = fed.meter.snapshot()["links"]
    for site, out in zip(fed.names, fed.map_sites(export), strict=True):
        if isinstance(out, str):
            refused[site] = out
        else:
            parts[site] = out
    if refused:
        return Refused(sorted(refused), [refused[s] for s in sorted(refused)])
    export_seconds = time.perf_counter() - start
    after = fed.meter.snapshot()["links"]
    export_wan = sum(v["bytes"] - before.get(k, {"bytes": 0})["bytes"]
                     for k, v in after.items() if v["wan"])
    order = sorted(fed.names, key=lambda s: s != fed.home)  # home first: auto's probe
    data = Dataset.concat([parts[s] for s in order])

    rule = StopRule(gtol=gtol, max_rounds=max_iter)

    def callback(rec, w) -> bool:
        return rule.check(recorder.add(rec.iteration, rec.f, w, rec.grad_norm)) is not None
    # gtol 0: the rule stops at gtol, as in every federated method
    model, result = train_centralized(data, loss, lam, LbfgsOptions(gtol=0.0, max_iter=max_iter),
                                      callback=callback, preconditioner=preconditioner,
                                      sources=[parts[s].n_rows for s in order])
    reason, converged = rule.outcome(result.reason, result.converged)
    return RunResult("centralized", model.w, result.f, converged, reason,
                     recorder.rows, fed.meter.snapshot(),
                     {"lam": lam, "loss": loss, "export_seconds": export_seconds,
                      "preconditioner": model.info["preconditioner"],
                      "export_wan_bytes": export_wan,
                      "train_seconds": time.perf_counter() - start - export_seconds,
                      "rows": data.n_rows})
