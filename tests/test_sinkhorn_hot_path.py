"""Sinkhorn in the training hot path: implicit gradient, in-place loop, epsilon-scaling,
no host syncs, few operations, compiled without graph breaks."""

from __future__ import annotations

import math
import warnings

import numpy as np
import ot
import pytest
import torch

from otae.checks import input_checks
from otae.discrepancies.sinkhorn import annealing_schedule, sinkhorn, sinkhorn_divergence
from otae.models import build_model, model_config_from_dict
from otae.profiling import OpCounter

from .helpers import point_clouds


def _clouds(n=6, m=8, d=2, seed=0, dtype=torch.float64):
    return point_clouds(n, m, d, seed=seed, scale=0.8, shift=0.5, dtype=dtype)


def _weights(n, m, seed=3):
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(n, generator=g, dtype=torch.float64) + 0.2
    b = torch.rand(m, generator=g, dtype=torch.float64) + 0.2
    return a, b


def _unrolled_reference(x, y, eps, n_iters, a, b):
    """The previous implementation (the reference): plain log-domain loop, autograd through it."""
    diff = x.unsqueeze(1) - y.unsqueeze(0)
    c = (diff**2).sum(-1) / eps
    log_a, log_b = torch.log(a / a.sum()), torch.log(b / b.sum())
    f, g = torch.zeros_like(log_a), torch.zeros_like(log_b)
    for _ in range(n_iters):
        g = -torch.logsumexp((log_a + f).unsqueeze(1) - c, dim=0)
        f = -torch.logsumexp((log_b + g).unsqueeze(0) - c, dim=1)
    plan = torch.exp((log_a + f).unsqueeze(1) + (log_b + g).unsqueeze(0) - c)
    return (plan * c).sum() * eps


# ----------------------------------------------------------------------------- values


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("gradient", ["unrolled", "implicit"])
def test_value_and_unrolled_gradient_match_the_old_loop(weighted, gradient):
    # Folding the uniform log-weights into the kernel and running in place must not
    # change the iterates; the unrolled gradient is that of the old loop.
    x, y = _clouds(n=5, m=7)
    a, b = _weights(5, 7) if weighted else (torch.ones(5, dtype=x.dtype), torch.ones(7))
    b = b.to(x.dtype)
    x.requires_grad_(True)
    want = _unrolled_reference(x, y, 0.3, 7, a, b)
    kw = {"a": a, "b": b} if weighted else {}
    got = sinkhorn(x, y, epsilon=0.3, n_iters=7, gradient=gradient, **kw)
    assert float(got.detach()) == pytest.approx(float(want.detach()), rel=1e-13)
    if gradient == "unrolled":
        torch.testing.assert_close(torch.autograd.grad(got, x)[0],
                                   torch.autograd.grad(want, x)[0], rtol=1e-12, atol=1e-14)


def test_implicit_plan_is_the_same_and_not_differentiable():
    x, y = _clouds()
    x.requires_grad_(True)
    v1, p1 = sinkhorn(x, y, epsilon=0.4, n_iters=5, return_plan=True)
    v2, p2 = sinkhorn(x, y, epsilon=0.4, n_iters=5, return_plan=True, gradient="implicit")
    assert torch.equal(v1, v2) or float(v1) == pytest.approx(float(v2), rel=1e-14)
    torch.testing.assert_close(p1.detach(), p2, rtol=1e-14, atol=0.0)
    assert v2.requires_grad and not p2.requires_grad


# ----------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("p", [1, 2])
def test_implicit_equals_unrolled_at_convergence(p):
    x, y = _clouds()
    a, b = _weights(6, 8)
    leaves = [t.clone().requires_grad_(True) for t in (x, y, a, b)]
    unrolled = torch.autograd.grad(
        sinkhorn(*leaves[:2], epsilon=0.5, n_iters=400, p=p, a=leaves[2], b=leaves[3]), leaves)
    implicit = torch.autograd.grad(
        sinkhorn(*leaves[:2], epsilon=0.5, n_iters=400, p=p, a=leaves[2], b=leaves[3],
                 gradient="implicit"), leaves)
    for u, i in zip(unrolled, implicit, strict=True):
        torch.testing.assert_close(i, u, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("p", [1, 2])
def test_implicit_gradcheck(p):
    # Converged forward (so finite differences see the fixed point), float64.
    x, y = _clouds(n=4, m=5)
    a, b = _weights(4, 5)
    leaves = [t.clone().requires_grad_(True) for t in (x, y, a, b)]

    def f(x_, y_, a_, b_):
        return sinkhorn(x_, y_, epsilon=0.5, n_iters=300, p=p, a=a_, b=b_, gradient="implicit")

    assert torch.autograd.gradcheck(f, leaves)


def test_unconverged_implicit_gradient_is_that_of_the_own_marginals():
    # After few iterations the plan is the exact entropic plan between a and its own
    # column marginals b'; the implicit gradient is the converged gradient for (a, b'),
    # computed here independently by a long unrolled run with b = b' held fixed. It is
    # far from the 3-iteration unrolled gradient.
    x, y = _clouds(n=5, m=6)
    x.requires_grad_(True)
    val, plan = sinkhorn(x, y, epsilon=0.3, n_iters=3, gradient="implicit", return_plan=True)
    (got,) = torch.autograd.grad(val, x)
    b_own = plan.sum(0)
    assert float((b_own * 6 - 1).abs().max()) > 1e-2  # really unconverged
    (want,) = torch.autograd.grad(sinkhorn(x, y, epsilon=0.3, n_iters=2000, b=b_own), x)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
    (unrolled,) = torch.autograd.grad(sinkhorn(x, y, epsilon=0.3, n_iters=3), x)
    assert not torch.allclose(got, unrolled, rtol=1e-2, atol=1e-4)


def test_zero_weights_drop_the_point_in_both_modes():
    x, y = _clouds(n=5, m=6)
    a = torch.tensor([1.0, 0.0, 1.0, 1.0, 1.0], dtype=x.dtype)
    b = torch.tensor([1.0, 1.0, 1.0, 0.0, 1.0, 1.0], dtype=x.dtype)
    keep_x, keep_y = [0, 2, 3, 4], [0, 1, 2, 4, 5]
    for gradient in ("unrolled", "implicit"):
        xl = x.clone().requires_grad_(True)
        val = sinkhorn(xl, y, epsilon=0.4, n_iters=200, a=a, b=b, gradient=gradient)
        (grad,) = torch.autograd.grad(val, xl)
        xs = x[keep_x].clone().requires_grad_(True)
        want = sinkhorn(xs, y[keep_y], epsilon=0.4, n_iters=200)
        assert float(val.detach()) == pytest.approx(float(want.detach()), rel=1e-12)
        torch.testing.assert_close(grad[keep_x], torch.autograd.grad(want, xs)[0],
                                   rtol=1e-8, atol=1e-12)
        assert torch.all(grad[1] == 0.0)


# ----------------------------------------------------------------------------- annealing


def test_annealing_schedule():
    assert annealing_schedule(0.1, 10, None, 0.5) == []
    assert annealing_schedule(0.1, 10, 1.0, 0.5) == [1.0, 0.5, 0.25, 0.125]
    with pytest.raises(ValueError, match="leaves no iteration"):
        annealing_schedule(0.1, 4, 1.0, 0.5)
    with pytest.raises(ValueError, match="scaling"):
        annealing_schedule(0.1, 10, 1.0, 1.0)


def test_annealing_converges_faster_to_pot():
    # Small epsilon relative to the cost (C / eps up to ~300): 60 plain iterations are
    # 1e-2 off POT's converged value, 60 annealed ones (from the largest cost) 3e-5.
    x, y = _clouds(n=8, m=8, d=2, seed=1)
    eps = 0.05
    diff = x.numpy()[:, None] - y.numpy()[None]
    c = (diff**2).sum(-1)
    u = np.full(8, 1 / 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = ot.sinkhorn2(u, u, c, eps, method="sinkhorn_log", numItermax=3000,
                            stopThr=1e-14)
    plain = float(sinkhorn(x, y, epsilon=eps, n_iters=60))
    annealed = float(sinkhorn(x, y, epsilon=eps, n_iters=60, epsilon_start=float(c.max()),
                              scaling=0.7))
    assert abs(annealed - want) < 1e-4 * want
    assert abs(plain - want) > 3e-3 * want


def test_annealed_unrolled_gradcheck():
    x, y = _clouds(n=4, m=5)
    x.requires_grad_(True)
    y.requires_grad_(True)

    def f(x_, y_):
        return sinkhorn(x_, y_, epsilon=0.3, n_iters=6, epsilon_start=2.0, scaling=0.5)

    assert torch.autograd.gradcheck(f, (x, y))


# ----------------------------------------------------------------------------- hot path


def _fwd_bwd(x, y, **kw):
    xl = x.detach().requires_grad_(True)
    val = sinkhorn(xl, y, **kw)
    val.backward()
    return val, xl.grad


@pytest.mark.parametrize("weighted", [False, True])
def test_implicit_no_syncs_and_few_ops(weighted):
    x, y = _clouds(n=100, m=100, d=8, dtype=torch.float32)
    kw = {"epsilon": 0.1, "n_iters": 100, "gradient": "implicit"}
    if weighted:
        a, b = _weights(100, 100)
        kw.update(a=a.float(), b=b.float())
    with input_checks(False), OpCounter() as counter:
        _fwd_bwd(x, y, **kw)
    assert counter.syncs == 0, counter.summary(10)
    # 2 operations per half-iteration (3 with given weights) plus a fixed overhead.
    per_iter = 6 if weighted else 4
    assert counter.ops <= per_iter * 100 + 80, counter.summary(10)
    assert counter.by_name["aten.logsumexp"] == 200


def test_unrolled_and_annealed_no_syncs():
    x, y = _clouds(n=10, m=12, d=3, dtype=torch.float32)
    with input_checks(False), OpCounter() as counter:
        _fwd_bwd(x, y, epsilon=0.1, n_iters=8, epsilon_start=4.0)
        _fwd_bwd(x, y, epsilon=0.1, n_iters=8, epsilon_start=4.0, gradient="implicit")
    assert counter.syncs == 0, counter.summary(10)


def test_divergence_syncs_are_geomloss_s():
    # Not ours to fix (sinkhorn_divergence is GeomLoss): its tensorized backend syncs
    # twice (index_put_ in its kernel truncation) and once more to estimate the diameter
    # when none is given. This records the state; it fails when GeomLoss changes.
    x, y = _clouds(n=10, m=12, d=3, dtype=torch.float32)
    counts = []
    for diameter in (10.0, None):
        with input_checks(False), OpCounter() as counter:
            xl = x.clone().requires_grad_(True)
            sinkhorn_divergence(xl, y, epsilon=0.5, diameter=diameter).backward()
        counts.append(dict(counter.sync_ops))
    assert counts[0] == {"aten.index_put_": 2}
    assert counts[1] == {"aten.index_put_": 2, "aten._local_scalar_dense": 1}


@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
@pytest.mark.parametrize("gradient", ["implicit", "unrolled"])
def test_compiles_without_graph_break(gradient, backend):
    # fullgraph=True raises on any graph break; aot_eager also traces the backward.
    x, y = _clouds(n=6, m=7, d=3, dtype=torch.float32)

    def value(x_, y_):
        with input_checks(False):
            return sinkhorn(x_, y_, epsilon=0.3, n_iters=4, gradient=gradient,
                            epsilon_start=2.0)

    torch._dynamo.reset()
    xl = x.clone().requires_grad_(True)
    got = torch.compile(value, fullgraph=True, backend=backend)(xl, y)
    (grad,) = torch.autograd.grad(got, xl)
    xe = x.clone().requires_grad_(True)
    want = value(xe, y)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(grad, torch.autograd.grad(want, xe)[0])


# ----------------------------------------------------------------------------- SAE


def _sae(**overrides):
    config = model_config_from_dict({"name": "sae", "latent_dim": 3, "n_iters": 30,
                                     "epsilon": 0.5, **overrides})
    torch.manual_seed(0)
    return build_model(config, (1, 8, 8), "mlp", {"hidden": (16,)},
                       generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("gradient", ["implicit", "unrolled"])
def test_sae_discrepancy_uses_the_configured_gradient(gradient):
    model = _sae(gradient=gradient)
    z, y = _clouds(n=10, m=10, d=3, dtype=torch.float32)
    z.requires_grad_(True)
    (got,) = torch.autograd.grad(model.discrepancy(z, y, None), z)
    (want,) = torch.autograd.grad(sinkhorn(z, y, epsilon=0.5, n_iters=30, gradient=gradient), z)
    torch.testing.assert_close(got, want, rtol=0.0, atol=0.0)
    other = "unrolled" if gradient == "implicit" else "implicit"
    (different,) = torch.autograd.grad(sinkhorn(z, y, epsilon=0.5, n_iters=30,
                                                gradient=other), z)
    assert not torch.allclose(got, different, rtol=1e-3, atol=1e-6)


def test_sae_defaults_and_annealing():
    assert _sae().config.gradient == "implicit"
    model = _sae(epsilon_start=4.0, epsilon_scaling=0.5)
    z, y = _clouds(n=10, m=10, d=3, dtype=torch.float32)
    want = sinkhorn(z, y, epsilon=0.5, n_iters=30, gradient="implicit", epsilon_start=4.0)
    torch.testing.assert_close(model.discrepancy(z, y, None), want, rtol=0.0, atol=0.0)
    assert not math.isclose(float(want), float(sinkhorn(z, y, epsilon=0.5, n_iters=30)),
                            rel_tol=1e-6)


@pytest.mark.parametrize("overrides, match", [
    ({"gradient": "envelope"}, "gradient"),
    ({"epsilon_start": -1.0}, "epsilon_start"),
    ({"epsilon_scaling": 1.0}, "epsilon_scaling"),
    ({"epsilon_start": 1e6, "n_iters": 5}, "leaves no iteration"),
])
def test_sae_config_errors(overrides, match):
    with pytest.raises(ValueError, match=match):
        _sae(**overrides)


def test_sae_discrepancy_compiles_without_graph_break():
    model = _sae(n_iters=4)
    z, y = _clouds(n=8, m=8, d=3, dtype=torch.float32)

    def term(z_, y_):
        with input_checks(False):
            return model.discrepancy(z_, y_, None)

    torch._dynamo.reset()
    zl = z.clone().requires_grad_(True)
    got = torch.compile(term, fullgraph=True, backend="aot_eager")(zl, y)
    ze = z.clone().requires_grad_(True)
    want = term(ze, y)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(torch.autograd.grad(got, zl)[0], torch.autograd.grad(want, ze)[0])
