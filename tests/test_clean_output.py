"""No warning on a clean run: the CLI's help, its imports, and the logistic loss at
infinite margins (pyproject.toml's filterwarnings keeps geodml's own warnings errors
inside the suite; these check what a user's terminal shows)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from geodml.models.losses import Logistic

from .tools.timing import scaled


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          timeout=scaled(60), stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("argv", [["--help"], ["site", "serve", "--help"],
                                  ["certs", "issue", "--help"], ["train", "--help"]])
def test_help_prints_no_warning(argv):
    proc = run("-m", "geodml", *argv)
    assert proc.returncode == 0
    assert proc.stderr == "", proc.stderr


def test_every_module_imports_without_a_warning():
    code = ("import pkgutil, importlib, geodml\n"
            "for m in pkgutil.walk_packages(geodml.__path__, 'geodml.'):\n"
            "    if not any(s in m.name for s in ('ray', '_generated', '__main__')):\n"
            "        importlib.import_module(m.name)\n")
    proc = run("-W", "error", "-c", code)
    assert proc.returncode == 0, proc.stderr


def test_logistic_loss_is_finite_or_exact_infinity_at_infinite_margins():
    z = np.array([-np.inf, -1e308, -40.0, 0.0, 40.0, 1e308, np.inf])
    loss = Logistic()
    for label in (0.0, 1.0):
        y = np.full_like(z, label)
        with np.errstate(invalid="raise", over="raise", divide="raise"):  # no 0 * inf
            value, deriv = loss.value_and_deriv(y, z)
            alone = loss.value(y, z)
        np.testing.assert_array_equal(value, alone)
        np.testing.assert_allclose(value, np.logaddexp(0.0, -(2 * label - 1) * z))
        assert not np.isnan(deriv).any()
        right_side = z == (np.inf if label else -np.inf)
        assert value[right_side] == 0.0
