"""One parameter schema (geodml.params): every refusal, the defaults every method and
site procedure ran with before the schema, and that a parameter the coordinator
forwards to a site procedure is checked by one declaration on both sides."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from click.testing import CliRunner

from geodml.algorithms import admm, dane, dpgd, fadl, fedavg, oneshot, sqm
from geodml.algorithms.record import RunRecorder
from geodml.algorithms.registry import METHODS, PARAMS, TrainSpec, train
from geodml.cli import main
from geodml.data.dataset import Dataset, FeatureSpace
from geodml.errors import ConfigError, ParamError
from geodml.federation import Federation, SiteCallError
from geodml.job.procedure_params import (
    ADMM_LOCAL,
    DANE_LOCAL,
    FADL_LOCAL,
    LOCAL_MINIMIZE,
    LOCAL_SGD,
    PROCEDURE_PARAMS,
    check_sent,
)
from geodml.params import Param, Schema
from geodml.site.inprocess import InProcessTransport
from geodml.site.procedures import PROCEDURES
from geodml.site.service import SiteService

DOCS = Path(__file__).resolve().parents[1] / "docs" / "algorithms.md"

SCHEMA = Schema(
    n=Param(10, "int", 1, 1000, "an integer"),
    x=Param(0.5, "float", 0.0, 1.0, "a number"),
    pos=Param(None, "float", 0.0, None, "a positive number", lo_open=True),
    on=Param(False, "bool", doc="a switch"),
    grid=Param((1.0, 2.0), "floats", 0.0, 10.0, "numbers"),
    mode=Param(None, "choice", doc="a mode", choices=("send", "stored")),
)


def refusal(params: dict, owner: str = "demo") -> str:
    with pytest.raises(ParamError) as err:
        SCHEMA.read(owner, params)
    return str(err.value)


def test_defaults_fill_what_is_missing_or_null():
    assert SCHEMA.read("demo", {}) == {"n": 10, "x": 0.5, "pos": None, "on": False,
                                       "grid": (1.0, 2.0), "mode": None}
    assert SCHEMA.read("demo", {"n": None, "x": None})["n"] == 10
    assert SCHEMA.read("demo", None) == SCHEMA.defaults()


def test_values_are_read_as_their_kind():
    got = SCHEMA.read("demo", {"n": 1000, "x": 1, "pos": 3, "on": True, "grid": [0, 10],
                               "mode": "stored"})
    assert got == {"n": 1000, "x": 1.0, "pos": 3.0, "on": True, "grid": (0.0, 10.0),
                   "mode": "stored"}
    assert type(got["x"]) is float and type(got["pos"]) is float  # JSON ints are numbers
    assert SCHEMA.read("demo", {"n": np.int64(7), "x": np.float32(0.25)})["n"] == 7


def test_unknown_names_are_refused_listing_the_known_ones():
    message = refusal({"n": 3, "inner": 1, "zz": 2})
    assert message == ("unknown demo parameters ['inner', 'zz']; known: "
                       "['grid', 'mode', 'n', 'on', 'pos', 'x']")
    assert issubclass(ParamError, ConfigError) and issubclass(ParamError, ValueError)


@pytest.mark.parametrize(("params", "message"), [
    ({"n": 0}, "demo parameter n must be an integer in [1, 1000], got 0"),
    ({"n": 1001}, "demo parameter n must be an integer in [1, 1000], got 1001"),
    ({"n": True}, "demo parameter n must be an integer in [1, 1000], got True"),
    ({"n": 2.0}, "demo parameter n must be an integer in [1, 1000], got 2.0"),
    ({"n": "3"}, "demo parameter n must be an integer in [1, 1000], got '3'"),
    ({"x": -0.1}, "demo parameter x must be a number in [0, 1], got -0.1"),
    ({"x": False}, "demo parameter x must be a number in [0, 1], got False"),
    ({"x": "fast"}, "demo parameter x must be a number in [0, 1], got 'fast'"),
    ({"x": float("nan")}, "demo parameter x must be a number in [0, 1], got nan"),
    ({"pos": 0}, "demo parameter pos must be a number > 0, got 0"),
    ({"pos": float("inf")}, "demo parameter pos must be a number > 0, got inf"),
    ({"pos": 10**400}, "demo parameter pos must be a number > 0, got 1000"),
    ({"on": 1}, "demo parameter on must be true or false, got 1"),
    ({"on": "yes"}, "demo parameter on must be true or false, got 'yes'"),
    ({"grid": []}, "demo parameter grid must be a non-empty list of numbers, each in "
                   "[0, 10], got []"),
    ({"grid": "12"}, "demo parameter grid must be a non-empty list of numbers, each in "
                     "[0, 10], got '12'"),
    ({"grid": [1, 11]}, "demo parameter grid must be a non-empty list of numbers, each in "
                        "[0, 10], got [1, 11]"),
    ({"grid": [1, True]}, "demo parameter grid must be a non-empty list of numbers, each in "
                          "[0, 10], got [1, True]"),
    ({"mode": "yes"}, "demo parameter mode must be one of send, stored, got 'yes'"),
])
def test_wrong_kinds_and_values_out_of_bounds_name_owner_and_field(params, message):
    assert refusal(params).startswith(message)


def test_a_long_value_is_cut_in_the_message_and_params_must_be_a_mapping():
    assert refusal({"grid": list(range(1000))}).endswith("...")
    assert len(refusal({"grid": list(range(1000))})) < 200
    with pytest.raises(ParamError, match="demo parameters must be an object"):
        SCHEMA.read("demo", [("n", 3)])


def test_declarations_are_checked():
    with pytest.raises(ValueError, match="is not an integer in"):
        Param(0, "int", 1, 10)
    with pytest.raises(ValueError, match="kind must be one of"):
        Param(1, "str")
    with pytest.raises(ValueError, match="choices go with kind 'choice'"):
        Param(None, "choice")
    with pytest.raises(ValueError, match="no parameters"):
        SCHEMA.with_defaults(nope=1)
    with pytest.raises(ValueError, match="is not a number"):
        SCHEMA.with_defaults(x=2.0)


def test_describe_gives_one_line_per_parameter_with_default_bounds_and_doc():
    lines = SCHEMA.describe()
    assert lines[0] == "n = 10 (an integer in [1, 1000]): an integer"
    assert lines[2] == "pos = unset (a number > 0): a positive number"
    assert lines[3] == "on = false (true or false): a switch"
    assert lines[4] == "grid = 1,2 (a non-empty list of numbers, each in [0, 10]): numbers"
    assert len(lines) == len(SCHEMA)
    assert Schema().describe() == ["(no parameters)"]


# what every method and procedure ran with before the schema (behaviour must not change)
METHOD_DEFAULTS = {
    "sqm-lbfgs": {"line_search_batch": 1, "trial_step": True, "memory": 0},
    "fadl": {"memory": 1, "adaptive": False, "pay_ratio": 2.0, "inner_iterations": 10,
             "inner_gtol": 1e-3, "mu": 0.0, "newton_rounds": 0, "newton_tol": 0.1},
    "fadl-subspace": {"memory": 10, "adaptive": True, "pay_ratio": 2.0,
                      "inner_iterations": 10, "inner_gtol": 1e-3, "mu": 0.0,
                      "newton_rounds": 0, "newton_tol": 0.1},
    "oneshot": {"local_max_iter": 1000, "local_gtol": 1e-10},
    "fedavg": {"epochs": 1, "batch_size": 64, "decay": 2.0, "eta0": None,
               "eta0_grid": (0.25, 1.0, 4.0, 16.0), "seed": 0},
    "admm": {"rho": None, "rho_scale": 4.0, "adapt": False, "mu": 10.0, "tau": 2.0,
             "inner_max_iter": 30, "inner_gtol0": 1e-2, "inner_gtol_min": 1e-10,
             "eps_rel": 1e-7},
    "dane": {"eta": 1.0, "mu": 0.0, "inner_max_iter": 200, "inner_gtol": 1e-8},
    "dp-gd": {"rounds": 100, "clip": 1.0, "step": None},
}
PROCEDURE_DEFAULTS = {
    "local_minimize": {"max_iter": 100, "gtol": 1e-6, "precondition": "none",
                       "time_pairs": False},  # none: as before
    "warm_start": {"max_iter": 50, "gtol": 1e-2},
    "hess_diag": {"at": "point"},
    "local_sgd": {"epochs": 1, "batch_size": 32, "eta0": 0.1, "decay": 0.0, "t0": 0.0,
                  "seed": 0},
    "admm_local": {"iteration": 0, "rho": 1.0, "n_total": None, "max_iter": 50,
                   "gtol": 1e-6},
    "dane_local": {"eta": 1.0, "mu": 0.0, "max_iter": 100, "gtol": 1e-8},
    "fadl_local": {"inner_iterations": 10, "inner_gtol": 1e-3, "mu": 0.0, "metric": None},
}


def test_every_method_and_procedure_has_a_schema_with_the_old_defaults():
    assert PARAMS.keys() == METHODS.keys()
    assert PROCEDURE_PARAMS.keys() == PROCEDURES.keys()
    for method, defaults in METHOD_DEFAULTS.items():
        assert PARAMS[method].defaults() == defaults, method
    assert PARAMS["sqm-tron"] is PARAMS["sqm-gd"] is sqm.SQM_PARAMS
    for procedure, defaults in PROCEDURE_DEFAULTS.items():
        assert PROCEDURE_PARAMS[procedure].defaults() == defaults, procedure
    assert fadl.FadlOptions.from_params({}, "fadl") == fadl.FADL
    assert fadl.FADL_SUBSPACE.memory == 10 and not fadl.FADL.adaptive


# (method schema, its field) -> (the procedure it is forwarded to, that field)
FORWARDED = [
    (fadl.FADL_PARAMS, "inner_iterations", FADL_LOCAL, "inner_iterations"),
    (fadl.FADL_SUBSPACE_PARAMS, "inner_gtol", FADL_LOCAL, "inner_gtol"),
    (fadl.FADL_SUBSPACE_PARAMS, "mu", FADL_LOCAL, "mu"),
    (dane.DANE_PARAMS, "eta", DANE_LOCAL, "eta"),
    (dane.DANE_PARAMS, "mu", DANE_LOCAL, "mu"),
    (dane.DANE_PARAMS, "inner_max_iter", DANE_LOCAL, "max_iter"),
    (dane.DANE_PARAMS, "inner_gtol", DANE_LOCAL, "gtol"),
    (admm.ADMM_PARAMS, "rho", ADMM_LOCAL, "rho"),
    (admm.ADMM_PARAMS, "inner_max_iter", ADMM_LOCAL, "max_iter"),
    (admm.ADMM_PARAMS, "inner_gtol0", ADMM_LOCAL, "gtol"),
    (admm.ADMM_PARAMS, "inner_gtol_min", ADMM_LOCAL, "gtol"),
    (oneshot.ONESHOT_PARAMS, "local_max_iter", LOCAL_MINIMIZE, "max_iter"),
    (oneshot.ONESHOT_PARAMS, "local_gtol", LOCAL_MINIMIZE, "gtol"),
    (fedavg.FEDAVG_PARAMS, "epochs", LOCAL_SGD, "epochs"),
    (fedavg.FEDAVG_PARAMS, "batch_size", LOCAL_SGD, "batch_size"),
    (fedavg.FEDAVG_PARAMS, "decay", LOCAL_SGD, "decay"),
    (fedavg.FEDAVG_PARAMS, "eta0", LOCAL_SGD, "eta0"),
]


@pytest.mark.parametrize(("method", "field", "procedure", "sent"), FORWARDED,
                         ids=[f"{f}->{s}" for _, f, _, s in FORWARDED])
def test_a_forwarded_parameter_is_the_procedures_declaration(method, field, procedure, sent):
    ours, theirs = method[field], procedure[sent]
    assert (ours.kind, ours.lo, ours.hi, ours.lo_open) == (
        theirs.kind, theirs.lo, theirs.hi, theirs.lo_open)
    if ours.default == theirs.default and ours.doc == theirs.doc:
        assert ours is theirs  # not a copy: the same object
    grid = fedavg.FEDAVG_PARAMS["eta0_grid"]  # every candidate is sent as eta0
    assert (grid.lo, grid.hi) == (LOCAL_SGD["eta0"].lo, LOCAL_SGD["eta0"].hi)


def test_fadl_shares_the_site_procedures_param_objects():
    for name in ("inner_iterations", "inner_gtol", "mu"):
        assert fadl.FADL_PARAMS[name] is FADL_LOCAL[name]
        assert fadl.FADL_SUBSPACE_PARAMS[name] is FADL_LOCAL[name]


def test_check_sent_refuses_what_a_site_would_and_returns_the_params_unchanged():
    sent = {"epochs": 1, "eta0": 0.5}
    assert check_sent("local_sgd", sent) is sent  # not filled with defaults: same bytes
    with pytest.raises(ParamError, match=r"^local_sgd parameter epochs must be an integer"):
        check_sent("local_sgd", {"epochs": 0})
    with pytest.raises(ParamError, match=r"unknown fadl_local parameters \['memory'\]"):
        check_sent("fadl_local", {"memory": 3})
    with pytest.raises(ValueError, match="unknown procedure 'nope'"):
        check_sent("nope", {})


def _data(n: int = 400, d: int = 30, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    X = sp.random(n, d, density=0.2, random_state=seed, format="csr")
    y = (rng.random(n) < 0.5).astype(np.float64)
    return Dataset(X, y, FeatureSpace(d))


def _federation(k: int = 2) -> Federation:
    data = _data()
    parts = [data.take(np.arange(i, data.n_rows, k)) for i in range(k)]
    services = [SiteService(f"dc{i}", f"region{i}", p) for i, p in enumerate(parts)]
    return Federation([InProcessTransport(s) for s in services], home="dc0")


BAD = "fadl_local parameter inner_iterations must be an integer in [1, 1000], got 0"


def test_coordinator_and_site_refuse_the_same_bad_value_with_the_same_field():
    """FADL's inner_iterations = 0: the coordinator refuses it before any round, naming
    the method; a site sent it refuses it with the same words, naming itself and the
    procedure (INVALID_ARGUMENT)."""
    with pytest.raises(ParamError) as coordinator:
        fadl.FadlOptions.from_params({"inner_iterations": 0}, "fadl-subspace")
    assert str(coordinator.value) == ("fadl-subspace parameter inner_iterations must be an "
                                      "integer in [1, 1000], got 0")
    with _federation() as fed:
        described = fed.meter.total_bytes()  # the sites' Describe, when the federation opened
        with pytest.raises(ParamError) as before_any_round:
            train(fed, "fadl", TrainSpec(params={"inner_iterations": 0}), RunRecorder(fed))
        assert "fadl parameter inner_iterations must be" in str(before_any_round.value)
        assert fed.meter.total_bytes() == described
        fed.prepare("logistic", 1e-3)
        fed.evaluate(np.zeros(fed.n_features))
        with pytest.raises(SiteCallError) as site:
            fed.local_solve("fadl_local", {"inner_iterations": 0}, [np.zeros(fed.n_features)])
        assert site.value.code == "INVALID_ARGUMENT"
        assert re.search(r"site dc\d: fadl_local: ", str(site.value))
        assert BAD in str(site.value)
        with pytest.raises(ParamError) as sent:
            check_sent("fadl_local", {"inner_iterations": 0})
        assert str(sent.value) == BAD
        with pytest.raises(SiteCallError, match="unknown fadl_local parameters"):
            fed.local_solve("fadl_local", {"memory": 3}, [np.zeros(fed.n_features)])


@pytest.mark.parametrize(("method", "params", "message"), [
    ("sqm-lbfgs", {"line_search_batch": 0}, "sqm-lbfgs parameter line_search_batch must be "
                                            "an integer in [1, 1024], got 0"),
    ("fedavg", {"eta0_grid": [1, 0]}, "fedavg parameter eta0_grid must be a non-empty list"),
    ("fedavg", {"batch_size": 1.5}, "fedavg parameter batch_size must be an integer"),
    ("admm", {"rho": -1.0}, "admm parameter rho must be a number in [1e-300, 1e+300], "
                            "got -1.0"),
    ("admm", {"adapt": 1}, "admm parameter adapt must be true or false, got 1"),
    ("admm", {"tau": 1.0}, "admm parameter tau must be a number > 1, got 1.0"),
    ("dane", {"inner_max_iter": 0}, "dane parameter inner_max_iter must be an integer in "
                                    "[1, 100000], got 0"),
    ("oneshot", {"local_gtol": 2}, "oneshot parameter local_gtol must be a number in [0, 1]"),
    ("dp-gd", {"clip": 0}, "dp-gd parameter clip must be a number > 0, got 0"),
    ("fadl", {"memory": 33}, "fadl parameter memory must be an integer in [0, 32], got 33"),
])
def test_every_method_refuses_a_bad_parameter_before_any_round(method, params, message):
    with _federation() as fed:
        described = fed.meter.total_bytes()
        with pytest.raises(ParamError) as err:
            train(fed, method, TrainSpec(params=params), RunRecorder(fed))
        assert str(err.value).startswith(message), str(err.value)
        assert fed.meter.total_bytes() == described  # refused before any round


def test_admm_refuses_a_zero_rho_from_rho_scale_at_lambda_zero():
    with pytest.raises(ParamError, match="admm parameter rho must be a number in"):
        admm.AdmmOptions.from_params({}, 0.0)
    assert admm.AdmmOptions.from_params({}, 0.5).rho == 2.0
    assert dpgd.dp_gd_settings({"rounds": 500}, 0.0, 40) == (40, 1.0, 4.0)


def test_geodml_methods_prints_every_parameter_from_the_schemas():
    runner = CliRunner()
    result = runner.invoke(main, ["methods"])
    assert result.exit_code == 0, result.output
    for method, schema in PARAMS.items():
        assert f"\n{method}\n" in f"\n{result.output}"
        for line in schema.describe():
            assert f"  {line}\n" in result.output, line
    one = runner.invoke(main, ["methods", "dane"])
    assert one.output.splitlines() == ["dane", *(f"  {x}" for x in dane.DANE_PARAMS.describe())]
    procedures = runner.invoke(main, ["methods", "--procedures", "fadl_local"])
    assert "  inner_iterations = 10 (an integer in [1, 1000])" in procedures.output
    bad = runner.invoke(main, ["methods", "fadl-sub"])
    assert bad.exit_code == 2 and "unknown method 'fadl-sub'; known: sqm-lbfgs" in bad.output


def test_docs_list_every_parameter_as_describe_prints_it():
    """docs/algorithms.md's Parameters section is describe()'s output: every field of
    every method's and every procedure's schema, with its default and bounds."""
    text = DOCS.read_text()
    for owner, schema in {**PARAMS, **PROCEDURE_PARAMS}.items():
        assert f"`{owner}`" in text, owner
        for line in schema.describe():
            assert f"\n{line}\n" in text, (owner, line)
