"""The command line's shape: options parsed into one config object per command and
passed whole, so no CLI helper takes more than 12 parameters; small modules."""

from __future__ import annotations

import ast
import json
from pathlib import Path

from click.testing import CliRunner

import geodml.cli
from geodml.algorithms.defaults import DEFAULT_GTOL
from geodml.cli import main

CLI = Path(geodml.cli.__file__).parent
MAX_PARAMETERS = 12
MAX_LINES = 600


def _parameters(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    a = fn.args
    return (len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs)
            + (a.vararg is not None) + (a.kwarg is not None))


def test_no_cli_function_takes_more_than_12_parameters():
    counts = {}
    for path in sorted(CLI.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                counts[f"{path.name}:{node.lineno} {node.name}"] = _parameters(node)
    assert len(counts) > 50  # the walk saw the CLI's functions
    too_many = {k: n for k, n in counts.items() if n > MAX_PARAMETERS}
    assert not too_many, f"more than {MAX_PARAMETERS} parameters: {too_many}"


def test_cli_modules_are_small():
    sizes = {p.name: len(p.read_text().splitlines()) for p in CLI.glob("*.py")}
    assert not {k: n for k, n in sizes.items() if n > MAX_LINES}


def test_one_gtol_default_in_every_command_help():
    runner = CliRunner()
    for command in ("train", "plan", "compare"):
        text = runner.invoke(main, [command, "--help"], terminal_width=200).output
        assert f"[default: {DEFAULT_GTOL:g}]" in text, (command, text)
        for flag in ("--compress ", "--compress-up", "--compress-down"):
            assert flag in text, (command, flag)
        assert "[logistic|" in text or "logistic|" in text, (command, text)


def test_an_invalid_compression_or_loss_lists_the_choices(tmp_path):
    deployment = tmp_path / "d.toml"
    deployment.write_text('home = "a"\n[[sites]]\nname = "a"\n')
    runner = CliRunner()
    for args in (["train", "--compress-up", "flot16"], ["train", "--compress", "flot16"],
                 ["plan", str(deployment), "--compress-down", "flot16"],
                 ["compare", str(deployment), "--compress", "flot16"]):
        result = runner.invoke(main, args)
        assert result.exit_code == 2, (args, result.output)
        assert "'flot16' is not one of none, float32, float16, bfloat16, float8, int8" in \
            result.output, result.output
        assert "JSON" in result.output and "not valid JSON" not in result.output
    for args in (["train", "--loss", "hinge2"], ["plan", str(deployment), "--loss", "hinge2"]):
        result = runner.invoke(main, args)
        assert result.exit_code == 2 and "'hinge2' is not one of" in result.output, \
            result.output
        assert "logistic" in result.output
    bad_json = runner.invoke(main, ["train", "--compress-up", '{"kind": "top_k"}'])
    assert bad_json.exit_code == 2 and "give exactly one of fraction and k" in bad_json.output


def test_plan_compression_flags_make_one_variant_per_compress(tmp_path):
    """plan/compare: one plan per --compress (repeat), each with the one-direction
    overrides; without any, one uncompressed plan per method."""
    from geodml.cli.config import PlanConfig
    from geodml.cli.plan_cmd import plan

    deployment = tmp_path / "d.toml"
    deployment.write_text('home = "a"\n[[sites]]\nname = "a"\n')

    def variants(*args):
        ctx = plan.make_context("plan", [str(deployment), *args])
        return PlanConfig.from_params(ctx.params).variants()

    plain = variants()
    assert [(v.name, v.compress_up, v.compress_down) for v in plain] == [
        ("fadl-subspace", None, None)]
    two = variants("--compress", "float16", "--compress", "int8", "--compress-up", "none")
    assert [v.name for v in two] == ["fadl-subspace down float16", "fadl-subspace down int8"]
    assert all(v.compress_up is None and v.compress_down for v in two)
    up = variants("--compress-up", "int8", "--method", "sqm-lbfgs")
    assert [v.name for v in up] == ["sqm-lbfgs up int8"]
    # no residual: gradient sums travel as changes (geodml.job.compression)
    assert json.loads(up[0].compress_up) == {"kind": "quantize_int8",
                                            "chunk_elements": 1048576, "stochastic": False,
                                            "seed": 0}
    assert up[0].compress_down is None
    (f8,) = variants("--compress", "float8")
    assert f8.name == "fadl-subspace float8"
    assert json.loads(f8.compress_up) == {"kind": "cast", "dtype": "float8"}  # no feedback
    assert json.loads(f8.compress_down) == {"kind": "cast", "dtype": "float8"}
