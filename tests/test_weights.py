"""Sample weights ``a``, ``b`` and unequal sizes N != M for sliced W, sliced (G)FGW and MMD.

References are independent of our code: POT's sliced / 1-D Wasserstein, dense couplings
from POT's ``emd_1d`` with the FGW objective summed over all index quadruples in numpy,
and the weighted kernel sums written as explicit loops.
"""

from __future__ import annotations

import itertools

import numpy as np
import ot
import pytest
import torch

from otae.discrepancies import (
    fgw_1d,
    input_checks,
    mmd,
    sliced_fgw,
    sliced_gw,
    sliced_wasserstein,
)
from otae.profiling import OpCounter

from .helpers import gen, point_clouds

F64 = torch.float64


def clouds(n=7, m=5, d=3, seed=0, dtype=F64):
    return point_clouds(n, m, d, seed=seed, scale=1.5, shift=0.3, dtype=dtype)


def weights(n, seed, dtype=F64):
    w = torch.rand(n, generator=gen(seed), dtype=dtype) + 0.05
    return w / w.sum()


def directions(d=3, n_slices=4, seed=9, unit=True):
    p = torch.randn(d, n_slices, generator=gen(seed), dtype=F64)
    return p / p.norm(dim=0) if unit else p


# ------------------------------------------------------------------ numpy references
def dense_fused(xp, yp, a, b, w_weight, gw_weight):
    """min over the monotone and anti-monotone dense plans (POT's emd_1d; anti-monotone:
    emd_1d on -y) of w_weight sum |x_i-y_j|^2 P_ij + gw_weight sum_ijkl (...)^2 P_ij P_kl."""
    dx = (xp[:, None] - xp[None, :]) ** 2
    dy = (yp[:, None] - yp[None, :]) ** 2
    relational = (dx[:, None, :, None] - dy[None, :, None, :]) ** 2  # (N, M, N, M)
    values = []
    for plan in (ot.emd_1d(xp, yp, a, b), ot.emd_1d(xp, -yp, a, b)):
        w = np.sum((xp[:, None] - yp[None, :]) ** 2 * plan)
        gw = np.einsum("ijkl,ij,kl->", relational, plan, plan)
        values.append(w_weight * w + gw_weight * gw)
    return min(values)


def dense_sliced(x, y, a, b, p, w_weight, gw_weight):
    """Per-slice values of :func:`dense_fused` on the projections x p, y p."""
    xp, yp = (x @ p).numpy(), (y @ p).numpy()
    an = np.full(x.shape[0], 1 / x.shape[0]) if a is None else a.numpy()
    bn = np.full(y.shape[0], 1 / y.shape[0]) if b is None else b.numpy()
    return np.array([dense_fused(xp[:, s], yp[:, s], an, bn, w_weight, gw_weight)
                     for s in range(p.shape[1])])


def kernel_imq(u, v, c):
    return c / (c + np.sum((u - v) ** 2))


def mmd_loops(x, y, a, b, cs):
    """The weighted estimator by explicit loops over pairs (IMQ kernel summed over cs)."""
    x, y, a, b = (t.numpy() for t in (x, y, a, b))

    def k(u, v):
        return sum(kernel_imq(u, v, c) for c in cs)

    def within(z, w):
        pairs = [(i, j) for i, j in itertools.product(range(len(z)), repeat=2) if i != j]
        return (sum(w[i] * w[j] * k(z[i], z[j]) for i, j in pairs)
                / sum(w[i] * w[j] for i, j in pairs))

    cross = sum(a[i] * b[j] * k(x[i], y[j]) for i in range(len(x)) for j in range(len(y)))
    return within(x, a) + within(y, b) - 2 * cross


# ------------------------------------------------------------------ sliced Wasserstein
@pytest.mark.parametrize("n,m,weighted", [(7, 5, True), (7, 5, False), (6, 6, True), (3, 9, True)])
def test_sliced_wasserstein_is_the_square_of_pots(n, m, weighted):
    x, y = clouds(n, m)
    a, b = (weights(n, 1), weights(m, 2)) if weighted else (None, None)
    p = directions()
    got = sliced_wasserstein(x, y, projections=p, a=a, b=b)
    an, bn = (a.numpy(), b.numpy()) if weighted else (None, None)
    want = ot.sliced_wasserstein_distance(x.numpy(), y.numpy(), an, bn, projections=p.numpy())
    torch.testing.assert_close(got, torch.tensor(want**2, dtype=F64), rtol=1e-12, atol=1e-14)


def test_per_slice_wasserstein_equals_pots_wasserstein_1d():
    """fgw_1d with beta = 0 is exact: the squared W2 of each column's weighted measures."""
    x, y = clouds(8, 5)
    a, b = weights(8, 3), weights(5, 4)
    p = directions(n_slices=6)
    got = fgw_1d(x @ p, y @ p, 0.0, a=a, b=b)
    want = ot.wasserstein_1d((x @ p).numpy(), (y @ p).numpy(), a.numpy(), b.numpy(), p=2)
    torch.testing.assert_close(got, torch.from_numpy(want), rtol=1e-12, atol=1e-14)


# ------------------------------------------------------------------ sliced (G)FGW
@pytest.mark.parametrize("beta", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("n,m", [(7, 5), (4, 4), (2, 6)])
def test_fgw_1d_equals_the_dense_plans_objective(beta, n, m):
    x, y = clouds(n, m, d=1)
    a, b = weights(n, 5), weights(m, 6)
    p = torch.ones(1, 1, dtype=F64)
    want = dense_sliced(x, y, a, b, p, 1 - beta, beta)[0]
    got = fgw_1d(x[:, 0], y[:, 0], beta, a=a, b=b)
    torch.testing.assert_close(got, torch.tensor(want, dtype=F64), rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("scale", ["mean", "rae_authors"])
@pytest.mark.parametrize("weighted", [True, False])
def test_sliced_fgw_equals_the_dense_reference_at_both_scales(scale, weighted):
    x, y = clouds(7, 5)
    a, b = (weights(7, 7), weights(5, 8)) if weighted else (None, None)
    beta = 0.2
    authors = scale == "rae_authors"
    p = directions(unit=not authors)
    per_slice = dense_sliced(x, y, a, b, p, (1 - beta) * (7 if authors else 1), beta)
    want = per_slice.sum() if authors else per_slice.mean()
    got = sliced_fgw(x, y, beta, projections=p, scale=scale, a=a, b=b)
    torch.testing.assert_close(got, torch.tensor(want, dtype=F64), rtol=1e-11, atol=1e-13)


def test_sliced_gw_is_sliced_fgw_at_beta_one_with_weights():
    x, y = clouds(6, 9)
    a, b = weights(6, 1), weights(9, 2)
    p = directions()
    want = dense_sliced(x, y, a, b, p, 0.0, 1.0).mean()
    torch.testing.assert_close(sliced_gw(x, y, projections=p, a=a, b=b),
                               torch.tensor(want, dtype=F64), rtol=1e-11, atol=1e-13)


# ------------------------------------------------------------------ invariances
def dirs_like(x):
    return directions().to(x.dtype)


FUNCTIONS = {
    "sw": lambda x, y, **kw: sliced_wasserstein(x, y, projections=dirs_like(x), **kw),
    "sfgw": lambda x, y, **kw: sliced_fgw(x, y, 0.3, projections=dirs_like(x), **kw),
    "sfgw_authors": lambda x, y, **kw: sliced_fgw(x, y, 0.3, projections=dirs_like(x),
                                                  scale="rae_authors", **kw),
    "sgw": lambda x, y, **kw: sliced_gw(x, y, projections=dirs_like(x), **kw),
    "mmd": lambda x, y, **kw: mmd(x, y, scales=(0.5, 2.0), **kw),
}


@pytest.mark.parametrize("name", list(FUNCTIONS))
@pytest.mark.parametrize("dtype,tol", [(F64, 1e-12), (torch.float32, 2e-5)])
def test_explicit_uniform_weights_equal_no_weights(name, dtype, tol):
    """Equal sizes: the unweighted path against the weighted one; unequal sizes: both
    take the weighted path, with the uniform weights built or given."""
    fn = FUNCTIONS[name]
    for n, m in ((6, 6), (7, 4)):
        x, y = clouds(n, m, dtype=dtype)
        uniform = {"a": torch.full((n,), 1 / n, dtype=dtype),
                   "b": torch.full((m,), 1 / m, dtype=dtype)}
        want = fn(x, y)
        torch.testing.assert_close(fn(x, y, **uniform), want, rtol=tol, atol=tol)
        torch.testing.assert_close(fn(x, y, a=uniform["a"]), want, rtol=tol, atol=tol)


# rae_authors scales the W part by the number of rows of x, which these change
@pytest.mark.parametrize("name", ["sw", "sfgw", "sgw"])
def test_merged_duplicates_equal_the_duplicated_set(name):
    """Six points with two duplicated (the unweighted equal-size path) == the four
    distinct points with the duplicates' weights merged (the weighted path)."""
    fn = FUNCTIONS[name]
    x, y = clouds(4, 6)
    merged = torch.tensor([1, 2, 1, 2], dtype=F64) / 6
    torch.testing.assert_close(fn(x, y, a=merged), fn(x[[0, 1, 1, 2, 3, 3]], y),
                               rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("name", ["sw", "sfgw", "sgw", "mmd"])
def test_zero_weight_points_are_ignored(name):
    """A far-away point of weight 0 changes nothing (N + 1 points vs N)."""
    fn = FUNCTIONS[name]
    x, y = clouds(5, 6)
    a = weights(5, 3)
    far = torch.cat((x, torch.full((1, 3), 40.0, dtype=F64)))
    torch.testing.assert_close(fn(far, y, a=torch.cat((a, torch.zeros(1, dtype=F64)))),
                               fn(x, y, a=a), rtol=1e-12, atol=1e-13)


def test_float32_weighted_values_match_float64_for_offset_clouds():
    """The cancellation-free arrangement carries over to weights: float32 keeps ~1e-5."""
    x, y = clouds(40, 30, d=4)
    x, y = x * 3 + 100.0, y + 100.0
    a, b = weights(40, 1), weights(30, 2)
    p = directions(d=4, n_slices=8)
    want = sliced_fgw(x, y, 0.5, projections=p, a=a, b=b)
    got = sliced_fgw(x.float(), y.float(), 0.5, projections=p.float(), a=a.float(), b=b.float())
    torch.testing.assert_close(got.double(), want, rtol=2e-5, atol=0)


# ------------------------------------------------------------------ MMD
@pytest.mark.parametrize("n,m", [(5, 4), (4, 4)])
def test_weighted_mmd_equals_the_explicit_pair_sums(n, m):
    x, y = clouds(n, m)
    a, b = weights(n, 1), weights(m, 2)
    d = x.shape[1]
    got = mmd(x, y, a=a, b=b, scales=(0.5, 2.0))
    want = mmd_loops(x, y, a, b, [2 * d * 0.5, 2 * d * 2.0])
    torch.testing.assert_close(got, torch.tensor(want, dtype=F64), rtol=1e-12, atol=1e-14)


def test_weighted_gaussian_mmd_differs_from_the_v_statistic_by_the_diagonal():
    """With k(z, z) = 1 (Gaussian kernel) the V-statistic a'Kxx a + b'Kyy b - 2 a'Kxy b
    is our estimate with each within term w replaced by s + (1 - s) w, s = sum a_i^2."""
    x, y = clouds(6, 5)
    a, b = weights(6, 3), weights(5, 4)
    c = 2 * 3 * 1.0
    kxx = torch.exp(-torch.cdist(x, x) ** 2 / c)
    kyy = torch.exp(-torch.cdist(y, y) ** 2 / c)
    kxy = torch.exp(-torch.cdist(x, y) ** 2 / c)
    v_stat = a @ kxx @ a + b @ kyy @ b - 2 * a @ kxy @ b
    sa, sb = a.square().sum(), b.square().sum()
    within_x = (a @ kxx @ a - sa) / (1 - sa)
    within_y = (b @ kyy @ b - sb) / (1 - sb)
    ours = mmd(x, y, kernel="gaussian", a=a, b=b)
    torch.testing.assert_close(ours, within_x + within_y - 2 * a @ kxy @ b, rtol=1e-10, atol=0)
    torch.testing.assert_close(v_stat - ours, sa * (1 - within_x) + sb * (1 - within_y),
                               rtol=1e-10, atol=1e-15)


# ------------------------------------------------------------------ gradients
# The weights enter through v / v.sum(): gradients in a and b are those along the
# simplex (for the sliced values the total-mass direction is a kink: see one_dimensional).
@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_gradcheck_in_points_and_weights(name):
    fn = FUNCTIONS[name]
    x, y = clouds(5, 4)
    leaves = [t.clone().requires_grad_(True) for t in (x, y, weights(5, 1), weights(4, 2))]
    assert torch.autograd.gradcheck(
        lambda x, y, va, vb: fn(x, y, a=va / va.sum(), b=vb / vb.sum()), leaves)


def test_fgw_1d_gradcheck_two_columns_unequal_sizes():
    x, y = clouds(6, 4, d=2)
    leaves = [t.clone().requires_grad_(True) for t in (x, y, weights(6, 3), weights(4, 4))]
    assert torch.autograd.gradcheck(
        lambda x, y, va, vb: fgw_1d(x, y, 0.4, a=va / va.sum(), b=vb / vb.sum()), leaves)


def test_mmd_gradients_hold_for_unnormalised_weights_too():
    """The MMD estimate is smooth in the raw weights (its normalisers are explicit)."""
    x, y = clouds(5, 4)
    leaves = [t.clone().requires_grad_(True) for t in (x, y, weights(5, 1), weights(4, 2))]

    def value(x, y, a, b):
        with input_checks(False):  # perturbed weights no longer sum to 1
            return mmd(x, y, a=a, b=b)

    assert torch.autograd.gradcheck(value, leaves)


# ------------------------------------------------------------------ hot path
@pytest.mark.parametrize("name", ["sw", "sfgw", "mmd"])
def test_weighted_path_makes_no_host_sync_and_no_loop_over_slices(name):
    """Forward + backward: no host sync, and the same operation count for 3 and 30 slices."""
    x0, y = clouds(9, 6)
    a, b = weights(9, 1), weights(6, 2)
    fns = {"sw": lambda x, p: sliced_wasserstein(x, y, projections=p, a=a, b=b),
           "sfgw": lambda x, p: sliced_fgw(x, y, 0.3, projections=p, a=a, b=b),
           "mmd": lambda x, p: mmd(x, y, a=a, b=b)}
    counts = []
    for n_slices in (3, 30):
        x = x0.clone().requires_grad_(True)
        with input_checks(False), OpCounter() as counter:
            fns[name](x, directions(n_slices=n_slices)).backward()
        assert counter.syncs == 0, counter.summary()
        assert x.grad.abs().sum() > 0
        counts.append(counter.ops)
    assert counts[0] == counts[1]


# ------------------------------------------------------------------ validation
BAD = [
    (torch.tensor([0.5, 0.6, -0.1]), "a must be nonnegative"),
    (torch.tensor([0.5, 0.5]), r"a must be 1-D with one weight per row of x \(length 3\)"),
    (torch.full((1, 3), 1 / 3), "a must be 1-D"),
    (torch.tensor([0.2, 0.2, 0.2]), "a must sum to 1, got a sum of 0.6"),
    (torch.tensor([0.5, float("nan"), 0.5]), "a contains NaN or Inf"),
    (torch.tensor([1, 0, 0]), "a must be a floating-point tensor"),
    (torch.full((3,), 1 / 3, dtype=F64), "a and x must have the same dtype"),
    ([1 / 3] * 3, "a must be a torch.Tensor or None"),
]


@pytest.mark.parametrize("name", list(FUNCTIONS))
@pytest.mark.parametrize("a,match", BAD)
def test_bad_weights_raise_one_clear_error_naming_the_argument(name, a, match):
    fn = FUNCTIONS[name]
    x, y = clouds(3, 4, dtype=torch.float32)
    with pytest.raises((ValueError, TypeError), match=match):
        fn(x, y, a=a)


def test_b_is_checked_against_y_and_fgw_1d_checks_too():
    x, y = clouds(3, 4, dtype=torch.float32)
    with pytest.raises(ValueError, match=r"b must be 1-D with one weight per row of y \(length 4\)"):
        sliced_wasserstein(x, y, projections=directions().float(), b=torch.full((3,), 1 / 3))
    with pytest.raises(ValueError, match="b must sum to 1"):
        fgw_1d(x[:, 0], y[:, 0], 0.5, b=torch.full((4,), 0.3))
    with pytest.raises(ValueError, match="x and y must have the same shape except along dim 0"):
        sliced_fgw(x, y[:, :2])
    with pytest.raises(ValueError, match="x and y must have the same shape except along dim 0"):
        fgw_1d(x[:, :2], y[:, :1], 0.5)


def test_mmd_rejects_a_single_positive_weight():
    x, y = clouds(3, 4)
    with pytest.raises(ValueError, match="a must have at least 2 positive weights, got 1"):
        mmd(x, y, a=torch.tensor([0.0, 1.0, 0.0], dtype=F64))
    # one positive weight is a valid measure for the sliced functions
    sliced_wasserstein(x, y, projections=directions(), a=torch.tensor([0.0, 1.0, 0.0], dtype=F64))


def test_weights_are_not_checked_when_input_checks_are_off():
    x, y = clouds(3, 4)
    p = directions()
    a = torch.tensor([1.0, 1.0, 0.0], dtype=F64)  # sums to 2: accepted and used as given
    with input_checks(False):
        value = sliced_wasserstein(x, y, projections=p, a=a)
    # Used as given, not normalised: the monotone coupling moves the smaller total, y's
    # mass 1, and in each slice the lower of x_0, x_1 (weight 1) takes all of it, so
    # every y_j is matched to that point. (a / 2 would split y over both points.)
    xp, yp = (x @ p).numpy(), (y @ p).numpy()
    lowest = np.minimum(xp[0], xp[1])
    expected = np.mean((yp - lowest) ** 2)  # mean over the 4 points of y and the slices
    assert value.item() == pytest.approx(expected, rel=1e-12)
    assert sliced_wasserstein(x, y, projections=p, a=a / 2).item() != pytest.approx(expected)


def test_merging_duplicates_changes_the_mmd_estimate_by_the_duplicate_pair():
    """Duplicates form a distinct pair in the unweighted estimator; merged into one
    weighted point they do not: the difference is exactly that pair's share."""
    x, y = clouds(3, 4)
    duplicated = x[[0, 0, 1, 2]]
    merged = torch.tensor([0.5, 0.25, 0.25], dtype=F64)
    c = 2 * 3 * 1.0
    k = c / (c + torch.cdist(duplicated, duplicated) ** 2)
    # within term of the duplicated set: mean over 12 ordered distinct pairs; the merged
    # one is the mean over the other 10 pairs (weights a_i a_j, normalised)
    others = (k.sum() - k.diagonal().sum() - 2 * k[0, 1]) / 10
    want = mmd(duplicated, y) - (k.sum() - k.diagonal().sum()) / 12 + others
    torch.testing.assert_close(mmd(x, y, a=merged), want, rtol=1e-12, atol=1e-14)
