"""The objective's math: derivatives against finite differences, and the DC sums."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.sparse as sp

from geodml.models import LOSSES, RegularizedObjective, SiteSums, get_loss
from geodml.models import site_sums as site_sums_module


def _problem(loss_name: str, n: int = 300, d: int = 40, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = sp.random(n, d, density=0.2, format="csr", random_state=seed) * 2.0
    w_true = rng.standard_normal(d)
    z = X @ w_true
    y = z + rng.standard_normal(n) if loss_name == "squared" else (z > 0).astype(float)
    return X, y


def _objective(X, y, loss_name, lam=0.01, parts=1):
    bounds = np.linspace(0, X.shape[0], parts + 1).astype(int)
    sums = [
        SiteSums(X[a:b], y[a:b], get_loss(loss_name)) for a, b in itertools.pairwise(bounds)
    ]
    return RegularizedObjective(sums, lam, X.shape[1])


@pytest.mark.parametrize("loss_name", sorted(LOSSES))
def test_gradient_matches_central_differences(loss_name):
    X, y = _problem(loss_name)
    obj = _objective(X, y, loss_name)
    rng = np.random.default_rng(1)
    w = rng.standard_normal(X.shape[1]) * 0.3
    _, g = obj.value_grad(w)
    h = 1e-6
    fd = np.array(
        [(obj.value(w + h * e) - obj.value(w - h * e)) / (2 * h) for e in np.eye(len(w))]
    )
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("loss_name", ["logistic", "squared"])
def test_hessian_vector_product_matches_gradient_differences(loss_name):
    # (squared hinge has only a generalized Hessian: it is checked for symmetry below)
    X, y = _problem(loss_name)
    obj = _objective(X, y, loss_name)
    rng = np.random.default_rng(2)
    w = rng.standard_normal(X.shape[1]) * 0.3
    v = rng.standard_normal(X.shape[1])
    h = 1e-6
    _, g_plus = obj.value_grad(w + h * v)
    _, g_minus = obj.value_grad(w - h * v)
    obj.value_grad(w)
    np.testing.assert_allclose(obj.hess_vec(v), (g_plus - g_minus) / (2 * h), rtol=1e-5, atol=1e-8)


def test_generalized_hessian_of_squared_hinge_is_symmetric_psd():
    X, y = _problem("squared_hinge")
    obj = _objective(X, y, "squared_hinge")
    w = np.random.default_rng(3).standard_normal(X.shape[1]) * 0.3
    obj.value_grad(w)
    H = np.column_stack([obj.hess_vec(e) for e in np.eye(X.shape[1])])
    np.testing.assert_allclose(H, H.T, atol=1e-12)
    assert np.linalg.eigvalsh(H).min() >= obj.lam - 1e-10


@pytest.mark.parametrize("loss_name", sorted(LOSSES))
@pytest.mark.parametrize("parts", [2, 4, 7])
def test_sum_of_dc_parts_equals_whole(loss_name, parts):
    X, y = _problem(loss_name, n=211)
    whole = _objective(X, y, loss_name, parts=1)
    split = _objective(X, y, loss_name, parts=parts)
    rng = np.random.default_rng(4)
    w, p, v = (rng.standard_normal(X.shape[1]) for _ in range(3))
    f1, g1 = whole.value_grad(w)
    f2, g2 = split.value_grad(w)
    assert f2 == pytest.approx(f1, rel=1e-13)
    np.testing.assert_allclose(g2, g1, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(split.hess_vec(v), whole.hess_vec(v), rtol=1e-12, atol=1e-15)
    alphas = np.array([0.0, 0.1, 1.0, 3.0])
    whole.set_direction(p)
    split.set_direction(p)
    for a, b in zip(whole.line_values(alphas), split.line_values(alphas), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12)


@pytest.mark.parametrize("loss_name", sorted(LOSSES))
def test_line_values_and_step_agree_with_fresh_evaluation(loss_name):
    X, y = _problem(loss_name)
    obj = _objective(X, y, loss_name, parts=3)
    fresh = _objective(X, y, loss_name)
    rng = np.random.default_rng(5)
    w, p = rng.standard_normal(X.shape[1]), rng.standard_normal(X.shape[1])
    obj.value_grad(w)
    obj.set_direction(p)
    alphas = np.array([0.25, 0.5, 2.0])
    f_line, df_line = obj.line_values(alphas)
    for a, f_a, df_a in zip(alphas, f_line, df_line, strict=True):
        f_ref, g_ref = fresh.value_grad(w + a * p)
        assert f_a == pytest.approx(f_ref, rel=1e-12)
        assert df_a == pytest.approx(g_ref @ p, rel=1e-10)
    f_step, g_step = obj.step(0.5)
    f_ref, g_ref = fresh.value_grad(w + 0.5 * p)
    assert f_step == pytest.approx(f_ref, rel=1e-12)
    np.testing.assert_allclose(g_step, g_ref, rtol=1e-10, atol=1e-14)


def test_row_blocks_on_threads_give_the_same_sums(monkeypatch):
    X, y = _problem("logistic", n=5000, d=60)
    single = SiteSums(X, y, get_loss("logistic"), n_threads=1)
    monkeypatch.setattr(site_sums_module, "BLOCK_MIN_NNZ", 1000)
    blocked = SiteSums(X, y, get_loss("logistic"), n_threads=4)
    assert len(blocked._blocks) == 4
    w = np.random.default_rng(6).standard_normal(X.shape[1])
    a, b = single.evaluate(w), blocked.evaluate(w)
    assert b.loss == pytest.approx(a.loss, rel=1e-13)
    np.testing.assert_allclose(b.grad, a.grad, rtol=1e-12, atol=1e-12)
    blocked.close()


def test_the_hessian_diagonal_leaves_the_dcs_rows_untouched():
    """A block shares the DC's arrays with its columns relabeled hot-first; squaring
    its entries with scipy's ``power`` sorted the relabeled indices in place and so
    permuted the DC's values against their columns (78 of 3M entries in the regional
    CTR data at 2^20): every later job at the site trained on other rows."""
    rng = np.random.default_rng(5)
    n, d, per_row = 2000, 400, 6
    hot = np.arange(d, 0, -1) / (d * (d + 1) / 2)  # column j drawn with weight d - j
    cols = np.stack([rng.choice(d, per_row, replace=False, p=hot) for _ in range(n)])
    X = sp.csr_matrix((rng.integers(1, 4, n * per_row).astype(float),
                       (np.repeat(np.arange(n), per_row), cols.ravel())), shape=(n, d))
    X.sort_indices()
    y = (rng.random(n) < 0.3).astype(float)
    data, indices = X.data.copy(), X.indices.copy()
    sums = SiteSums(X, y, get_loss("logistic"), n_threads=2, hot_first=True)
    assert not np.array_equal(sums.columns.order, np.arange(d))  # relabeled
    expected = np.asarray(X.multiply(X).sum(axis=0)).ravel() * 0.25
    np.testing.assert_allclose(sums.hess_diag(0.25), expected, rtol=1e-12)
    sums.evaluate(np.zeros(d))
    np.testing.assert_allclose(sums.hess_diag(), expected, rtol=1e-12)  # l'' = 1/4 at 0
    assert np.array_equal(X.data, data) and np.array_equal(X.indices, indices)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_hot_first_columns_give_bitwise_the_same_sums(dtype):
    """Relabeling the columns hottest first only moves the model-sized vectors around:
    every sum, gradient and Hessian-vector product keeps its bits."""
    rng = np.random.default_rng(11)
    n, d, per_row = 3000, 500, 8
    cols = np.minimum((rng.pareto(1.0, n * per_row) * 5).astype(np.int64), d - 1)
    X = sp.csr_matrix((rng.random(n * per_row), (np.repeat(np.arange(n), per_row), cols)),
                      shape=(n, d), dtype=dtype)
    y = (rng.random(n) < 0.3).astype(float)
    hot = SiteSums(X, y, get_loss("logistic"), n_threads=2, hot_first=True)
    given = SiteSums(X, y, get_loss("logistic"), n_threads=2, hot_first=False)
    assert given.columns is None
    assert not np.array_equal(hot.columns.order, np.arange(d))  # the columns did move
    w, v = rng.standard_normal(d) * 0.1, rng.standard_normal(d)

    def same(a, b):
        assert a.loss == b.loss
        assert np.array_equal(a.grad, b.grad)

    same(hot.evaluate(w), given.evaluate(w))
    assert np.array_equal(hot.hess_vec(v), given.hess_vec(v))
    hot.set_direction(v)
    given.set_direction(v)
    steps = np.array([0.25, 1.0])
    for a, b in zip(hot.line_sums(steps), given.line_sums(steps), strict=True):
        assert np.array_equal(a, b)
    same(hot.step(0.25), given.step(0.25))
    for s in (hot, given):
        s.add_direction(v)
        s.add_direction(w)
    c = np.array([0.1, -0.2])
    for a, b in zip(hot.subspace_sums(c), given.subspace_sums(c), strict=True):
        assert np.array_equal(a, b)
    hot.subspace_commit(c, memory=2)
    given.subspace_commit(c, memory=2)
    same(hot.current(), given.current())
    hot.close()
    given.close()


@pytest.mark.parametrize("index_dtype", [np.int32, np.int64])
def test_column_order_counts_and_relabels_chunk_by_chunk(monkeypatch, index_dtype):
    monkeypatch.setattr(site_sums_module.ColumnOrder, "CHUNK", 7)  # many partial chunks
    indices = np.array([3, 3, 1, 4, 3, 1, 0, 4, 4, 4, 2, 3, 3, 1, 1, 1, 1, 5],
                       dtype=index_dtype)
    columns = site_sums_module.ColumnOrder(indices, 8)
    # counts: 1:6, 3:5, 4:4, then 0, 2, 5 once each (by index), 6 and 7 never
    assert columns.order.tolist() == [1, 3, 4, 0, 2, 5, 6, 7]
    relabeled = columns.relabel(indices)
    assert relabeled.dtype == index_dtype
    assert np.array_equal(columns.order[relabeled], indices)
    v = np.arange(8.0)
    assert np.array_equal(columns.from_hot(columns.to_hot(v)), v)


def test_sibling_shares_the_blocks_and_keeps_its_own_state(monkeypatch):
    """A local procedure's scratch sums: the same rows and relabeled blocks, not a
    second copy, and moving it leaves the session's point where it was."""
    from geodml.site.executor import ThreadExecutor

    monkeypatch.setattr(site_sums_module, "BLOCK_MIN_NNZ", 1000)
    X, y = _problem("logistic", n=4000, d=60)
    loss = get_loss("logistic")
    rng = np.random.default_rng(12)
    w, u = rng.standard_normal(60), rng.standard_normal(60)
    for executor in (SiteSums(X, y, loss, n_threads=2, hot_first=True),
                     ThreadExecutor(X, y, loss, shards=2, threads=2)):
        first = executor.evaluate(w)
        other = executor.sibling()
        pairs = (list(zip(executor.shards, other.shards, strict=True))
                 if isinstance(executor, ThreadExecutor) else [(executor, other)])
        for a, b in pairs:
            assert b._blocks is a._blocks and b.columns is a.columns
            assert b.w is None
        moved = other.evaluate(u)
        fresh = (SiteSums(X, y, loss, n_threads=2, hot_first=True)
                 if isinstance(executor, SiteSums)
                 else ThreadExecutor(X, y, loss, shards=2, threads=2)).evaluate(u)
        assert moved.loss == fresh.loss and np.array_equal(moved.grad, fresh.grad)
        again = executor.current()
        assert again.loss == first.loss and np.array_equal(again.grad, first.grad)
        other.close()
        executor.close()


def test_float32_data_is_close_to_float64():
    X, y = _problem("logistic", n=2000)
    w = np.random.default_rng(7).standard_normal(X.shape[1])
    s64 = SiteSums(X, y, get_loss("logistic")).evaluate(w)
    s32 = SiteSums(X.astype(np.float32), y, get_loss("logistic")).evaluate(w)
    assert s32.loss == pytest.approx(s64.loss, rel=1e-5)
    np.testing.assert_allclose(s32.grad, s64.grad, rtol=1e-4, atol=1e-4)


def test_a_directions_margins_over_float32_rows_are_float64_products_of_one_kept_copy():
    X, y = _problem("logistic", n=2000)
    X32 = X.astype(np.float32)
    rng = np.random.default_rng(8)
    sums = SiteSums(X32, y, get_loss("logistic"))
    sums.evaluate(rng.standard_normal(X.shape[1]))
    wide = []
    for _ in range(2):
        p = rng.standard_normal(X.shape[1])
        sums.set_direction(p)
        exact = sp.csr_matrix(X32, dtype=np.float64) @ p  # float32 values, float64 sums
        np.testing.assert_array_equal(sums.q, exact)
        assert not np.array_equal(sums.q, (X32 @ p.astype(np.float32)).astype(np.float64))
        wide.append([b._wide for b in sums._blocks])
    assert all(w is not None for w in wide[0])
    assert all(a is b for a, b in zip(*wide, strict=True))  # made once, not per direction


def test_logistic_loss_is_finite_for_huge_margins():
    loss = get_loss("logistic")
    z = np.array([-1e4, -800.0, 800.0, 1e4])
    y = np.array([1.0, 0.0, 1.0, 0.0])
    val, d = loss.value_and_deriv(y, z)
    np.testing.assert_allclose(val, [1e4, 0.0, 0.0, 1e4])
    np.testing.assert_allclose(d, [-1.0, 0.0, 0.0, 1.0])


def test_wrong_dimension_is_a_clear_error():
    X, y = _problem("logistic")
    sums = SiteSums(X, y, get_loss("logistic"))
    with pytest.raises(ValueError, match=r"shape \(3,\), expected \(40,\)"):
        sums.evaluate(np.zeros(3))
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        get_loss("hinge")
