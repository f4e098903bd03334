"""Solver diagnostics on request: ``log=True`` of Sinkhorn, hierarchical FGW
and the spherical location search, checked against independent computations (POT, the
public solvers rerun, hand formulas); ``log`` changes no value, gradient or draw, and
makes no host synchronisation."""

from __future__ import annotations

import math
import sys
import warnings

import numpy as np
import ot
import pytest
import torch

from otae import sphere
from otae.discrepancies import (
    fgw_1d,
    fgw_objective,
    fgw_proximal_point,
    hierarchical_fgw,
    input_checks,
    max_sliced_fgw,
    mssfg,
    pssfg,
    sinkhorn,
    sinkhorn_divergence,
    spherical_sliced_fgw,
    ssfg,
)
from otae.discrepancies.spherical import slice_values
from otae.profiling import OpCounter

from .helpers import costs, gen, mixtures, point_clouds, spherical_clouds, uniform

F64 = torch.float64


def clouds(n=6, m=8, d=2, seed=0, dtype=F64):
    return point_clouds(n, m, d, seed=seed, scale=0.8, shift=0.5, dtype=dtype)


def assert_detached_tensors(info):
    for key, value in info.items():
        assert isinstance(value, torch.Tensor) and not value.requires_grad, key


# ----------------------------------------------------------------------------- Sinkhorn


def reference_potentials(x, y, eps, n_iters, a, b):
    """f after n_iters and n_iters - 1 plain log-domain iterations (g then f), cost units."""
    c = torch.cdist(x, y).square()
    log_a, log_b = torch.log(a / a.sum()), torch.log(b / b.sum())
    f, g = torch.zeros_like(log_a), torch.zeros_like(log_b)
    history = [f]
    for _ in range(n_iters):
        g = -eps * torch.logsumexp(log_a.unsqueeze(1) + (f.unsqueeze(1) - c) / eps, dim=0)
        f = -eps * torch.logsumexp(log_b.unsqueeze(0) + (g.unsqueeze(0) - c) / eps, dim=1)
        history.append(f)
    return history[-1], history[-2]


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("gradient", ["unrolled", "implicit"])
def test_sinkhorn_log_keys_by_hand(weighted, gradient):
    x, y = clouds(n=5, m=7)
    g = gen(3)
    a, b = (torch.rand(5, generator=g, dtype=F64) + 0.2, torch.rand(7, generator=g, dtype=F64)
            + 0.2) if weighted else (torch.ones(5, dtype=F64), torch.ones(7, dtype=F64))
    kw = {"a": a, "b": b} if weighted else {}
    x.requires_grad_(True)
    value, plan, info = sinkhorn(x, y, epsilon=0.3, n_iters=6, gradient=gradient,
                                 return_plan=True, log=True, **kw)
    assert set(info) == {"n_iters", "epsilon", "last_change", "marginal_error", "plan"}
    assert_detached_tensors(info)
    assert all(info[k].shape == () for k in info if k != "plan")
    assert int(info["n_iters"]) == 6 and float(info["epsilon"]) == 0.3
    assert torch.equal(info["plan"], plan.detach())
    p = plan.detach().numpy()
    an, bn = (a / a.sum()).numpy(), (b / b.sum()).numpy()
    want = np.abs(p.sum(1) - an).sum() + np.abs(p.sum(0) - bn).sum()
    assert float(info["marginal_error"]) == pytest.approx(want, rel=1e-12)
    assert want > 1e-3  # 6 iterations: not converged, the error is informative
    f_last, f_before = reference_potentials(x.detach(), y, 0.3, 6, a, b)
    assert float(info["last_change"]) == pytest.approx(
        float((f_last - f_before).abs().max()), rel=1e-10)


def test_sinkhorn_marginal_error_shrinks_and_matches_pot():
    # Same convention: POT's M = squared distances (ot.dist), reg = epsilon, uniform
    # weights; its sinkhorn_knopp updates v then u from u = 1/N, as we update g then f.
    # POT records err = ||column sums - b||_2 at iterations 0, 10, 20, ... (0-based),
    # i.e. after 1, 11, 21, ... iterations; stopThr=0 runs them all.
    x, y = clouds(n=7, m=9, d=3, seed=4)
    eps = 0.2
    c = ot.dist(x.numpy(), y.numpy())
    u, v = np.full(7, 1 / 7), np.full(9, 1 / 9)
    errors = []
    for n_iters in (1, 11, 31, 101):
        _, plan, info = sinkhorn(x, y, epsilon=eps, n_iters=n_iters, return_plan=True, log=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pot_plan, log = ot.sinkhorn(u, v, c, eps, numItermax=n_iters, stopThr=0.0, log=True)
        assert log["niter"] == n_iters - 1
        col_l2 = float(torch.linalg.vector_norm(plan.sum(0) - 1 / 9))
        assert col_l2 == pytest.approx(float(log["err"][-1]), rel=1e-8, abs=1e-15)
        want = np.abs(pot_plan.sum(1) - u).sum() + np.abs(pot_plan.sum(0) - v).sum()
        assert float(info["marginal_error"]) == pytest.approx(want, rel=1e-8, abs=1e-14)
        errors.append(float(info["marginal_error"]))
    assert errors == sorted(errors, reverse=True) and errors[-1] < 1e-3 * errors[0]


@pytest.mark.parametrize("gradient", ["unrolled", "implicit"])
@pytest.mark.parametrize("anneal", [None, 4.0])
def test_sinkhorn_log_changes_no_value_or_gradient(gradient, anneal):
    x, y = clouds(n=6, m=5, d=3, seed=5)
    results = []
    for log in (False, True):
        xl, yl = x.clone().requires_grad_(True), y.clone().requires_grad_(True)
        out = sinkhorn(xl, yl, epsilon=0.2, n_iters=9, gradient=gradient,
                       epsilon_start=anneal, log=log)
        value = out[0] if log else out
        results.append((value.detach(), *torch.autograd.grad(value, (xl, yl))))
    for plain, logged in zip(*results, strict=True):
        assert torch.equal(plain, logged)


@pytest.mark.parametrize("weighted", [False, True])
def test_sinkhorn_log_makes_no_host_sync(weighted):
    x, y = clouds(n=20, m=20, d=4, dtype=torch.float32)
    kw = {"a": torch.rand(20, generator=gen(1)) + 0.1,
          "b": torch.rand(20, generator=gen(2)) + 0.1} if weighted else {}
    with input_checks(False), OpCounter() as counter:
        for gradient in ("unrolled", "implicit"):
            xl = x.clone().requires_grad_(True)
            value, info = sinkhorn(xl, y, epsilon=0.3, n_iters=10, gradient=gradient,
                                   epsilon_start=3.0, log=True, **kw)
            value.backward()
    assert counter.syncs == 0, counter.summary(10)
    assert int(info["n_iters"]) == 10


# ----------------------------------------------------------------------------- hierarchical


def test_hierarchical_log_plan_trace_and_marginals():
    params = mixtures(6, 9, 4)
    c_st, c_s, c_t = costs(*params)
    beta, n_outer = 0.3, 6
    value, plan, info = hierarchical_fgw(*params, beta=beta, n_outer=n_outer, n_inner=2,
                                         return_plan=True, log=True)
    assert set(info) == {"n_iters", "last_change", "marginal_error",
                         "marginal_error_before_rounding", "objective_trace", "plan"}
    assert_detached_tensors(info)
    assert int(info["n_iters"]) == n_outer and torch.equal(info["plan"], plan)
    # The plan the public solver returns on the same costs.
    torch.testing.assert_close(plan, fgw_proximal_point(c_st, c_s, c_t, beta, n_outer, 2),
                               rtol=1e-12, atol=1e-15)
    # Trace entry t: the objective at the plan of a t-step run, recomputed publicly.
    want = [fgw_objective(c_st, c_s, c_t, fgw_proximal_point(c_st, c_s, c_t, beta, t, 2), beta)
            for t in range(1, n_outer + 1)]
    assert info["objective_trace"].shape == (n_outer,)
    torch.testing.assert_close(info["objective_trace"], torch.stack(want), rtol=1e-11, atol=0)
    assert float(info["objective_trace"][-1]) == pytest.approx(float(value), rel=1e-12)
    p = plan.numpy()
    by_hand = np.abs(p.sum(1) - 1 / 9).sum() + np.abs(p.sum(0) - 1 / 4).sum()
    assert float(info["marginal_error"]) == pytest.approx(by_hand, rel=1e-9, abs=1e-16)
    # Two sweeps per step leave the iterate off the marginals; the rounding fixes that.
    assert float(info["marginal_error_before_rounding"]) > 1e3 * float(info["marginal_error"])


def test_hierarchical_trace_decreases_and_says_when_steps_are_too_few():
    # The authors' tau='auto' moves slowly: its objective still falls after 20 steps,
    # by more than the default rule's does at step 20.
    params = mixtures(2, 30, 5)
    traces = {tau: hierarchical_fgw(*params, beta=0.1, tau=tau, log=True)[1]["objective_trace"]
              for tau in ("auto", "centred")}
    auto = traces["auto"]
    assert torch.all(auto[1:] <= auto[:-1] * (1 + 1e-12))
    assert float(auto[-2] - auto[-1]) > float(traces["centred"][-2] - traces["centred"][-1])


@pytest.mark.parametrize("n_outer", [1, 2])
def test_last_change_against_pot_ppa(n_outer):
    # With converged projections (n_inner large) and a fixed tau each step is POT's PPA
    # step (test_hierarchical.test_same_iterates_as_pot_ppa): last_change is the largest
    # entry change between POT's plans after n_outer - 1 and n_outer steps.
    c_st, c_s, c_t = costs(*mixtures(3, 12, 5))
    beta, eps = 0.5, 0.5 * c_st.max().item()  # a large tau: POT converges fast

    def pot(steps):
        if steps == 0:
            return torch.full((12, 5), 1 / 60, dtype=F64)
        return ot.gromov.entropic_fused_gromov_wasserstein(
            c_st, c_s, c_t, uniform(12), uniform(5), alpha=beta, solver="PPA", epsilon=eps,
            max_iter=steps, tol=0.0, numItermax=100_000, stopThr=1e-15)

    plan, info = fgw_proximal_point(c_st, c_s, c_t, beta, n_outer, 200, eps, log=True)
    want = (pot(n_outer) - pot(n_outer - 1)).abs().max()
    assert float(info["last_change"]) == pytest.approx(float(want), rel=1e-8)
    assert float(info["marginal_error_before_rounding"]) < 1e-12


def test_proximal_point_log_edge_cases_and_same_plan():
    cost = costs(*mixtures(1, 7, 3))
    plan, info = fgw_proximal_point(*cost, 0.4, n_outer=0, log=True)
    assert torch.equal(plan, fgw_proximal_point(*cost, 0.4, n_outer=0))
    assert info["objective_trace"].shape == (0,)
    assert float(info["last_change"]) == 0.0 and float(info["marginal_error"]) < 1e-15
    for tau in ("auto", "centred", 0.3):
        plan, info = fgw_proximal_point(*cost, 0.4, n_outer=3, tau=tau, log=True)
        assert torch.equal(plan, fgw_proximal_point(*cost, 0.4, n_outer=3, tau=tau))


def test_hierarchical_log_changes_no_value_or_gradient():
    results = []
    for log in (False, True):
        params = [t.clone().requires_grad_(True) for t in mixtures(4, 8, 3)]
        out = hierarchical_fgw(*params, beta=0.2, log=log)
        value = out[0] if log else out
        results.append((value.detach(), *torch.autograd.grad(value, params)))
    for plain, logged in zip(*results, strict=True):
        assert torch.equal(plain, logged)


def test_hierarchical_log_makes_no_host_sync():
    params = [t.float().requires_grad_(True) for t in mixtures(8, 40, 6)]
    cost = [c.float() for c in costs(*mixtures(9, 10, 4))]
    with input_checks(False), OpCounter() as counter:
        for tau in ("auto", "centred", 0.5):
            value, info = hierarchical_fgw(*params, beta=0.1, n_outer=5, tau=tau, log=True)
            value.backward()
        fgw_proximal_point(*cost, 0.5, n_outer=4, symmetric=True, log=True)
    assert counter.syncs == 0, counter.sync_ops


# ----------------------------------------------------------------------------- spherical


SEARCHES = {
    "ssfg": lambda x, y, **kw: ssfg(x, y, n_projections=6, **kw),
    "mssfg": lambda x, y, **kw: mssfg(x, y, n_components=3, n_projections=7, **kw),
    "pssfg": lambda x, y, **kw: pssfg(x, y, n_projections=6, **kw),
    "maxsfg": lambda x, y, **kw: max_sliced_fgw(x, y, **kw),
    "power_mixture": lambda x, y, **kw: spherical_sliced_fgw(
        x, y, n_components=2, distribution="power", n_projections=5, **kw),
}


@pytest.mark.parametrize("name", sorted(SEARCHES))
def test_search_improves_and_turns_by_the_last_step_size(name):
    x, y = spherical_clouds(1)
    n_iters, lr = 15, 0.2
    value, where, info = SEARCHES[name](x, y, n_iters=n_iters, lr=lr, generator=gen(2),
                                        log=True, **({"return_direction": True}
                                                     if name == "maxsfg" else
                                                     {"return_locations": True}))
    assert set(info) == {"n_iters", "objective_start", "objective_end", "last_change"}
    assert_detached_tensors(info)
    assert all(v.shape == () for v in info.values()) and int(info["n_iters"]) == n_iters
    assert torch.equal(info["objective_end"], value.detach())
    assert float(info["objective_end"]) > float(info["objective_start"])
    # Normalised tangent steps of size eta = lr (1 - t/T): the last one (t = T - 1)
    # turns a location by atan(lr / T) radians.
    assert float(info["last_change"]) == pytest.approx(math.atan(lr / n_iters), rel=1e-9)


def test_ssfg_objective_start_by_hand():
    # The draws in the documented order (no random start with init_locations; k = 1: no
    # component rows): the (T + 1) L samples around e1, the last L for the value. The
    # start objective uses those last L at the initial location.
    x, y = spherical_clouds(3)
    init = torch.tensor([0.3, -1.0, 0.2, 0.5], dtype=F64)
    kappa, L, n_iters = 20.0, 5, 4
    _, info = ssfg(x, y, 0.2, kappa, n_projections=L, n_iters=n_iters, generator=gen(4),
                   init_locations=init, log=True)
    samples = sphere.around_e1(kappa, 4, (n_iters + 1) * L, "vmf", gen(4), F64, None)
    directions = sphere.householder_from_e1(samples[-L:], init / init.norm())
    want = slice_values(x, y, directions.T, 0.2).mean()
    assert float(info["objective_start"]) == pytest.approx(float(want), rel=1e-12)


def test_max_sfg_objective_start_by_hand():
    # The start of the chosen direction: the one whose final value is largest.
    x, y = spherical_clouds(5)
    init = torch.tensor([[1.0, 2.0, 0.0, -1.0], [0.0, 0.0, 1.0, 0.0]], dtype=F64)
    value, direction, info = max_sliced_fgw(x, y, 0.3, n_iters=5, init_directions=init,
                                            return_direction=True, log=True)
    finals = [max_sliced_fgw(x, y, 0.3, n_iters=5, init_directions=row) for row in init]
    best = int(np.argmax([float(v) for v in finals]))
    assert float(value) == pytest.approx(float(finals[best]), rel=1e-12)
    theta = init[best] / init[best].norm()
    want = fgw_1d(x @ theta, y @ theta, 0.3)
    assert float(info["objective_start"]) == pytest.approx(float(want), rel=1e-12)


@pytest.mark.parametrize("name", sorted(SEARCHES))
def test_no_steps_logs_no_change(name):
    x, y = spherical_clouds(7)
    _, info = SEARCHES[name](x, y, n_iters=0, generator=gen(8), log=True)
    assert float(info["last_change"]) == 0.0
    assert torch.equal(info["objective_start"], info["objective_end"])


@pytest.mark.parametrize("name", sorted(SEARCHES))
def test_search_log_changes_no_value_gradient_or_draw(name):
    x0, y0 = spherical_clouds(9, n=12, d=3)
    results = []
    for log in (False, True):
        g = gen(10)
        x, y = x0.clone().requires_grad_(True), y0.clone().requires_grad_(True)
        out = SEARCHES[name](x, y, n_iters=4, generator=g, log=log)
        value = out[0] if log else out
        after = torch.rand(3, generator=g, dtype=F64)  # the generator's state after
        results.append((value.detach(), *torch.autograd.grad(value, (x, y)), after))
    for plain, logged in zip(*results, strict=True):
        assert torch.equal(plain, logged)


@pytest.mark.parametrize("name", sorted(SEARCHES))
def test_search_log_makes_no_host_sync(name):
    x, y = (t.float() for t in spherical_clouds(11, n=20, d=5))
    x.requires_grad_(True)
    with input_checks(False):
        SEARCHES[name](x, y, n_iters=3, generator=gen(12), log=True)[0].backward()
        with OpCounter() as counter:
            value, info = SEARCHES[name](x, y, n_iters=3, generator=gen(12), log=True)
            value.backward()
    assert counter.syncs == 0, counter.summary()


# ----------------------------------------------------------------------------- GeomLoss


def test_divergence_without_geomloss_names_the_install(monkeypatch):
    # GeomLoss is imported on the first call of sinkhorn_divergence only; a None entry
    # in sys.modules makes that import fail as if the package were missing.
    monkeypatch.setitem(sys.modules, "geomloss", None)
    x, y = clouds()
    with pytest.raises(ImportError, match="pip install geomloss"):
        sinkhorn_divergence(x, y)
