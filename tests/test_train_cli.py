"""`geodml train`: centralized, geo-distributed over a sites directory, bad input."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from geodml.cli import main
from geodml.data.synthetic import RegionalCTRConfig, write_regional
from geodml.model import LinearModel


@pytest.fixture(scope="module")
def sites(tmp_path_factory):
    out = tmp_path_factory.mktemp("sites")
    write_regional(RegionalCTRConfig(regions=("us-east", "eu-west", "ap-south"),
                                     rows_per_region=3000, test_rows_per_region=500,
                                     hash_bits=11, seed=4), out)
    return out


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_geo_distributed_training_writes_model_and_record(sites, tmp_path):
    model, record = tmp_path / "m.npz", tmp_path / "run.jsonl"
    result = invoke("train", sites, "--method", "fadl-subspace", "--test", sites,
                    "--record", record, "--out", model)
    assert result.exit_code == 0, result.output
    assert "relative gradient norm below gtol" in result.output and "auc" in result.output
    rows = [json.loads(line) for line in record.read_text().splitlines()]
    assert rows[0]["iteration"] == 0 and rows[-1]["wan_bytes"] > 0
    loaded = LinearModel.load(model)
    assert loaded.info["method"] == "fadl-subspace"
    # a warm start from the optimum stops at once
    again = invoke("train", sites, "--method", "sqm-lbfgs", "--warm-start", model,
                   "--out", tmp_path / "m2.npz")
    assert again.exit_code == 0, again.output
    assert LinearModel.load(tmp_path / "m2.npz").info["iterations"] <= 2


def test_centralized_export_baseline_through_the_cli(sites, tmp_path):
    refused = invoke("train", sites, "--method", "centralized-export", "--allow-export",
                     "us-east", "--out", tmp_path / "c.npz")
    assert refused.exit_code != 0
    assert "not permitted by site ap-south, eu-west" in refused.output
    result = invoke("train", sites, "--method", "centralized-export", "--allow-export", "all",
                    "--out", tmp_path / "c.npz")
    assert result.exit_code == 0, result.output
    assert LinearModel.load(tmp_path / "c.npz").info["method"] == "centralized"


def test_bad_method_and_params_are_one_line_errors(sites, tmp_path):
    result = invoke("train", sites, "--method", "magic")
    assert result.exit_code != 0 and "unknown method 'magic'" in result.output
    result = invoke("train", sites, "--method", "fadl", "--param", "inner=3")
    assert result.exit_code != 0 and "unknown fadl parameters ['inner']" in result.output
    assert "'inner_iterations'" in result.output  # the known names are listed
    assert "Traceback" not in result.output
    result = invoke("train", sites, "--method", "fadl-subspace", "--param", "inner_iterations=0")
    assert result.exit_code != 0 and ("fadl-subspace parameter inner_iterations must be an "
                                      "integer in [1, 1000], got 0") in result.output
    result = invoke("train", sites, "--method", "fedavg", "--param", "epochs=true")
    assert result.exit_code != 0 and "fedavg parameter epochs must be an integer" in result.output
    assert "Traceback" not in result.output
    result = invoke("train", "--method", "fadl", "--site", "eu-west")
    assert result.exit_code != 0 and "is not NAME=HOST:PORT" in result.output


def test_compressed_training_from_the_cli(sites, tmp_path):
    result = invoke("train", sites, "--method", "sqm-lbfgs", "--compress-up", "int8",
                    "--compress-down", "float16", "--gtol", 1e-7, "--out", tmp_path / "q.npz")
    assert result.exit_code == 0, result.output
    plain = invoke("train", sites, "--method", "sqm-lbfgs", "--gtol", 1e-7,
                   "--out", tmp_path / "p.npz")
    assert plain.exit_code == 0, plain.output
    q, p = LinearModel.load(tmp_path / "q.npz"), LinearModel.load(tmp_path / "p.npz")
    assert abs(q.info["objective"] - p.info["objective"]) <= 1e-6 * p.info["objective"]
    bad = invoke("train", sites, "--compress-up", '{"kind": "top_k"}', "--method", "fadl")
    assert bad.exit_code != 0 and "give exactly one of fraction and k" in bad.output


def test_deployment_file_reports_modeled_wan_time_and_dollars(sites, tmp_path):
    deployment = tmp_path / "deployment.toml"
    deployment.write_text('home = "us-east"\n' + "".join(
        f'[[sites]]\nname = "{n}"\nregion = "{n}"\n' for n in ("us-east", "eu-west", "ap-south")))
    result = invoke("train", sites, "--method", "sqm-lbfgs", "--deployment", deployment,
                    "--out", tmp_path / "m.npz")
    assert result.exit_code == 0, result.output
    assert "s of WAN transfer (modeled)" in result.output and "egress" in result.output
    deployment.write_text('home = "nowhere"\n[[sites]]\nname = "us-east"\n')
    bad = invoke("train", sites, "--method", "sqm-lbfgs", "--deployment", deployment)
    assert bad.exit_code != 0 and "home" in bad.output and str(deployment) in bad.output


def test_compress_is_both_directions_and_one_direction_overrides_it(sites, tmp_path):
    """--compress X is --compress-up X --compress-down X; an override wins for its
    direction ("none": uncompressed)."""
    def wan_bytes(*flags) -> int:
        out = tmp_path / f"m{len(list(tmp_path.iterdir()))}.npz"
        result = invoke("train", sites, "--method", "sqm-lbfgs", "--max-iter", 3, *flags,
                        "--out", out)
        assert result.exit_code == 0, result.output
        return LinearModel.load(out).info["wan_bytes"]

    both = wan_bytes("--compress", "float16")
    assert both == wan_bytes("--compress-up", "float16", "--compress-down", "float16")
    down_only = wan_bytes("--compress", "float16", "--compress-up", "none")
    plain = wan_bytes()
    assert both < down_only < plain


def test_sites_default_to_the_geo_method_and_centralized_names_what_to_pass(sites, tmp_path):
    result = invoke("train", sites, "--max-iter", 2, "--out", tmp_path / "m.npz")
    assert result.exit_code == 0, result.output
    assert LinearModel.load(tmp_path / "m.npz").info["method"] == "fadl-subspace"
    refused = invoke("train", "--method", "centralized", "--site", "a=127.0.0.1:1")
    assert refused.exit_code == 2
    assert "--method centralized trains on a DATA_DIR" in refused.output
    assert "geo-distributed --method such as fadl-subspace" in refused.output


def test_the_preconditioner_is_on_by_default_and_can_be_turned_off(sites, tmp_path):
    runs = {}
    for flags in ((), ("--precondition", "none"),
                  ("--precondition-mix", "0.5", "--local-warm-start"),
                  ("--precondition", "auto")):
        out = tmp_path / f"m{len(runs)}.npz"
        result = invoke("train", sites, "--method", "sqm-lbfgs", "--gtol", 1e-6, "--out", out,
                        *flags)
        assert result.exit_code == 0, result.output
        info = LinearModel.load(out).info
        runs[info["preconditioner"]] = info
    auto = next(k for k in runs if "(auto: L-BFGS to gtol" in k)  # the probe's counts
    assert auto.startswith(("diag (auto:", "none (auto:")) and "us-east's rows" in auto
    assert set(runs) - {auto} == {"diag", "none", "diag (mixed 0.5 with the identity)"}
    assert runs["diag"]["objective"] == pytest.approx(runs["none"]["objective"], rel=1e-8)
    assert runs[auto]["objective"] == pytest.approx(runs["diag"]["objective"], rel=1e-8)
    assert runs["diag (mixed 0.5 with the identity)"]["warm_start"] is True
    assert runs["diag"]["warm_start"] is False
    central = invoke("train", sites / "us-east" / "train", "--method", "centralized",
                     "--precondition", "none", "--out", tmp_path / "c.npz")
    assert central.exit_code == 0, central.output
    assert LinearModel.load(tmp_path / "c.npz").info["preconditioner"] == "none"
    bad = invoke("train", sites, "--precondition", "diagonal")
    assert bad.exit_code != 0 and "'diagonal' is not one of 'diag', 'none'" in bad.output


def test_stop_validation_holds_rows_out_and_keeps_the_best_model(sites, tmp_path):
    record = tmp_path / "val.jsonl"
    result = invoke("train", sites, "--method", "fadl-subspace", "--stop", "validation",
                    "--gtol", "1e-10", "--patience", "2", "--record", record,
                    "--out", tmp_path / "v.npz")
    assert result.exit_code == 0, result.output
    assert "validation loss stopped improving" in result.output
    assert "held-out rows (0.1 of each site's)" in result.output
    rows = [json.loads(line) for line in record.read_text().splitlines()]
    losses = [r["metrics"]["val_log_loss"] for r in rows]
    assert all(0 < v < 1 for v in losses) and all("val_auc" in r["metrics"] for r in rows)
    info = LinearModel.load(tmp_path / "v.npz").info
    assert info["validation"]["best_iteration"] == rows[losses.index(min(losses))]["iteration"]


def test_validation_options_that_cannot_combine_are_refused(sites, tmp_path):
    result = invoke("train", sites, "--method", "fadl-subspace", "--stop", "validation",
                    "--secure-aggregation")
    assert result.exit_code != 0 and "travel in the clear" in result.output
    result = invoke("train", sites, "--method", "centralized-export", "--stop", "validation")
    assert result.exit_code != 0 and "geo-distributed --method" in result.output
    result = invoke("train", sites, "--validation-share", "1.5")
    assert result.exit_code != 0 and "--validation-share" in result.output


def test_lam_path_keeps_the_lambda_of_least_held_out_loss(sites, tmp_path):
    record = tmp_path / "path.jsonl"
    result = invoke("train", sites, "--method", "sqm-lbfgs", "--validation-share", "0.2",
                    "--lam-path", "1e-2,1e-4,1e-3", "--record", record,
                    "--out", tmp_path / "p.npz")
    assert result.exit_code == 0, result.output
    assert "lambda path: chose" in result.output
    info = LinearModel.load(tmp_path / "p.npz").info
    steps = info["lam_path"]
    assert [s["lam"] for s in steps] == [1e-2, 1e-3, 1e-4]  # largest first
    best = min(steps, key=lambda s: s["best_log_loss"])
    assert info["lam"] == best["lam"] and f"chose {best['lam']:g}" in result.output
    # warm-started from the previous lambda's model: the next lambda needs no more rounds
    # than the first (measured 9.5 and 9.5 vector rounds; 12.5 for the third, smaller one)
    assert steps[1]["vector_rounds"] <= steps[0]["vector_rounds"]
    rows = [json.loads(line) for line in record.read_text().splitlines()]
    assert {r["metrics"]["lam"] for r in rows} == {1e-2, 1e-3, 1e-4}  # one record, all runs
    refused = invoke("train", sites, "--lam-path", "1e-3,1e-4")
    assert refused.exit_code != 0 and "held-out loss" in refused.output
    refused = invoke("train", sites, "--validation-share", "0.1", "--lam-path", "1e-3,x")
    assert refused.exit_code != 0 and "--lam-path" in refused.output
