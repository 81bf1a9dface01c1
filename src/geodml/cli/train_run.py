"""`geodml train`'s work, from one :class:`TrainConfig`: centralized training on a
dataset directory, or a geo-distributed run over a federation."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from geodml.cli.config import TrainConfig
from geodml.cli.output import (
    console,
    lam_path_table,
    metrics_table,
    privacy_table,
    result_table,
)
from geodml.cli.sites import load_deployment, load_test, open_federation


def run_training(config: TrainConfig, run=None, resume: bool = False) -> None:
    """Train as ``config`` says; ``run``: the :class:`~geodml.runs.RunDir` of a
    resumable run (``resume``: continue it from its journal)."""
    w0, reference = None, None
    if config.outputs.warm_start:
        from geodml.model import LinearModel

        start_model = LinearModel.load(config.outputs.warm_start)
        w0, reference = start_model.w, start_model.info.get("reference_grad_norm")
    test = load_test(config.outputs.test_dir)
    if config.centralized:
        train_centralized(config, test, w0)
    else:
        train_federated(config, test, (w0, reference), run, resume)


def _check_method(method: str) -> None:
    from geodml.algorithms.registry import METHODS

    if method != "centralized-export" and method not in METHODS:
        raise click.BadParameter(
            f"unknown method {method!r}; known: centralized, centralized-export, "
            f"{', '.join(sorted(METHODS))}", param_hint="--method")


def _train(fed, config: TrainConfig, start, recorder_for):
    """The run itself: the centralized baseline (centralized-export), the method, or
    the method along ``--lam-path`` (``recorder_for(tags, append)``: a run's recorder)."""
    from geodml.algorithms.centralize import train_centralized_baseline
    from geodml.algorithms.registry import TrainSpec, train

    stop = config.stop
    if config.method == "centralized-export":
        return train_centralized_baseline(fed, config.loss, config.lam, stop.gtol,
                                          stop.max_rounds, recorder_for({}, False),
                                          config.preconditioner)
    w0, reference = start
    spec = TrainSpec(loss=config.loss, lam=config.lam, gtol=stop.gtol,
                     max_rounds=stop.max_rounds, max_wan_bytes=stop.max_wan_bytes, w0=w0,
                     grad_reference=reference, params=dict(config.params),
                     preconditioner=config.preconditioner, warm_start=config.local_warm_start,
                     validation=stop.validation_stop)
    if not config.lam_path:
        return train(fed, config.method, spec, recorder_for({}, False))
    from geodml.algorithms.lam_path import train_path

    first = config.lam_path[0]
    chosen, steps = train_path(fed, config.method, spec, config.lam_path,
                               lambda lam: recorder_for({"lam": lam}, lam != first))
    chosen.result.info["lam_path"] = [
        {"lam": s.lam, "iterations": s.result.rows[-1].iteration,
         "vector_rounds": s.vector_rounds, "wan_bytes": s.wan_bytes,
         "best_log_loss": s.best_log_loss, "reason": s.result.reason} for s in steps]
    return chosen.result


def train_federated(config: TrainConfig, test, start, run=None, resume: bool = False) -> None:
    """A geo-distributed run (``start``: the warm start's ``(w0, reference norm)``)."""
    from geodml.algorithms.centralize import Refused
    from geodml.algorithms.record import RunRecorder
    from geodml.metrics import held_out_evaluator
    from geodml.model import LinearModel

    _check_method(config.method)
    evaluate = held_out_evaluator(test)
    topology = load_deployment(config.sites)
    audit, record, journal = config.outputs.audit, config.outputs.record, None
    if run is not None:
        audit = audit or str(run.audit_path)
        record = record or str(run.record_path)
        journal = run.open_journal(resume)
    out_path = config.outputs.out_path
    with open_federation(config, topology, audit, journal) as fed:
        console.print(f"{len(fed.sites)} sites, home {fed.home}: {fed.n_rows:,} rows, "
                      f"{fed.n_features:,} features")
        with console.status(f"training ({config.method})") as status:
            def on_row(row) -> None:
                held = row.metrics.get("val_log_loss")
                status.update(f"{config.method}: iteration {row.iteration}, "
                              f"F = {row.objective:.10g}, WAN {row.wan_bytes:,} bytes"
                              + ("" if held is None else f", held-out log loss {held:.6f}"))
                if run is not None:
                    run.save_checkpoint(_progress(fed, row))

            result = _train(fed, config, start, lambda tags, append: RunRecorder(
                fed, path=record, on_row=on_row, append=append, tags=tags))
        if isinstance(result, Refused):
            raise click.ClickException(f"the centralized plan is {result}:\n  "
                                       + "\n  ".join(result.messages))
        _note_sites(fed, result)
        model = LinearModel(result.w, config.loss, result.info.get("lam", config.lam),
                            fed.space, {**result.summary(), "reference_grad_norm":
                                        result.info.get("reference_grad_norm")})
        if run is not None:
            run.save_checkpoint({**_progress(fed, result.rows[-1] if result.rows else None),
                                 "done": True, "model": str(Path(out_path).resolve())},
                                force=True)
        rounds = fed.meter.rounds  # the WAN model's rounds, as the federation numbered them
    model.save(out_path)
    console.print(result_table(config.method, result))
    if evaluate is not None:
        console.print(metrics_table("test quality", {"test": evaluate(result.w)}))
    if "privacy" in result.info:
        console.print(privacy_table(result.info["privacy"]))
    if "lam_path" in result.info:
        console.print(lam_path_table(result.info["lam_path"], result.info["lam"]))
    if "validation" in result.info:
        v = result.info["validation"]
        console.print(f"held-out rows ({v['held_out_share']:g} of each site's): best log loss "
                      f"{v['best_log_loss']:.6f} at iteration {v['best_iteration']}")
    if topology is not None:
        _print_modeled(rounds, topology, result.rows[-1].seconds)
    console.print(f"model written to {out_path}")


def _note_sites(fed, result) -> None:
    """Record (and warn about) sites the run continued without or recovered."""
    if fed.dropped:
        result.info["dropped_sites"] = dict(fed.dropped)
        result.info["covers_sites"] = fed.names
        console.print(f"[bold yellow]warning[/]: the run continued without "
                      f"{', '.join(fed.dropped)}; the model covers only "
                      f"{', '.join(fed.names)}")
    if fed.recoveries:
        result.info["recovered_sites"] = dict(fed.recoveries)


def _print_modeled(rounds, topology, measured_seconds: float) -> None:
    from geodml.planning.wan import model_run

    modeled = model_run(rounds, topology)
    console.print(f"over the deployment's links: {modeled.seconds:.1f} s of WAN transfer "
                  f"(modeled), ${modeled.usd:.4f} egress, beside {measured_seconds:.1f} s "
                  "measured here")


def _progress(fed, row) -> dict:
    """What ``checkpoint.json`` records (see :mod:`geodml.runs`)."""
    return {"iteration": row.iteration if row else 0,
            "objective": row.objective if row else None, "rounds": fed.rounds,
            "vector_rounds": fed.vector_rounds, "meter": fed.meter.snapshot(),
            "journal": fed.journal.counts() if fed.journal is not None else {},
            "dropped_sites": dict(fed.dropped), "recovered_sites": dict(fed.recoveries),
            "done": False}


def train_centralized(config: TrainConfig, test, w0) -> None:
    """L-BFGS or TRON on one dataset directory, in this process."""
    from geodml.centralized import train_centralized as train
    from geodml.data.store import load_dataset
    from geodml.optim import LbfgsOptions

    data_dir, out_path = config.sites.data_dir, config.outputs.out_path
    data = load_dataset(data_dir)
    console.print(f"[bold]{data_dir}[/]: {data.n_rows:,} rows, {data.n_features:,} features, "
                  f"{data.nnz:,} nonzeros")
    start = time.perf_counter()
    with console.status("training") as status:
        def progress(rec, _w):
            status.update(
                f"iteration {rec.iteration}: F = {rec.f:.10g}, ||g|| = {rec.grad_norm:.3g}"
            )

        model, result = train(
            data, config.loss, config.lam,
            LbfgsOptions(gtol=config.stop.gtol, max_iter=config.stop.max_rounds), w0=w0,
            n_threads=config.threads, callback=progress, solver=config.solver,
            preconditioner=config.preconditioner,
        )
    seconds = time.perf_counter() - start
    model.info["seconds"] = seconds
    model.save(out_path)
    console.print(f"{result.reason} after {result.iterations} iterations in {seconds:.2f} s; "
                  f"F = {result.f:.10g}")
    rows = {"train": model.evaluate(data)}
    if test is not None:
        rows["test"] = model.evaluate(test)
    console.print(metrics_table("model quality", rows))
    console.print(f"model written to {out_path}")
    Path(out_path).with_suffix(".json").write_text(json.dumps({**model.info, **{
        f"{k}_{m}": v for k, r in rows.items() for m, v in r.items()}}, indent=2))
