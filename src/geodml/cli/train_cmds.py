"""`geodml train`."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from geodml.algorithms.defaults import DEFAULT_GTOL, DEFAULT_MAX_ROUNDS
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


def _privacy_table(privacy: dict[str, dict]) -> Table:
    """Each site's budget and what its ledger has spent (the RDP accountant's epsilon)."""
    table = Table(title="differential privacy, per site")
    for col in ("site", "epsilon spent", "budget epsilon", "delta", "noise multiplier",
                "releases"):
        table.add_column(col, justify="right")
    for site, p in privacy.items():
        table.add_row(site, f"{p['epsilon_spent']:.4g}", f"{p['epsilon']:g}",
                      f"{p['delta']:g}", f"{p['noise_multiplier']:.4g}", str(p["releases"]))
    return table


def _load_test(path: str | None):
    """A test dataset: a dataset directory, or a sites directory's pooled test splits."""
    if path is None:
        return None
    from geodml.data.dataset import Dataset
    from geodml.data.partition import MANIFEST_NAME, site_dirs

    if (Path(path) / MANIFEST_NAME).is_file():
        return Dataset.concat([load_dataset(p) for p in site_dirs(path, "test").values()])
    return load_dataset(path)


def _federation(data_dir: str | None, remote: tuple[str, ...], home: str | None,
                tls_dir: str | None, insecure: bool, allow_export: tuple[str, ...],
                audit: str | None, compression=None, reliability=None, journal=None,
                secure=None, nonce_seed: bytes | None = None,
                dp_budget: tuple[float, float] | None = None):
    """In-process sites from a sites directory, or remote sites over gRPC
    (``dp_budget``: the in-process sites' policy ``(dp_epsilon, dp_delta)``)."""
    from geodml.data.partition import site_dirs
    from geodml.federation import AuditLog, Federation
    from geodml.federation.transport import GrpcTransport, InProcessTransport
    from geodml.site.service import SiteService

    if remote:
        pairs = [item.partition("=") for item in remote]
        for item, (name, sep, address) in zip(remote, pairs, strict=True):
            if not sep or not name or not address:
                raise click.BadParameter(f"{item!r} is not NAME=HOST:PORT", param_hint="--site")
        creds = None
        if not insecure:
            if tls_dir is None:
                raise click.UsageError("remote sites need --tls-dir (or --insecure on loopback)")
            from geodml.wire.tls import TlsFiles, channel_credentials

            d = Path(tls_dir)
            creds = channel_credentials(TlsFiles(d / "ca.pem", d / "coordinator.pem",
                                                 d / "coordinator.key"))
        transports = []
        for name, _, address in pairs:
            if insecure:
                from geodml.wire.tls import check_insecure_address

                check_insecure_address(address)
            transports.append(GrpcTransport(name, address, creds))
    else:
        from geodml.site.policy import Policy

        dirs = site_dirs(data_dir)
        unknown = set(allow_export) - set(dirs) - {"all"}
        if unknown:
            raise click.BadParameter(f"no site {sorted(unknown)} in {data_dir}",
                                     param_hint="--allow-export")
        eps, delta = dp_budget or (None, None)
        transports = [InProcessTransport(SiteService(
            name, name, load_dataset(path),
            Policy(allow_raw_export="all" in allow_export or name in allow_export,
                   dp_epsilon=eps, dp_delta=delta)))
            for name, path in dirs.items()]
    names = [t.site for t in transports]
    home = home or names[0]
    return Federation(transports, home, audit=AuditLog(audit) if audit else None,
                      compression=compression, reliability=reliability, journal=journal,
                      secure=secure, nonce_seed=nonce_seed)


@click.command()
@click.argument("data_dir", required=False, type=click.Path(exists=True, file_okay=False))
@click.option("--method", default="centralized", show_default=True,
              help="centralized (on DATA_DIR), centralized-export (copy every site's rows "
                   "home, then train), or a geo-distributed method: "
                   "fadl-subspace, fadl, sqm-lbfgs, sqm-gd, sqm-tron, oneshot, fedavg, admm, "
                   "dane, dp-gd (differentially private: the sites need a budget).")
@click.option("--site", "remote", multiple=True, metavar="NAME=HOST:PORT",
              help="A remote site (repeat). Without it, DATA_DIR's sites run in this process.")
@click.option("--home", default=None, help="The coordinator's DC (default: the first site).")
@click.option("--tls-dir", type=click.Path(exists=True, file_okay=False),
              help="Folder with ca.pem, coordinator.pem, coordinator.key (geodml certs).")
@click.option("--insecure", is_flag=True, help="Plaintext to loopback sites (testing only).")
@click.option("--allow-export", "allow_export", multiple=True, metavar="SITE",
              help="In-process sites only: let this site's rows be exported (repeat; 'all').")
@click.option("--test", "test_dir", type=click.Path(exists=True, file_okay=False),
              help="A dataset directory (or a generated sites directory) to evaluate on.")
@click.option("--loss", type=click.Choice(sorted(LOSSES)), default="logistic", show_default=True)
@click.option("--solver", type=click.Choice(SOLVERS), default="lbfgs", show_default=True,
              help="Solver of --method centralized.")
@click.option("--lam", type=float, default=None, help="L2 weight lambda (default 1/N).")
@click.option("--gtol", type=float, default=DEFAULT_GTOL, show_default=True,
              help="Stop when ||grad|| <= gtol * ||grad at start|| (centralized, sqm-*, fadl, "
                   "fadl-subspace, dane; oneshot, fedavg, admm and dp-gd stop by rounds).")
@click.option("--max-iter", "--max-rounds", "max_iter", type=int,
              default=DEFAULT_MAX_ROUNDS, show_default=True, help="Outer iterations, at most.")
@click.option("--max-wan-bytes", type=int, default=None, help="Stop after this many WAN bytes.")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
              help="A method parameter (repeat), e.g. --param memory=5.")
@click.option("--compress-up", metavar="SPEC",
              help="Compress the gradient sums sites send: float16, bfloat16, int8 (with error "
                   "feedback) or a JSON spec (docs/compression.md).")
@click.option("--compress-down", metavar="SPEC",
              help="Compress the vectors sent to the sites: float32, float16, bfloat16, int8 "
                   "or a JSON spec.")
@click.option("--full-precision-at", type=click.FloatRange(0, 1), default=1e-3,
              show_default=True,
              help="Switch to full precision once ||grad|| falls to this share of its start.")
@click.option("--warm-start", type=click.Path(exists=True, dir_okay=False),
              help="Start from this model file.")
@click.option("--record", type=click.Path(dir_okay=False),
              help="Write one JSON line per outer iteration here.")
@click.option("--audit", type=click.Path(dir_okay=False),
              help="Write the audit log of every message crossing a DC boundary here.")
@click.option("--deployment", type=click.Path(exists=True, dir_okay=False),
              help="A deployment file (docs/wan.md): report the modeled WAN time and egress "
                   "dollars of the run over its links; its home is the coordinator's DC.")
@click.option("--threads", type=int, default=None, help="Threads for row blocks (default: cores).")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), default="model.npz",
              show_default=True, help="Where to write the model.")
@click.option("--run-dir", type=click.Path(file_okay=False),
              help="Make a geo-distributed run resumable: its settings, call journal, "
                   "checkpoints, audit log and record go here (docs/reliability.md).")
@click.option("--resume", "resume_dir", type=click.Path(exists=True, file_okay=False),
              help="Resume the run of this --run-dir after a crash; every other option "
                   "comes from the run directory.")
@click.option("--site-deadline", type=click.FloatRange(min=0, min_open=True), default=300.0,
              show_default=True,
              help="Seconds a site may stay unreachable (retrying with backoff) before the "
                   "run stops, naming it.")
@click.option("--drop-lost-sites", is_flag=True,
              help="Continue without a site unreachable past --site-deadline; the result "
                   "says which DCs it covers.")
@click.option("--secure-aggregation", is_flag=True,
              help="Mask every site's sums so the coordinator learns only their total "
                   "(X25519 pairwise masks; docs/security.md).")
@click.option("--secure-fraction-bits", type=click.IntRange(0, 52), default=None,
              help="Fixed-point fraction bits of masked sums (default: resolve per-row "
                   "means to 2^-44; fewer bits: a larger range).")
@click.option("--dp-epsilon", type=click.FloatRange(min=0, min_open=True), default=None,
              help="In-process sites' privacy budget epsilon (remote sites: their policy).")
@click.option("--dp-delta", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              default=None, help="In-process sites' privacy budget delta.")
@click.pass_context
def train(ctx, data_dir, method, remote, home, tls_dir, insecure, allow_export, test_dir, loss,
          solver, lam, gtol, max_iter, max_wan_bytes, params, compress_up, compress_down,
          full_precision_at, warm_start, record, audit, deployment, threads,
          out_path, run_dir, resume_dir, site_deadline, drop_lost_sites, secure_aggregation,
          secure_fraction_bits, dp_epsilon, dp_delta) -> None:
    """Train a linear model: centrally on a dataset directory, or geo-distributed over
    the sites of DATA_DIR (a `geodml partition` / `geodml generate` output) or over
    remote sites (--site)."""
    from geodml.runs import RunDir

    run = None
    if resume_dir:
        given = [f"--{n.replace('_', '-')}" for n in ctx.params if n != "resume_dir"
                 and ctx.get_parameter_source(n) != click.core.ParameterSource.DEFAULT]
        if given:
            raise click.UsageError(f"--resume takes every option from {resume_dir}; "
                                   f"drop {', '.join(given)}")
        run = RunDir(resume_dir)
        saved, checkpoint = run.settings(), run.checkpoint()
        if checkpoint is not None and checkpoint.get("done"):
            console.print(f"the run in {resume_dir} has finished; its model is "
                          f"{checkpoint.get('model')}")
            return
        console.print(f"resuming the run in {resume_dir} from iteration "
                      f"{checkpoint['iteration'] if checkpoint else 0}")
        _run(**saved, run=run, resume=True)
        return
    if run_dir:
        if method in ("centralized",):
            raise click.UsageError("--run-dir is for geo-distributed runs (and "
                                   "centralized-export), not --method centralized")
        settings = {n: ctx.params[n] for n in ctx.params
                    if n not in ("run_dir", "resume_dir")}
        for name in ("data_dir", "tls_dir", "test_dir", "warm_start", "record", "audit",
                     "deployment", "out_path"):
            if settings[name] is not None:
                settings[name] = str(Path(settings[name]).resolve())
        # job nonces derive from this, so that a resumed run sends the same requests
        settings["nonce_seed"] = os.urandom(16).hex()
        run = RunDir.create(run_dir, settings)
    _run(data_dir, method, remote, home, tls_dir, insecure, allow_export, test_dir, loss,
         solver, lam, gtol, max_iter, max_wan_bytes, params, compress_up, compress_down,
         full_precision_at, warm_start, record, audit, deployment, threads, out_path,
         site_deadline, drop_lost_sites, secure_aggregation, secure_fraction_bits,
         dp_epsilon, dp_delta, run=run, nonce_seed=settings["nonce_seed"] if run else None)


def _run(data_dir, method, remote, home, tls_dir, insecure, allow_export, test_dir, loss,
         solver, lam, gtol, max_iter, max_wan_bytes, params, compress_up, compress_down,
         full_precision_at, warm_start, record, audit, deployment, threads, out_path,
         site_deadline, drop_lost_sites, secure_aggregation=False,
         secure_fraction_bits=None, dp_epsilon=None, dp_delta=None,
         run=None, resume=False, nonce_seed=None) -> None:
    """`geodml train`'s work, from its options (also a resumed run's saved ones)."""
    if lam is not None and lam < 0:
        raise click.BadParameter("lambda must be >= 0", param_hint="--lam")
    if (dp_epsilon is None) != (dp_delta is None):
        raise click.UsageError("--dp-epsilon and --dp-delta go together")
    if dp_epsilon is not None and remote:
        raise click.UsageError("--dp-epsilon sets in-process sites' budgets; a remote "
                               "site's budget is in its own configuration")
    if secure_aggregation and (compress_up or compress_down):
        raise click.UsageError("--secure-aggregation sums exact fixed-point values: it does "
                               "not combine with --compress-up/--compress-down")
    w0, reference = None, None
    if warm_start:
        from geodml.model import LinearModel

        start_model = LinearModel.load(warm_start)
        w0, reference = start_model.w, start_model.info.get("reference_grad_norm")
    test = _load_test(test_dir)
    if method == "centralized":
        if data_dir is None or remote:
            raise click.UsageError("--method centralized trains on a DATA_DIR dataset directory")
        _train_centralized(data_dir, test, loss, solver, lam, gtol, max_iter, threads, w0,
                           out_path)
        return
    if data_dir is None and not remote:
        raise click.UsageError("give a sites DATA_DIR or --site NAME=HOST:PORT")
    if allow_export and remote:
        raise click.UsageError("--allow-export sets in-process sites' policies; a remote "
                               "site's policy is in its own configuration")
    compression = None
    if compress_up or compress_down:
        from geodml.compression import AdaptivePrecision
        from geodml.federation.base import CompressionConfig

        compression = CompressionConfig(
            up=_compression_spec(compress_up, feedback=True, option="--compress-up"),
            down=_compression_spec(compress_down, feedback=False, option="--compress-down"),
            precision=AdaptivePrecision(threshold=full_precision_at))
    topology = None
    if deployment:
        from geodml.deployment import load_deployment

        topology = load_deployment(deployment)
        if home and home != topology.home:
            raise click.BadParameter(f"{deployment} says home is {topology.home}",
                                     param_hint="--home")
        home = topology.home
    from geodml.federation.reliability import Reliability

    reliability = Reliability(site_deadline=site_deadline, drop_lost_sites=drop_lost_sites)
    from geodml.federation.base import SecureAggregation

    privacy = dict(
        secure=SecureAggregation(secure_fraction_bits) if secure_aggregation else None,
        nonce_seed=bytes.fromhex(nonce_seed) if nonce_seed else None,
        dp_budget=(dp_epsilon, dp_delta) if dp_epsilon is not None else None)
    _train_federated(data_dir, method, tuple(remote), home, tls_dir, insecure,
                     tuple(allow_export), test, loss, lam, gtol, max_iter, max_wan_bytes,
                     tuple(params), w0, reference, record, audit, out_path, compression,
                     topology, reliability, run, resume, privacy)


def _compression_spec(text: str | None, feedback: bool, option: str) -> str | None:
    """A JSON compression spec from a short name or JSON text, validated."""
    from geodml.compression import CompressionError, spec_text

    try:
        return spec_text(text, feedback)
    except CompressionError as e:
        raise click.BadParameter(str(e), param_hint=option) from None


def _parse_params(params: tuple[str, ...]) -> dict:
    out = {}
    for item in params:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--param")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _train_federated(data_dir, method, remote, home, tls_dir, insecure, allow_export, test, loss,
                     lam, gtol, max_iter, max_wan_bytes, params, w0, reference, record, audit,
                     out_path, compression=None, topology=None, reliability=None, run=None,
                     resume=False, privacy=None) -> None:
    from geodml.algorithms.centralize import Refused, train_centralized_baseline
    from geodml.algorithms.record import RunRecorder
    from geodml.algorithms.registry import METHODS, TrainSpec
    from geodml.algorithms.registry import train as run_method
    from geodml.model import LinearModel

    if method != "centralized-export" and method not in METHODS:
        raise click.BadParameter(
            f"unknown method {method!r}; known: centralized, centralized-export, "
            f"{', '.join(sorted(METHODS))}", param_hint="--method")
    from geodml.metrics import held_out_evaluator

    evaluate = held_out_evaluator(test)

    scratch, journal = None, None
    if run is not None:
        audit = audit or str(run.audit_path)
        record = record or str(run.record_path)
        journal = run.open_journal(resume)
    if topology is not None and audit is None:  # the model reads the audit log
        import tempfile

        scratch = tempfile.TemporaryDirectory(prefix="geodml-audit-")
        audit = str(Path(scratch.name) / "audit.jsonl")
    with _federation(data_dir, remote, home, tls_dir, insecure, allow_export, audit,
                     compression, reliability, journal, **(privacy or {})) as fed:
        console.print(f"{len(fed.sites)} sites, home {fed.home}: {fed.n_rows:,} rows, "
                      f"{fed.n_features:,} features")
        with console.status(f"training ({method})") as status:
            def on_row(row) -> None:
                status.update(f"{method}: iteration {row.iteration}, "
                              f"F = {row.objective:.10g}, WAN {row.wan_bytes:,} bytes")
                if run is not None:
                    run.save_checkpoint(_progress(fed, row))

            recorder = RunRecorder(fed, path=record, on_row=on_row)
            if method == "centralized-export":
                result = train_centralized_baseline(fed, loss, lam, gtol, max_iter, recorder)
            else:
                spec = TrainSpec(loss=loss, lam=lam, gtol=gtol, max_rounds=max_iter,
                                 max_wan_bytes=max_wan_bytes, w0=w0, grad_reference=reference,
                                 params=_parse_params(params))
                result = run_method(fed, method, spec, recorder)
        if isinstance(result, Refused):
            raise click.ClickException(f"the centralized plan is {result}:\n  "
                                       + "\n  ".join(result.messages))
        if fed.dropped:
            result.info["dropped_sites"] = dict(fed.dropped)
            result.info["covers_sites"] = fed.names
            console.print(f"[bold yellow]warning[/]: the run continued without "
                          f"{', '.join(fed.dropped)}; the model covers only "
                          f"{', '.join(fed.names)}")
        if fed.recoveries:
            result.info["recovered_sites"] = dict(fed.recoveries)
        model = LinearModel(result.w, loss, result.info.get("lam", lam), fed.space,
                            {**result.summary(), "reference_grad_norm": result.info.get(
                                "reference_grad_norm")})
        if run is not None:
            run.save_checkpoint({**_progress(fed, result.rows[-1] if result.rows else None),
                                 "done": True, "model": str(Path(out_path).resolve())},
                                force=True)
    model.save(out_path)
    table = Table(title=f"{method}: {result.reason}")
    for col in ("objective", "iterations", "rounds", "vector rounds", "WAN bytes", "wall s"):
        table.add_column(col, justify="right")
    last = result.rows[-1]
    table.add_row(f"{result.objective:.10g}", str(last.iteration), str(last.rounds),
                  f"{last.vector_rounds:g}", f"{last.wan_bytes:,}", f"{last.seconds:.1f}")
    console.print(table)
    if evaluate is not None:
        console.print(_metrics_table("test quality", {"test": evaluate(result.w)}))
    if "privacy" in result.info:
        console.print(_privacy_table(result.info["privacy"]))
    if topology is not None:
        from geodml.federation.meter import read_audit
        from geodml.wan import model_run

        modeled = model_run(read_audit(audit), topology)
        console.print(f"over the deployment's links: {modeled.seconds:.1f} s of WAN transfer "
                      f"(modeled), ${modeled.usd:.4f} egress, beside {last.seconds:.1f} s "
                      "measured here")
        if scratch is not None:
            scratch.cleanup()
    console.print(f"model written to {out_path}")


def _progress(fed, row) -> dict:
    """What ``checkpoint.json`` records (see :mod:`geodml.runs`)."""
    return {"iteration": row.iteration if row else 0,
            "objective": row.objective if row else None, "rounds": fed.rounds,
            "vector_rounds": fed.vector_rounds, "meter": fed.meter.snapshot(),
            "journal": fed.journal.counts() if fed.journal is not None else {},
            "dropped_sites": dict(fed.dropped), "recovered_sites": dict(fed.recoveries),
            "done": False}


def _train_centralized(data_dir, test, loss, solver, lam, gtol, max_iter, threads, w0,
                       out_path) -> None:
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
            data, loss, lam, LbfgsOptions(gtol=gtol, max_iter=max_iter), w0=w0,
            n_threads=threads, callback=progress, solver=solver,
        )
    seconds = time.perf_counter() - start
    model.info["seconds"] = seconds
    model.save(out_path)
    console.print(f"{result.reason} after {result.iterations} iterations in {seconds:.2f} s; "
                  f"F = {result.f:.10g}")
    rows = {"train": model.evaluate(data)}
    if test is not None:
        rows["test"] = model.evaluate(test)
    console.print(_metrics_table("model quality", rows))
    console.print(f"model written to {out_path}")
    Path(out_path).with_suffix(".json").write_text(json.dumps({**model.info, **{
        f"{k}_{m}": v for k, r in rows.items() for m, v in r.items()}}, indent=2))
