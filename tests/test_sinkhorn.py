"""Sinkhorn cost and debiased Sinkhorn divergence against POT, exact OT and finite differences."""

from __future__ import annotations

import math
import warnings

import numpy as np
import ot
import pytest
import torch

from otae.discrepancies.sinkhorn import sinkhorn, sinkhorn_divergence

from .helpers import point_clouds


def _clouds(n=7, m=9, d=3, seed=0, dtype=torch.float64):
    return point_clouds(n, m, d, seed=seed, scale=0.8, shift=0.5, dtype=dtype)


def _cost(x, y, p):
    """Ground cost ||x - y||^p in numpy, independent of our Gram-matrix code."""
    diff = x.detach().double().numpy()[:, None, :] - y.detach().double().numpy()[None, :, :]
    return np.sqrt((diff**2).sum(-1)) ** p


def _uniform(n):
    return np.full(n, 1.0 / n)


# ----------------------------------------------------------------------------- sinkhorn


@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("n_iters", [1, 4, 30])
def test_same_iterates_as_pot(p, n_iters):
    # Same start and update order as POT's sinkhorn_knopp: with stopThr = 0 POT runs
    # exactly numItermax iterations, so even unconverged values agree to rounding.
    x, y = _clouds()
    c = _cost(x, y, p)
    eps = 0.5
    got, plan = sinkhorn(x, y, epsilon=eps, n_iters=n_iters, p=p, return_plan=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # POT warns that it did not converge
        want = ot.sinkhorn2(_uniform(7), _uniform(9), c, eps, numItermax=n_iters, stopThr=0.0)
        want_plan = ot.sinkhorn(_uniform(7), _uniform(9), c, eps, numItermax=n_iters,
                                stopThr=0.0)
    assert float(got) == pytest.approx(float(want), rel=1e-12)
    np.testing.assert_allclose(plan.numpy(), want_plan, rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("p", [1, 2])
def test_converged_vs_pot_with_weights(p):
    # Non-uniform weights (normalised here), both solvers run to convergence.
    x, y = _clouds(n=6, m=8)
    g = torch.Generator().manual_seed(3)
    a = torch.rand(6, generator=g, dtype=torch.float64) + 0.2
    b = torch.rand(8, generator=g, dtype=torch.float64) + 0.2
    an, bn = (a / a.sum()).numpy(), (b / b.sum()).numpy()
    c = _cost(x, y, p)
    eps = 0.3
    got, plan = sinkhorn(x, y, epsilon=eps, n_iters=400, p=p, a=3.0 * a, b=b, return_plan=True)
    want_plan = ot.sinkhorn(an, bn, c, eps, numItermax=10000, stopThr=1e-14)
    want = ot.sinkhorn2(an, bn, c, eps, numItermax=10000, stopThr=1e-14)
    assert float(got) == pytest.approx(float(want), rel=1e-10)
    np.testing.assert_allclose(plan.numpy(), want_plan, rtol=1e-8, atol=1e-14)
    # Marginals: rows exact after the last f-update, columns converged.
    torch.testing.assert_close(plan.sum(1), a / a.sum(), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(plan.sum(0), b / b.sum(), rtol=1e-9, atol=1e-12)


def test_small_epsilon_approaches_exact_ot():
    # The plan after the last f-update is the EXACT entropic plan between a and its own
    # column marginals b' (it has the scaling form diag(u) K diag(v)), so
    #   OT_0(a, b') <= <P, C> <= OT_0(a, b') + eps log min(N, M)
    # (the plan's KL to a b'^T is at most log min(N, M)), rigorously, converged or not;
    # and OT_0 moves by at most max(C) ||b' - b||_1 from OT_0(a, b).
    x, y = _clouds(n=6, m=6)
    c = _cost(x, y, 2)
    a = _uniform(6)
    exact = ot.emd2(a, a, c)
    gaps = []
    with torch.no_grad():
        for eps in (0.3, 0.03, 0.003):
            val, plan = sinkhorn(x, y, epsilon=eps, n_iters=3000, return_plan=True)
            val = float(val)
            b_prime = plan.sum(0).numpy()
            b_prime = b_prime / b_prime.sum()
            exact_prime = ot.emd2(a, b_prime, c)
            assert exact_prime - 1e-9 <= val <= exact_prime + eps * math.log(6) + 1e-9
            slack = c.max() * np.abs(b_prime - a).sum()
            assert abs(val - exact) <= eps * math.log(6) + slack + 1e-9
            gaps.append(abs(val - exact))
    assert gaps[0] > gaps[1] > gaps[2]
    assert gaps[2] < 1e-3 * exact


def test_stable_in_log_domain_for_tiny_epsilon():
    # exp(-C / eps) underflows to 0 for every entry here (C / eps ~ 1e6); the
    # log-domain iterations stay finite, and the plan is still the exact entropic plan
    # for its own column marginals b' (see the test above), hence the sandwich.
    x, y = _clouds(n=5, m=5)
    x = 10.0 * x
    c = _cost(x, y, 2)
    assert np.all(np.exp(-c / 1e-4) == 0.0)
    with torch.no_grad():
        val, plan = sinkhorn(x, y, epsilon=1e-4, n_iters=50, return_plan=True)
    assert torch.isfinite(val) and torch.isfinite(plan).all()
    b_prime = plan.sum(0).numpy()
    exact_prime = ot.emd2(_uniform(5), b_prime / b_prime.sum(), c)
    assert exact_prime * (1 - 1e-9) <= float(val) <= exact_prime + 1e-4 * math.log(5) + 1e-9


@pytest.mark.parametrize("p", [1, 2])
def test_gradcheck_through_iterations(p):
    # Few iterations: far from convergence, so an envelope-theorem gradient would fail
    # here; gradcheck passes only if autograd differentiates the unrolled loop.
    x, y = _clouds(n=4, m=5, d=2)
    g = torch.Generator().manual_seed(4)
    a = torch.rand(4, generator=g, dtype=torch.float64) + 0.5
    b = torch.rand(5, generator=g, dtype=torch.float64) + 0.5
    for t in (x, y, a, b):
        t.requires_grad_(True)

    def f(x_, y_, a_, b_):
        return sinkhorn(x_, y_, epsilon=0.4, n_iters=3, p=p, a=a_, b=b_)

    assert torch.autograd.gradcheck(f, (x, y, a, b))


def test_gradient_is_not_the_envelope_gradient_when_unconverged():
    # The envelope (plan-fixed) gradient of <P, C> w.r.t. x is sum_j P_ij 2 (x_i - y_j);
    # unrolled gradients differ from it at 3 iterations: proof that the loop is traced.
    x, y = _clouds(n=4, m=5, d=2)
    x.requires_grad_(True)
    val, plan = sinkhorn(x, y, epsilon=0.4, n_iters=3, return_plan=True)
    (grad,) = torch.autograd.grad(val, x)
    p = plan.detach()
    envelope = 2.0 * (p.sum(1, keepdim=True) * x.detach() - p @ y)
    assert not torch.allclose(grad, envelope, rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_follows_input(dtype):
    x, y = _clouds(dtype=dtype)
    val, plan = sinkhorn(x, y, epsilon=0.5, n_iters=50, return_plan=True)
    assert val.dtype == dtype and plan.dtype == dtype and val.ndim == 0
    assert plan.shape == (7, 9) and val.device == x.device
    ref = sinkhorn(x.double(), y.double(), epsilon=0.5, n_iters=50)
    tol = 1e-5 if dtype == torch.float32 else 1e-14
    assert float(val) == pytest.approx(float(ref), rel=tol)
    div = sinkhorn_divergence(x, y, epsilon=0.5)
    assert div.dtype == dtype and div.ndim == 0


# ----------------------------------------------------------------------------- divergence


def _ot_eps_pot(x, y, eps, p, floor=0.0):
    """Regularised OT_eps = <P, C> + eps KL(P || a b^T) with POT's log-domain solver.

    Also returns the dual value <a, f> + <b, g> of the same solution, with
    P_ij = a_i b_j exp((f_i + g_j - C_ij) / eps), i.e. f = eps log(u / a).
    ``floor`` reproduces GeomLoss's sqrt(max(|x-y|^2, floor)) for p = 1.
    """
    c = _cost(x, y, 2)
    c = np.sqrt(np.maximum(c, floor)) if p == 1 else c
    a, b = _uniform(len(x)), _uniform(len(y))
    plan, log = ot.sinkhorn(a, b, c, eps, numItermax=20000, stopThr=1e-14, log=True)
    primal = (plan * c).sum() + eps * (plan * np.log(plan / np.outer(a, b))).sum()
    f = eps * np.log(log["u"] / a)
    g = eps * np.log(log["v"] / b)
    dual = a @ f + b @ g
    return primal, dual


def _divergence_pot(x, y, eps, p, floor=0.0):
    (xy, dxy), (xx, dxx), (yy, dyy) = (
        _ot_eps_pot(x, y, eps, p, floor), _ot_eps_pot(x, x, eps, p, floor),
        _ot_eps_pot(y, y, eps, p, floor),
    )
    # GeomLoss returns dual values; at convergence they equal the primal ones.
    for primal, dual in ((xy, dxy), (xx, dxx), (yy, dyy)):
        assert dual == pytest.approx(primal, rel=1e-10)
    return xy - 0.5 * xx - 0.5 * yy


@pytest.mark.parametrize("p, eps, rel", [(2, 0.5, 3e-4), (2, 2.0, 1e-5), (1, 0.5, 1e-6)])
def test_divergence_vs_pot(p, eps, rel):
    # GeomLoss anneals epsilon instead of iterating at the target, so it is only as
    # accurate as its schedule: the value error shrinks like (1 - scaling)^2 (measured
    # here: 6e-5, 3e-7 and 3e-8 relative at scaling 0.995, 2e-3 at 0.9 for the first
    # case); at its default 0.5 it is a few per cent. For p = 1 GeomLoss floors
    # distances at 1e-4 (so its OT(x, x) cost has a 1e-4 diagonal); the reference
    # reproduces that floor, which otherwise dominates the error (1e-4 absolute).
    x, y = _clouds(n=5, m=6, d=2)
    floor = 1e-8 if p == 1 else 0.0
    want = _divergence_pot(x, y, eps, p, floor)
    got = float(sinkhorn_divergence(x, y, epsilon=eps, p=p, scaling=0.995))
    assert got == pytest.approx(want, rel=rel)
    coarse = float(sinkhorn_divergence(x, y, epsilon=eps, p=p))
    assert coarse == pytest.approx(want, rel=5e-2)
    if p == 2:
        # The naive conversion blur = eps^(1/p) (without the factor p) solves a
        # different problem: off by far more than the coarse tolerance.
        from geomloss import SamplesLoss

        naive = float(SamplesLoss("sinkhorn", p=2, blur=eps**0.5, scaling=0.9,
                                  backend="tensorized")(x, y))
        assert abs(naive - want) > 0.3 * want
        assert abs(2.0 * naive - want) > 0.06 * want


def _divergence_grad_pot(x, y, eps):
    """Envelope-theorem gradient in x of S_eps for p = 2 from POT's converged plans.

    d/dx_i OT_eps(x, y) = sum_j P_ij 2 (x_i - y_j); x enters OT_eps(x, x) on both sides
    with a symmetric plan, so d/dx_i (1/2) OT_eps(x, x) = sum_j Q_ij 2 (x_i - x_j).
    """
    xn, yn = x.detach().numpy(), y.detach().numpy()

    def plan(u, v):
        return ot.sinkhorn(_uniform(len(u)), _uniform(len(v)), _cost(u, v, 2), eps,
                           numItermax=20000, stopThr=1e-14)

    p, q = plan(x, y), plan(x, x)
    return 2.0 * (p.sum(1)[:, None] * xn - p @ yn) - 2.0 * (q.sum(1)[:, None] * xn - q @ xn)


def test_divergence_properties_and_gradient():
    x, y = _clouds(n=6, m=6, d=2)
    assert abs(float(sinkhorn_divergence(x, x.clone(), epsilon=0.5))) < 1e-12
    assert float(sinkhorn_divergence(x, y, epsilon=0.5)) > 0.0
    eps = 2.0
    ref = _divergence_grad_pot(x, y, eps)
    # The closed-form reference is the derivative of the converged POT value.
    v = torch.randn(x.shape, generator=torch.Generator().manual_seed(5), dtype=x.dtype)
    h = 1e-5
    fd = (_divergence_pot(x + h * v, y, eps, 2) - _divergence_pot(x - h * v, y, eps, 2)) / (2 * h)
    assert float((torch.from_numpy(ref) * v).sum()) == pytest.approx(fd, rel=1e-6)
    # GeomLoss differentiates its final potentials (envelope theorem), not its loop: the
    # gradient error is first order in the potentials' error (the value's is second
    # order), measured 5e-4 relative here at scaling 0.995, 1e-2 at 0.9.
    x.requires_grad_(True)
    (grad,) = torch.autograd.grad(sinkhorn_divergence(x, y, epsilon=eps, scaling=0.995), x)
    err = np.abs(grad.numpy() - ref).max() / np.abs(ref).max()
    assert err < 2e-3


def test_divergence_weights():
    # Weights are normalised; duplicating a point equals doubling its weight.
    x, y = _clouds(n=4, m=5, d=2)
    x_dup = torch.cat([x, x[:1]])
    a = torch.tensor([2.0, 1.0, 1.0, 1.0], dtype=x.dtype)
    s_dup = sinkhorn_divergence(x_dup, y, epsilon=0.5, diameter=10.0)
    s_w = sinkhorn_divergence(x, y, epsilon=0.5, a=10 * a, diameter=10.0)
    assert float(s_w) == pytest.approx(float(s_dup), rel=1e-9)
    c_dup = sinkhorn(x_dup, y, epsilon=0.5, n_iters=60)
    c_w = sinkhorn(x, y, epsilon=0.5, n_iters=60, a=a)
    assert float(c_w) == pytest.approx(float(c_dup), rel=1e-12)


# ----------------------------------------------------------------------------- bad input


_x = torch.randn(4, 2)


@pytest.mark.parametrize("fn", [sinkhorn, sinkhorn_divergence])
@pytest.mark.parametrize(
    "args, kwargs, exc, match",
    [
        ((_x, torch.randn(4, 3)), {}, ValueError, "x and y"),
        ((_x, torch.randn(4, 2, dtype=torch.float64)), {}, TypeError, "dtype"),
        ((torch.randn(4), _x), {}, ValueError, "x must be 2-D"),
        ((_x, torch.empty(0, 2)), {}, ValueError, "y is empty"),
        ((torch.tensor([[float("nan"), 0.0]]), _x), {}, ValueError, "x contains NaN"),
        ((_x, torch.tensor([[float("inf"), 0.0]])), {}, ValueError, "y contains NaN or Inf"),
        ((_x.long(), _x), {}, TypeError, "x must be a floating"),
        ((_x, _x), {"epsilon": 0.0}, ValueError, "epsilon"),
        ((_x, _x), {"epsilon": -1.0}, ValueError, "epsilon"),
        ((_x, _x), {"epsilon": float("inf")}, ValueError, "epsilon"),
        ((_x, _x), {"p": 3}, ValueError, "p must be one of"),
        ((_x, _x), {"p": 1.5}, ValueError, "p must be one of"),
        ((_x, _x), {"p": True}, ValueError, "p must be one of"),
        ((_x, _x), {"a": torch.ones(3)}, ValueError, "x and a"),
        ((_x, _x), {"b": -torch.ones(4)}, ValueError, "b must be non-negative"),
        ((_x, _x), {"a": torch.ones(4, 1)}, ValueError, "a must be 1-D"),
        ((_x, _x), {"b": torch.tensor([1.0, float("nan"), 1.0, 1.0])}, ValueError,
         "b contains NaN"),
    ],
)
def test_bad_input(fn, args, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        fn(*args, **kwargs)


@pytest.mark.parametrize(
    "fn, kwargs, match",
    [
        (sinkhorn, {"n_iters": 0}, "n_iters"),
        (sinkhorn_divergence, {"scaling": 1.0}, "scaling"),
        (sinkhorn_divergence, {"scaling": 0.0}, "scaling"),
        (sinkhorn_divergence, {"diameter": -1.0}, "diameter"),
    ],
)
def test_bad_options(fn, kwargs, match):
    with pytest.raises(ValueError, match=match):
        fn(_x, _x, **kwargs)
