"""`geodml train`: its options, parsed once into a :class:`TrainConfig`; a resumable
run's settings saved and read back."""

from __future__ import annotations

import os
from pathlib import Path

import click

from geodml.algorithms.stop import DEFAULT_PATIENCE
from geodml.centralized import SOLVERS
from geodml.cli.config import DEFAULT_GEO_METHOD, TrainConfig
from geodml.cli.options import compression_options, max_rounds_option, objective_options
from geodml.cli.output import console

#: options naming files, saved resolved so that --resume works from any folder
PATH_OPTIONS = ("data_dir", "tls_dir", "tls_ca", "tls_cert", "tls_key", "test_dir",
                "warm_start", "record", "audit", "deployment", "out_path")


@click.command()
@click.argument("data_dir", required=False, type=click.Path(exists=True, file_okay=False))
@click.option("--method", default=None,
              help="centralized (on DATA_DIR), centralized-export (copy every site's rows "
                   "home, then train), or a geo-distributed method: "
                   "fadl-subspace, fadl, sqm-lbfgs, sqm-gd, sqm-tron, oneshot, fedavg, admm, "
                   "dane, dp-gd (differentially private: the sites need a budget). "
                   f"[default: centralized on a dataset directory, {DEFAULT_GEO_METHOD} on "
                   "sites]")
@click.option("--site", "remote", multiple=True, metavar="NAME=HOST:PORT",
              help="A remote site (repeat). Without it, DATA_DIR's sites run in this process.")
@click.option("--home", default=None, help="The coordinator's DC (default: the first site).")
@click.option("--tls-dir", type=click.Path(exists=True, file_okay=False),
              help="Folder with ca.pem and the coordinator's NAME.pem and NAME.key (what "
                   "geodml certs wrote; coordinator.pem first).")
@click.option("--tls-ca", type=click.Path(exists=True, dir_okay=False),
              help="The CA certificate (overrides --tls-dir's ca.pem).")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False),
              help="The coordinator's certificate (overrides --tls-dir's).")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False),
              help="The coordinator's private key (overrides --tls-dir's).")
@click.option("--insecure", is_flag=True, help="Plaintext to loopback sites (testing only).")
@click.option("--allow-export", "allow_export", multiple=True, metavar="SITE",
              help="In-process sites only: let this site's rows be exported (repeat; 'all').")
@click.option("--test", "test_dir", type=click.Path(exists=True, file_okay=False),
              help="A dataset directory (or a generated sites directory) to evaluate on.")
@objective_options
@click.option("--solver", type=click.Choice(SOLVERS), default="lbfgs", show_default=True,
              help="Solver of --method centralized.")
@click.option("--precondition", type=click.Choice(("diag", "none", "auto")), default="diag",
              show_default=True,
              help="The exact methods' and the centralized solver's metric: the Hessian's "
                   "diagonal at the base rate (one extra round, one vector up per site), "
                   "none, or auto: whichever of the two solves the home DC's own rows in "
                   "fewer L-BFGS iterations (two solves inside the home DC, no WAN bytes; "
                   "the record says which and why).")
@click.option("--precondition-mix", type=click.FloatRange(0, 1), default=0.0,
              show_default=True,
              help="Blend the diagonal with its mean: (1 - M) D + M mean(D); 1 is the identity.")
@max_rounds_option
@click.option("--max-wan-bytes", type=int, default=None, help="Stop after this many WAN bytes.")
@click.option("--stop", "stop_rule", type=click.Choice(("gtol", "validation")), default="gtol",
              show_default=True,
              help="gtol: at --gtol. validation: when the sites' held-out log loss stops "
                   "improving (--patience rows without a --stop-threshold relative gain); the "
                   "model of the best held-out row is kept.")
@click.option("--validation-share", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              default=None,
              help="Share of every site's rows held out and scored each round (default 0.1 "
                   "with --stop validation; with --stop gtol it only reports the curve).")
@click.option("--patience", type=click.IntRange(1, 1000), default=DEFAULT_PATIENCE,
              show_default=True,
              help="--stop validation: rows without a gain before stopping.")
@click.option("--stop-threshold", type=click.FloatRange(0, 1, max_open=True), default=1e-4,
              show_default=True,
              help="--stop validation: the relative gain in held-out log loss that counts.")
@click.option("--lam-path", default=None, metavar="L1,L2,...",
              help="Train at each lambda (largest first, each warm-started from the last) "
                   "and keep the one of least held-out log loss; needs --validation-share "
                   "or --stop validation.")
@click.option("--validation-seed", type=click.IntRange(0, 2**63 - 1), default=0,
              show_default=True, help="Fixes which rows are held out.")
@compression_options(repeat=False)
@click.option("--full-precision-at", type=click.FloatRange(0, 1), default=1e-3,
              show_default=True,
              help="Switch to full precision once ||grad|| falls to this share of its start.")
@click.option("--warm-start", type=click.Path(exists=True, dir_okay=False),
              help="Start from this model file.")
@click.option("--local-warm-start", is_flag=True,
              help="sqm-*, fadl, fadl-subspace: start from the sites' own solutions, "
                   "averaged per feature by their curvature (one round, four vectors up).")
@click.option("--record", type=click.Path(dir_okay=False),
              help="Write one JSON line per outer iteration here.")
@click.option("--audit", type=click.Path(dir_okay=False),
              help="Write the audit log of every message crossing a DC boundary here.")
@click.option("--deployment", type=click.Path(exists=True, dir_okay=False),
              help="A deployment file (docs/wan.md): without DATA_DIR or --site, train over "
                   "its sites with its [tls]; always report the modeled WAN time and egress "
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
def train(ctx: click.Context, **params) -> None:
    """Train a linear model: centrally on a dataset directory, or geo-distributed over
    the sites of DATA_DIR (a `geodml partition` / `geodml generate` output), over
    remote sites (--site) or over a deployment file's sites (--deployment)."""
    from geodml.cli.train_run import run_training

    if params["resume_dir"]:
        _resume(ctx, params["resume_dir"])
        return
    settings = {n: v for n, v in params.items() if n not in ("run_dir", "resume_dir")}
    if not params["run_dir"]:
        run_training(TrainConfig.from_params(settings))
        return
    config = TrainConfig.from_params(settings)
    if config.centralized:
        raise click.UsageError("--run-dir is for geo-distributed runs (and "
                               "centralized-export), not --method centralized")
    from geodml.runs import RunDir

    for name in PATH_OPTIONS:
        if settings.get(name) is not None:
            settings[name] = str(Path(settings[name]).resolve())
    settings["method"] = config.method
    # job nonces derive from this, so that a resumed run sends the same requests
    settings["nonce_seed"] = os.urandom(16).hex()
    run = RunDir.create(params["run_dir"], settings)
    run_training(TrainConfig.from_params(settings), run)


def _resume(ctx: click.Context, resume_dir: str) -> None:
    """Finish the run in ``resume_dir`` with its saved settings (no other option)."""
    from geodml.cli.train_run import run_training
    from geodml.runs import RunDir

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
    run_training(TrainConfig.from_params(saved), run, resume=True)
