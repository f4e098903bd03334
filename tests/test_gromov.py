"""empirical_fgw / empirical_gw against POT's numpy path, exact 1-D FGW and invariances."""

import numpy as np
import ot
import pytest
import torch

from otae.discrepancies import empirical_fgw, empirical_gw, fgw_1d, fgw_objective

from .helpers import point_clouds

F64 = torch.float64


def clouds(n=8, m=6, d=3, d2=None, seed=0, dtype=F64):
    return point_clouds(n, m, d, d_y=d2, seed=seed, scale=1.5, shift=0.5, dtype=dtype)


def pot_numpy(x, y, beta, metric):
    """POT on numpy arrays (its numpy backend), with costs from ot.dist."""
    xn, yn = x.numpy(), y.numpy()
    p, q = ot.unif(len(xn)), ot.unif(len(yn))
    c1, c2 = ot.dist(xn, xn, metric=metric), ot.dist(yn, yn, metric=metric)
    if beta is None:
        return ot.gromov.gromov_wasserstein2(c1, c2, p, q)
    return ot.gromov.fused_gromov_wasserstein2(ot.dist(xn, yn, metric=metric), c1, c2, p, q,
                                               alpha=beta)


# POT's numpy path divides its GW term by alpha for its log (harmless at alpha = 0).
@pytest.mark.filterwarnings("ignore:invalid value encountered in scalar divide")
@pytest.mark.parametrize("metric", ["sqeuclidean", "euclidean"])
@pytest.mark.parametrize("beta", [0.0, 0.1, 0.7, 1.0])
def test_fgw_matches_pot_numpy(metric, beta):
    x, y = clouds(seed=1)
    got = empirical_fgw(x, y, beta, metric=metric)
    assert got.item() == pytest.approx(float(pot_numpy(x, y, beta, metric)), rel=1e-10)


@pytest.mark.parametrize("metric", ["sqeuclidean", "euclidean"])
def test_gw_matches_pot_numpy_across_dimensions(metric):
    x, y = clouds(d=3, d2=5, seed=2)
    got = empirical_gw(x, y, metric=metric)
    assert got.item() == pytest.approx(float(pot_numpy(x, y, None, metric)), rel=1e-10)


def test_value_is_the_fgw_objective_of_the_plan():
    # Same convention as the hierarchical objective: beta weighs the GW part (POT's alpha).
    x, y = clouds(seed=3)
    beta = 0.4
    value, plan = empirical_fgw(x, y, beta, return_plan=True)
    costs = [torch.cdist(a, b) ** 2 for a, b in ((x, y), (x, x), (y, y))]
    assert value.item() == pytest.approx(fgw_objective(*costs, plan, beta).item(), rel=1e-10)
    torch.testing.assert_close(plan.sum(1), torch.full((8,), 1 / 8, dtype=F64))
    torch.testing.assert_close(plan.sum(0), torch.full((6,), 1 / 6, dtype=F64))
    assert not plan.requires_grad


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("beta", [0.1, 0.5, 0.9])
def test_one_dimensional_case_equals_exact_fgw_1d(seed, beta):
    # fgw_1d is the exact minimum over matchings (identity / anti-identity after sorting,
    # RAE paper Thm 3.4) with the same normalisation; POT's CG reaches it on these cases.
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(7, generator=g, dtype=F64)
    y = 2 * torch.randn(7, generator=g, dtype=F64) + 1
    got = empirical_fgw(x[:, None], y[:, None], beta)
    assert got.item() == pytest.approx(fgw_1d(x, y, beta).item(), rel=1e-12)


def test_invariances():
    x, _ = clouds(n=8, seed=4)
    g = torch.Generator().manual_seed(5)
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=F64))
    perm = torch.randperm(8, generator=g)
    moved = (x @ q + 1.0)[perm]
    for metric in ("sqeuclidean", "euclidean"):
        # GW vanishes between isometric clouds, also embedded in more dimensions.
        assert abs(empirical_gw(x, moved, metric=metric).item()) < 1e-12
        padded = torch.cat((moved, torch.zeros(8, 2, dtype=F64)), 1)
        assert abs(empirical_gw(x, padded, metric=metric).item()) < 1e-12
    # FGW vanishes between a cloud and a permutation of itself.
    assert abs(empirical_fgw(x, x[perm], 0.5).item()) < 1e-12
    _, y = clouds(seed=6)
    assert empirical_gw(x, y).item() == pytest.approx(empirical_fgw(x, y, 1.0).item(), rel=1e-12)


@pytest.mark.parametrize("metric", ["sqeuclidean", "euclidean"])
def test_gradient_is_the_fixed_plan_gradient(metric):
    x, y = clouds(seed=7)
    x.requires_grad_(True)
    y.requires_grad_(True)
    beta = 0.3
    value, plan = empirical_fgw(x, y, beta, metric=metric, return_plan=True)
    got = torch.autograd.grad(value, (x, y))

    def at_plan(a, b):
        def dist(u, v):
            d = torch.cdist(u, v, compute_mode="donot_use_mm_for_euclid_dist")
            return d**2 if metric == "sqeuclidean" else d

        return fgw_objective(dist(a, b), dist(a, a), dist(b, b), plan, beta)

    want = torch.autograd.grad(at_plan(x, y), (x, y))
    for a, b in zip(got, want, strict=True):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    # GW across dimensions: the gradient of the explicit 4-index sum
    # sum_ijkl (c(x_i, x_k) - c(y_j, y_l))^2 T_ij T_kl at POT's numpy plan, built here
    # from raw coordinate differences (no library cost function).
    y2 = y[:, :2].detach().requires_grad_(True)
    value, gw_plan = empirical_gw(x, y2, metric=metric, return_plan=True)
    gw_got = torch.autograd.grad(value, (x, y2))
    xn, yn = x.detach().numpy(), y2.detach().numpy()
    c1, c2 = ot.dist(xn, xn, metric=metric), ot.dist(yn, yn, metric=metric)
    pot_plan = ot.gromov.gromov_wasserstein(c1, c2, ot.unif(8), ot.unif(6))
    np.testing.assert_allclose(gw_plan.numpy(), pot_plan, atol=1e-12)
    plan = torch.from_numpy(pot_plan)

    def intra(u):
        sq = (u[:, None, :] - u[None, :, :]).square().sum(-1)
        return sq if metric == "sqeuclidean" else sq.clamp_min(1e-300).sqrt() * (sq > 0)

    def four_index(a, b):
        diff = intra(a)[:, None, :, None] - intra(b)[None, :, None, :]  # (i, j, k, l)
        return (diff.square() * plan[:, :, None, None] * plan[None, None, :, :]).sum()

    reference = four_index(x, y2)
    assert value.item() == pytest.approx(reference.item(), rel=1e-10)
    gw_want = torch.autograd.grad(reference, (x, y2))
    for a, b in zip(gw_got, gw_want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    assert min(float(g.abs().max()) for g in gw_want) > 1e-3  # not a vacuous comparison


def test_single_point_cloud():
    x, y = clouds(n=1, m=3, seed=8)
    beta = 0.3
    value, plan = empirical_fgw(x, y, beta, return_plan=True)
    torch.testing.assert_close(plan, torch.full((1, 3), 1 / 3, dtype=F64))
    c_t = torch.cdist(y, y) ** 2
    want = (1 - beta) * ((x - y) ** 2).sum(1).mean() + beta * (c_t**2).mean()
    assert value.item() == pytest.approx(want.item(), rel=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_follows_input(dtype):
    x, y = clouds(seed=9, dtype=dtype)
    for value in (empirical_fgw(x, y), empirical_gw(x, y),
                  empirical_fgw(x, y, return_plan=True)[1]):
        assert value.dtype == dtype and value.device == x.device
    reference = empirical_fgw(x.double(), y.double())
    assert empirical_fgw(x, y).item() == pytest.approx(reference.item(), rel=1e-5)


def test_deterministic():
    x, y = clouds(seed=10)
    assert torch.equal(empirical_fgw(x, y), empirical_fgw(x, y))
    assert torch.equal(empirical_gw(x, y), empirical_gw(x, y))


def test_bad_input():
    x, y = clouds(seed=11)
    with pytest.raises(ValueError, match="x and y must agree along dim 1"):
        empirical_fgw(x, y[:, :2])
    with pytest.raises(ValueError, match="metric must be one of"):
        empirical_gw(x, y, metric="cosine")
    with pytest.raises(ValueError, match="beta must lie in"):
        empirical_fgw(x, y, beta=2.0)
    with pytest.raises(ValueError, match="y contains NaN"):
        empirical_gw(x, y * float("nan"))
    with pytest.raises(ValueError, match="x is empty"):
        empirical_fgw(x[:0], y)
    with pytest.raises(ValueError, match="x must be 2-D"):
        empirical_gw(x[0], y)
    with pytest.raises(TypeError, match="y must be a torch.Tensor"):
        empirical_fgw(x, np.asarray(y))
    with pytest.raises(TypeError, match="x and y must have the same dtype"):
        empirical_gw(x, y.float())
    with pytest.raises(ValueError, match="max_iter must be >= 1"):
        empirical_gw(x, y, max_iter=0)


@pytest.mark.parametrize("metric", ["sqeuclidean", "euclidean"])
def test_gradcheck_float64(metric):
    # POT's plan is a vertex that small perturbations leave in place here, so the
    # envelope gradient is the derivative of the value and gradcheck's finite differences see it
    x, y = clouds(seed=12)
    x.requires_grad_(True)
    y.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: empirical_fgw(a, b, 0.3, metric=metric), (x, y))
    assert torch.autograd.gradcheck(lambda a, b: empirical_gw(a, b[:, :2], metric=metric), (x, y))
