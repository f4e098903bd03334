"""The spherical family in the training hot path: closed-form location search against the
autograd search it replaced, sync-free samplers, 0 host syncs and full-graph compilation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from otae import noise, sphere
from otae.checks import input_checks
from otae.discrepancies import max_sliced_fgw, spherical_sliced_fgw
from otae.discrepancies.spherical import _Clouds, slice_values
from otae.priors.base import stratified_counts
from otae.priors.sphere import VonMisesFisherMixturePrior
from otae.profiling import OpCounter

from .helpers import gen, spherical_clouds

D = torch.float64


# ------------------------------------------------- reference: the autograd search it replaced


def old_ascend(start, objective, n_iters, lr):
    """The previous ``_ascend`` (the reference): a fresh autograd graph per step."""
    theta = start.detach().clone()
    tiny = torch.finfo(theta.dtype).tiny
    with torch.enable_grad():
        for t in range(n_iters):
            theta.requires_grad_(True)
            (grad,) = torch.autograd.grad(objective(t, theta), theta)
            direction = grad / grad.norm(dim=-1, keepdim=True).clamp_min(tiny)
            theta = theta.detach() + (lr * (1.0 - t / n_iters)) * direction
            theta = theta / theta.norm(dim=-1, keepdim=True)
    return theta.detach()


def old_spherical(x, y, beta, kappa, L, n_iters, lr, k, distribution, seed, init):
    """Autograd search on the same draws as the new one (same generator order)."""
    g = gen(seed)
    rows = [None]
    if k > 1:
        rows = [sphere.mixture_components(k, L, g, None)
                for _ in range(1 if L % k == 0 else n_iters + 1)]
    samples = sphere.around_e1(kappa, x.shape[1], (n_iters + 1) * L, distribution, g, x.dtype,
                               None).view(n_iters + 1, L, -1)

    def directions(t, locs):
        index = rows[t % len(rows)]
        return sphere.householder_from_e1(samples[t], locs if index is None else locs[index])

    locs = old_ascend(
        init / init.norm(dim=-1, keepdim=True),
        lambda t, th: slice_values(x, y, directions(t, th).T, beta).mean(), n_iters, lr)
    return slice_values(x, y, directions(n_iters, locs).T, beta).mean(), locs


@pytest.mark.parametrize("beta", [0.0, 0.1, 1.0])
def test_closed_form_direction_gradient_matches_autograd(beta):
    x, y = spherical_clouds(0)
    theta = torch.randn(7, 4, generator=gen(1), dtype=D)
    theta.requires_grad_(True)
    (expected,) = torch.autograd.grad(slice_values(x, y, theta.T, beta).sum(), theta)
    torch.testing.assert_close(_Clouds(x, y, beta).gradient(theta.detach()), expected,
                               rtol=1e-9, atol=1e-9)


def test_closed_form_gradient_follows_the_anti_identity_matching():
    # y = -x: the anti-identity matching is optimal along every direction.
    x, _ = spherical_clouds(2)
    y = -x + 0.01 * torch.randn(x.shape, generator=gen(3), dtype=D)
    theta = torch.randn(5, 4, generator=gen(4), dtype=D).requires_grad_(True)
    (expected,) = torch.autograd.grad(slice_values(x, y, theta.T, 0.5).sum(), theta)
    torch.testing.assert_close(_Clouds(x, y, 0.5).gradient(theta.detach()), expected,
                               rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(("distribution", "k", "L"),
                         [("vmf", 1, 6), ("power", 1, 6), ("vmf", 2, 6), ("vmf", 3, 7)])
def test_search_matches_the_autograd_search(distribution, k, L):
    x, y = spherical_clouds(5)
    init = torch.randn(k, 4, generator=gen(6), dtype=D)
    xa, ya = x.clone().requires_grad_(True), y.clone().requires_grad_(True)
    value, locs = spherical_sliced_fgw(xa, ya, 0.3, 8.0, L, n_iters=6, lr=0.2, n_components=k,
                                       distribution=distribution, generator=gen(7),
                                       init_locations=init, return_locations=True)
    xb, yb = x.clone().requires_grad_(True), y.clone().requires_grad_(True)
    expected, expected_locs = old_spherical(xb, yb, 0.3, 8.0, L, 6, 0.2, k, distribution, 7, init)
    torch.testing.assert_close(locs, expected_locs, rtol=1e-9, atol=1e-9)
    assert value.item() == pytest.approx(expected.item(), rel=1e-9)
    value.backward()
    expected.backward()
    torch.testing.assert_close(xa.grad, xb.grad)
    torch.testing.assert_close(ya.grad, yb.grad)
    assert not torch.allclose(locs, init / init.norm(dim=-1, keepdim=True))  # it moved


def test_max_sfg_matches_the_autograd_search():
    x, y = spherical_clouds(8)
    start = torch.randn(3, 4, generator=gen(9), dtype=D)
    xa, ya = x.clone().requires_grad_(True), y.clone().requires_grad_(True)
    value, direction = max_sliced_fgw(xa, ya, 0.2, n_iters=8, init_directions=start,
                                      return_direction=True)

    def objective(t, theta):
        return slice_values(x, y, (theta / theta.norm(dim=-1, keepdim=True)).T, 0.2).sum()

    theta = old_ascend(start / start.norm(dim=-1, keepdim=True), objective, 8, 0.1)
    values = slice_values(x, y, theta.T, 0.2)
    best = int(values.argmax())
    torch.testing.assert_close(direction, theta[best], rtol=1e-9, atol=1e-9)
    xb, yb = x.clone().requires_grad_(True), y.clone().requires_grad_(True)
    expected = slice_values(xb, yb, theta[best].unsqueeze(-1), 0.2)[0]
    assert value.item() == pytest.approx(expected.item(), rel=1e-9)
    value.backward()
    expected.backward()
    torch.testing.assert_close(xa.grad, xb.grad)
    torch.testing.assert_close(ya.grad, yb.grad)


# ------------------------------------------------------------------- samplers


@pytest.mark.parametrize(("a", "b"), [(0.3, 2.0), (3.5, 3.5), (53.5, 3.5), (1.0, 1.0)])
def test_beta_sampler_matches_scipy(a, b):
    z = sphere.sample_beta(a, b, 4000, generator=gen(10), dtype=D)
    assert stats.kstest(z.numpy(), stats.beta(a, b).cdf).pvalue > 1e-3
    assert float(z.mean()) == pytest.approx(a / (a + b), abs=4 * math.sqrt(a * b / (a + b) ** 3 / 4000))


def test_beta_sampler_with_tensor_shapes():
    a = torch.tensor([0.5, 5.0], dtype=D).expand(3000, 2)
    z = sphere.sample_beta(a, 2.0, (3000, 2), generator=gen(11), dtype=D)
    for j, shape in enumerate((0.5, 5.0)):
        assert stats.kstest(z[:, j].numpy(), stats.beta(shape, 2.0).cdf).pvalue > 1e-3


def test_gamma_acceptance_rate_backs_the_proposal_count():
    """Marsaglia-Tsang's acceptance at shapes >= 1 (the bound behind _GAMMA_PROPOSALS)."""
    for shape in (1.0, 1.5, 3.5, 53.5):
        d = shape - 1.0 / 3.0
        x = torch.randn(200_000, generator=gen(12), dtype=D)
        u = torch.rand(200_000, generator=gen(13), dtype=D)
        v = (1.0 + x / math.sqrt(9.0 * d)) ** 3
        ok = (v > 0) & (u.log() < x**2 / 2 + d - d * v + d * v.clamp_min(1e-300).log())
        assert ok.double().mean() > 0.95
    assert 0.05 ** sphere._GAMMA_PROPOSALS < 1e-12


def wood_acceptance(kappa: float, d: int) -> float:
    m1 = d - 1.0
    root = math.sqrt(4 * kappa * kappa + m1 * m1)
    b, a = m1 / (2 * kappa + root), (m1 + 2 * kappa + root) / 4
    d0 = 4 * a * b / (1 + b) - m1 * math.log(m1)

    def density(e):
        t = 2 * a * b / (1 - (1 - b) * e)
        return math.exp(m1 * math.log(t) - t + d0) * stats.beta.pdf(e, m1 / 2, m1 / 2)

    return integrate.quad(density, 0, 1, limit=200, points=[0.5])[0]


def test_wood_acceptance_rate_backs_the_proposal_count():
    rates = [wood_acceptance(k, d) for d in (2, 3, 8, 64) for k in (0.5, 5.0, 50.0, 1e6)]
    assert min(rates) > 0.657
    assert (1 - 0.657) ** sphere._WOOD_PROPOSALS < 1e-12


def test_first_accepted_picks_the_first_and_falls_back_to_the_last():
    accept = torch.tensor([[False, True, False], [True, True, False], [False, False, False]])
    values = torch.arange(9.0).view(3, 3)
    (picked,) = sphere._first_accepted(accept, values)
    assert picked.tolist() == [3.0, 1.0, 8.0]


def test_mixture_components_are_stratified():
    for n, k in ((10, 5), (7, 3), (2, 5)):
        rows = sphere.mixture_components(k, n, gen(14), None)
        counts = torch.bincount(rows, minlength=k)
        assert counts.sum() == n and counts.max() - counts.min() <= 1
        assert torch.equal(rows, rows.sort().values)  # grouped, in component order
    # The extra rows go to components drawn uniformly.
    extras = torch.stack([torch.bincount(sphere.mixture_components(3, 7, gen(s), None),
                                         minlength=3) for s in range(300)])
    share = (extras == 3).double().mean(0)
    assert torch.all((share - 1 / 3).abs() < 0.1)


def test_vmf_prior_layout():
    prior = VonMisesFisherMixturePrior(4, 3, kappa=50.0, generator=gen(15))
    for n in (0, 2, 7, 9):
        labels = prior.component_labels(n)
        assert torch.bincount(labels, minlength=3).tolist() == stratified_counts(n, 3)
        z = prior.sample(n, gen(16))
        assert z.shape == (n, 4)
        if n:
            cos = (z * prior.unit_locations[labels]).sum(-1)
            assert cos.min() > 0.5  # kappa 50: every row is near its own component


# ------------------------------------------------------ 0 syncs, fixed graphs


def hot_forwards(n_iters: int = 3):
    """Public hot-path functions as f(x, y, generator) -> scalar, differentiable in x, y."""
    loc = torch.randn(2, 5, generator=gen(18))
    return {
        "ssfg": lambda x, y, g: spherical_sliced_fgw(x, y, n_iters=n_iters, generator=g,
                                                     init_locations=loc[0]),
        "mssfg": lambda x, y, g: spherical_sliced_fgw(x, y, n_projections=5, n_iters=n_iters,
                                                      n_components=2, generator=g),
        "pssfg": lambda x, y, g: spherical_sliced_fgw(x, y, n_iters=n_iters,
                                                      distribution="power", generator=g),
        "maxsfg": lambda x, y, g: max_sliced_fgw(x, y, n_iters=n_iters, generator=g),
        "mixture": lambda x, y, g: (sphere.sample_spherical_mixture(
            loc, 20.0, 7, generator=g) @ x.T).sum() + y.sum(),
        "beta": lambda x, y, g: sphere.sample_beta(0.4, 2.0, 6, generator=g).sum()
        * (x.sum() + y.sum()),
    }


def forward_backward(fn, generator):
    x0, y0 = spherical_clouds(17, n=20, d=5, dtype=torch.float32)
    x, y = x0.clone().requires_grad_(True), y0.clone().requires_grad_(True)
    out = fn(x, y, generator)
    out.backward()
    return out.detach(), x.grad, y.grad


@pytest.mark.parametrize("name", sorted(hot_forwards()))
def test_no_host_sync(name):
    fn = hot_forwards()[name]
    with input_checks(False):
        forward_backward(fn, gen(19))
        with OpCounter() as counter:
            forward_backward(fn, gen(19))
    assert counter.syncs == 0, counter.summary()


@pytest.mark.parametrize(("name", "backend"), [("mssfg", "aot_eager"), ("maxsfg", "eager")])
def test_compiles_without_graph_break_and_replays_eager_noise(name, backend):
    """One graph (fullgraph) from a DrawTape; values and gradients those of eager mode."""
    import torch._dynamo

    fn = hot_forwards(n_iters=1)[name]
    recorder = noise.DrawRecorder(gen(20))
    with input_checks(False):
        expected = forward_backward(fn, recorder)
        tape = noise.DrawTape(noise.draw_all(recorder.specs, gen(20)), recorder.specs)
        torch._dynamo.reset()
        got = forward_backward(torch.compile(fn, fullgraph=True, backend=backend), tape)
    assert tape.position == len(recorder.specs)
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b)


def test_regulariser_operation_budget():
    """SSFG at the paper's L = 10, 10 steps, N = 100, d = 8: well under the op-count target of 800
    (``FLOORS`` in benchmarks/op_counts.py)."""
    x, y = spherical_clouds(21, n=100, d=8, dtype=torch.float32)
    x.requires_grad_(True)
    with input_checks(False), OpCounter() as counter:
        spherical_sliced_fgw(x, y, 0.1, 50.0, 10, n_iters=10, generator=gen(22),
                             init_locations=torch.ones(1, 8)).backward()
    assert counter.syncs == 0 and counter.ops < 760, counter.summary()


def test_models_warm_start_flag_follows_the_buffer():
    from otae.models.base import build_model, model_config_from_dict

    config = model_config_from_dict({"name": "ssfg", "latent_dim": 3, "n_iters": 2})
    model = build_model(config, (1, 4, 4), generator=gen(23))
    assert model.initial_locations(None) is None
    model.locations.copy_(torch.tensor([[0.0, 1.0, 0.0]]))
    state = model.state_dict()
    fresh = build_model(config, (1, 4, 4), generator=gen(23))
    fresh.load_state_dict(state)
    assert torch.equal(fresh.initial_locations(None), state["locations"])
    fresh.load_state_dict(build_model(config, (1, 4, 4)).state_dict())  # zeros again
    assert fresh.initial_locations(None) is None
    np.testing.assert_array_equal(model.locations.numpy(), [[0.0, 1.0, 0.0]])
