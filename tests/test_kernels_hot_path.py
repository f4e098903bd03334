"""The training hot path of MMD, sliced FGW / SW and the Gaussian-family priors.

Values and gradients of the fused implementations against the implementations they
replaced (kept here as references), and, for every public hot-path function: no host
sync in forward + backward under ``input_checks(False)``, a bounded number of aten
operations, and a ``torch.compile(fullgraph=True)`` trace with replayed random draws.
"""

from __future__ import annotations

import pytest
import torch

from otae import noise
from otae.checks import input_checks
from otae.constants import device_constant
from otae.discrepancies import one_dimensional as od
from otae.discrepancies.mmd import WAE_SCALES, mmd, squared_distances
from otae.discrepancies.one_dimensional import fgw_1d_dense, fgw_1d_pair_rows, fgw_1d_rows
from otae.discrepancies.sliced import sliced_fgw, sliced_gw, sliced_wasserstein
from otae.models.base import build_model
from otae.models.rae import DRAEConfig
from otae.models.swae import SWAEConfig
from otae.models.wae import WAEConfig
from otae.nn import MLPEncoder
from otae.priors import GaussianMixturePrior, VampPrior
from otae.priors.base import stratified_counts
from otae.priors.gaussian import StandardNormalPrior
from otae.priors.meta import (
    FactorisedNeuralPrior,
    FactorisedQuantilePrior,
    GumbelMixturePrior,
    NeuralPrior,
)
from otae.profiling import OpCounter

from .helpers import gen

F64 = torch.float64


# ---------------------------------------------------------------- references (replaced code)
def _mmd_reference(x, y, kernel, scales):
    """The per-scale, three-matrix MMD this module replaced."""
    cs = [2.0 * x.shape[1] * s for s in scales]

    def ksum(a, b):
        sq = (a.unsqueeze(1) - b.unsqueeze(0)).square().sum(-1)
        return sum(c / (c + sq) if kernel == "imq" else torch.exp(-sq / c) for c in cs)

    def off_diagonal_mean(k):
        n = k.shape[0]
        return (k.sum() - k.diagonal().sum()) / (n * (n - 1))

    return off_diagonal_mean(ksum(x, x)) + off_diagonal_mean(ksum(y, y)) - 2 * ksum(x, y).mean()


def _fused_values_reference(xs, ys, w_weight, gw_weight):
    """The candidate-by-candidate forward this module replaced."""
    n = xs.shape[-1]
    mean_x, mean_y = xs.mean(-1, keepdim=True), ys.mean(-1, keepdim=True)
    xc, yc = xs - mean_x, ys - mean_y
    shift = (mean_x - mean_y).squeeze(-1).square()
    x2 = xc.square()
    a = x2.sum(-1)
    a_safe = a.clamp_min(torch.finfo(xs.dtype).tiny).unsqueeze(-1)
    candidates = []
    for matched in (yc, yc.flip(-1)):
        e = xc - matched
        w = torch.linalg.vecdot(e, e) / n + shift
        diff = x2 - matched.square()
        p = torch.linalg.vecdot(xc, matched).unsqueeze(-1)
        residual = matched - p / a_safe * xc
        relational = (
            2.0 * n * torch.linalg.vecdot(diff, diff) + 6.0 * diff.sum(-1).square()
            + 8.0 * a * torch.linalg.vecdot(residual, residual)
        ) / (n * n)
        candidates.append(w_weight * w + gw_weight * relational)
    anti = candidates[1] < candidates[0]
    return torch.where(anti, candidates[1], candidates[0]), anti


def _mixed_rows(seed=21, rows=8, n=11, dtype=F64):
    """Rows where half the problems are best matched by the anti-identity."""
    g = gen(seed)
    x = torch.randn(rows, n, generator=g, dtype=F64)
    y = torch.randn(rows, n, generator=g, dtype=F64) * 1.5
    y[::2] = -x[::2] * 1.3 + 0.05 * y[::2]
    return x.to(dtype), y.to(dtype)


def _labels_reference(n, k):
    return torch.repeat_interleave(torch.arange(k), torch.tensor(stratified_counts(n, k)))


# ---------------------------------------------------------------- values and gradients
@pytest.mark.parametrize("kernel", ["imq", "gaussian"])
@pytest.mark.parametrize("n,m", [(7, 7), (5, 9)])
def test_mmd_value_and_gradients_equal_the_per_scale_reference(kernel, n, m):
    g = gen(3)
    x = torch.randn(n, 4, generator=g, dtype=F64, requires_grad=True)
    y = (1.3 * torch.randn(m, 4, generator=g, dtype=F64) + 0.4).requires_grad_(True)
    got = mmd(x, y, kernel=kernel, scales=WAE_SCALES)
    want = _mmd_reference(x, y, kernel, WAE_SCALES)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)
    for a, b in zip(torch.autograd.grad(got, (x, y)), torch.autograd.grad(want, (x, y)),
                    strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-13)
    assert torch.autograd.gradcheck(
        lambda a, b: mmd(a, b, kernel=kernel, scales=(0.5, 2.0)), (x, y))


def test_pairwise_self_distances_equal_the_two_argument_form_and_clamp():
    g = gen(4)
    a = (torch.randn(6, 3, generator=g, dtype=F64) + 1e3).requires_grad_(True)
    one, two = squared_distances(a), squared_distances(a, a)
    torch.testing.assert_close(one, two, rtol=0, atol=0)
    assert (one >= 0).all()
    brute = (a.unsqueeze(1) - a.unsqueeze(0)).square().sum(-1)
    torch.testing.assert_close(one, brute, rtol=1e-9, atol=1e-9)
    weights = torch.randn(6, 6, generator=g, dtype=F64)
    torch.testing.assert_close(torch.autograd.grad((one * weights).sum(), a)[0],
                               torch.autograd.grad((brute * weights).sum(), a)[0])


def test_device_constant_is_built_once_and_usable_after_inference_mode():
    calls = []

    def build(n, *, dtype, device):
        calls.append(n)
        return torch.arange(n, dtype=dtype, device=device)

    with torch.inference_mode():
        first = device_constant(build, 5, dtype=F64, device="cpu")
    again = device_constant(build, 5, dtype=F64, device=torch.device("cpu"))
    assert again is first and calls == [5]
    assert not first.is_inference()
    w = torch.ones(5, dtype=F64, requires_grad=True)
    (w * first).sum().backward()  # saved for backward: would fail for an inference tensor
    torch.testing.assert_close(w.grad, torch.arange(5, dtype=F64))


@pytest.mark.parametrize("n,k", [(12, 4), (14, 4), (3, 5), (10, 1), (101, 10)])
def test_component_labels_equal_the_repeat_interleave_reference(n, k):
    prior = GaussianMixturePrior(2, k, generator=gen(0))
    labels = prior.component_labels(n)
    assert labels.dtype == torch.int64
    assert torch.equal(labels, _labels_reference(n, k))


def test_gmm_sample_values_and_gradients_equal_the_indexed_reference():
    prior = GaussianMixturePrior(3, 4, generator=gen(0))
    with torch.no_grad():
        prior.logvars.copy_(torch.linspace(-1.0, 0.5, 12).reshape(4, 3))
    weights = torch.randn(14, 3, generator=gen(9))
    got = prior.sample(14, gen(2))
    g_got = torch.autograd.grad((got * weights).sum(), (prior.means, prior.logvars))
    labels = _labels_reference(14, 4)
    eps = torch.randn(14, 3, generator=gen(2))
    want = prior.means[labels] + torch.exp(0.5 * prior.logvars)[labels] * eps
    g_want = torch.autograd.grad((want * weights).sum(), (prior.means, prior.logvars))
    torch.testing.assert_close(got, want)
    for a, b in zip(g_got, g_want, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("dtype,tol", [(F64, 1e-12), (torch.float32, 1e-5)])
def test_fgw_1d_rows_equal_the_candidate_loop_reference(dtype, tol):
    x, y = _mixed_rows(dtype=dtype)
    xs, ys = x.sort(-1).values + 100.0, y.sort(-1).values - 50.0
    got = fgw_1d_rows(xs, ys, 0.6, 0.4)
    want, want_anti = _fused_values_reference(xs, ys, 0.6, 0.4)
    assert want_anti.any() and not want_anti.all()  # the rows take both matchings
    torch.testing.assert_close(got, want, rtol=tol, atol=tol)


def test_pair_layout_and_compat_helpers_equal_the_dense_reference():
    x, y = _mixed_rows()
    weights = torch.randn(8, generator=gen(5), dtype=F64)
    leaves = [x.clone().requires_grad_(True), y.clone().requires_grad_(True)]
    pair = torch.stack(leaves, -2)
    got = fgw_1d_pair_rows(pair, 0.6, 0.4)
    separate = fgw_1d_rows(*leaves, 0.6, 0.4)
    dense = fgw_1d_dense(leaves[0].T, leaves[1].T, 0.4)
    torch.testing.assert_close(got, separate, rtol=0, atol=0)
    torch.testing.assert_close(got, dense, rtol=1e-10, atol=1e-12)
    grads = [torch.autograd.grad((v * weights).sum(), leaves) for v in (got, separate, dense)]
    for a, b, c in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        torch.testing.assert_close(a, c, rtol=1e-9, atol=1e-12)
    small = pair.detach()[:3, :, :6].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p: fgw_1d_pair_rows(p, 0.6, 0.4), (small,))


def test_sliced_directions_are_the_generators_draws():
    """Uniform directions: normalised N(0, I) rows of one (L, d) draw; raw ones for the
    RAE authors' scale. Checked through the value with the explicit projections."""
    x, y = torch.randn(9, 3, generator=gen(1), dtype=F64), torch.randn(9, 3, generator=gen(2),
                                                                      dtype=F64)
    raw = torch.randn(7, 3, generator=gen(8), dtype=F64)
    unit = raw / raw.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(sliced_fgw(x, y, 0.3, 7, generator=gen(8)),
                               sliced_fgw(x, y, 0.3, projections=unit.T))
    torch.testing.assert_close(
        sliced_fgw(x, y, 0.3, 7, generator=gen(8), scale="rae_authors"),
        sliced_fgw(x, y, 0.3, projections=raw.T, scale="rae_authors"))
    torch.testing.assert_close(sliced_wasserstein(x, y, 7, generator=gen(8)),
                               sliced_wasserstein(x, y, projections=unit.T))


# ---------------------------------------------------------------- syncs, op counts, compile
def _vamp():
    torch.manual_seed(0)
    encoder = MLPEncoder((1, 4, 4), 3, probabilistic=True, hidden=(16,))
    return VampPrior(3, 4, (1, 4, 4), generator=gen(3)).bind(encoder)


PRIORS = {
    "normal": lambda: StandardNormalPrior(3),
    "gmm": lambda: GaussianMixturePrior(3, 4, generator=gen(0)),
    "vampprior": _vamp,
    "neural": lambda: NeuralPrior(3, (8,), generator=gen(0)),
    "factorised_neural": lambda: FactorisedNeuralPrior(3, generator=gen(0)),
    "factorised_quantile": lambda: FactorisedQuantilePrior(3, 4, generator=gen(0)),
    "gwae_gmm": lambda: GumbelMixturePrior(3, 4, generator=gen(0)),
}


def _cloud_fns():
    """Public hot-path functions of two clouds and a generator, as scalars."""
    return {
        "mmd": lambda x, y, g: mmd(x, y, scales=WAE_SCALES),
        "sliced_fgw": lambda x, y, g: sliced_fgw(x, y, 0.1, 6, generator=g),
        "sliced_fgw_authors": lambda x, y, g: sliced_fgw(x, y, 0.1, 6, generator=g,
                                                         scale="rae_authors"),
        "sliced_gw": lambda x, y, g: sliced_gw(x, y, 6, generator=g),
        "sliced_wasserstein": lambda x, y, g: sliced_wasserstein(x, y, 6, generator=g),
        "fgw_1d": lambda x, y, g: od.fgw_1d(x, y, 0.3).sum(),
    }


def _leaves(seed=0, n=10, d=3):
    g = gen(seed)
    return (torch.randn(n, d, generator=g).requires_grad_(True),
            (torch.randn(n, d, generator=g) + 0.5).requires_grad_(True))


def _no_syncs(fn) -> OpCounter:
    with input_checks(False), OpCounter() as counter:
        fn()
    assert counter.syncs == 0, counter.summary()
    return counter


@pytest.mark.parametrize("name", list(_cloud_fns()))
def test_cloud_functions_make_no_host_sync(name):
    fn = _cloud_fns()[name]
    x, y = _leaves()
    _no_syncs(lambda: fn(x, y, gen(1)).backward())
    assert x.grad.abs().sum() > 0 and y.grad.abs().sum() > 0


@pytest.mark.parametrize("name", list(PRIORS))
def test_prior_sampling_makes_no_host_sync(name):
    prior = PRIORS[name]()
    z = torch.randn(10, 3, generator=gen(4)).requires_grad_(True)
    counter = _no_syncs(lambda: (prior.sample(10, gen(1)) - z).square().sum().backward())
    assert counter.by_name["aten.randn"] == 1
    assert all(p.grad is not None for p in prior.parameters())


def _compiled_matches_eager(fn, args, backend):
    """Record fn's draws, replay them into the fullgraph-compiled fn: same value, grads."""
    recorder = noise.DrawRecorder(gen(5))
    with input_checks(False):
        eager = fn(*args, recorder)
        eager_grads = torch.autograd.grad(eager, args)
        compiled = torch.compile(fn, fullgraph=True, backend=backend)
        tape = noise.DrawTape(noise.draw_all(recorder.specs, gen(5)), recorder.specs)
        value = compiled(*args, tape)
        grads = torch.autograd.grad(value, args)
    assert tape.position == len(recorder.specs)
    torch.testing.assert_close(value, eager)
    for a, b in zip(grads, eager_grads, strict=True):
        torch.testing.assert_close(a, b)


def test_sliced_fgw_traces_with_fullgraph():
    """The normalised directions and the mean scale (the models below cover the rest)."""
    torch._dynamo.reset()
    _compiled_matches_eager(_cloud_fns()["sliced_fgw"], _leaves(), "eager")


@pytest.mark.parametrize("name", list(PRIORS))
def test_prior_sampling_compiles_without_graph_break(name):
    torch._dynamo.reset()
    prior = PRIORS[name]()
    weights = torch.randn(10, 3, generator=gen(4))
    z = torch.randn(10, 3, generator=gen(6)).requires_grad_(True)
    _compiled_matches_eager(lambda z, g: ((prior.sample(10, g) - z) * weights).sum(), (z,),
                            "eager")


#: op-count targets for the regulariser's forward + backward at batch 100 (``FLOORS`` in
#: benchmarks/op_counts.py)
FLOORS = {"wae": (WAEConfig, {}, 100), "swae": (SWAEConfig, {"n_projections": 50}, 60),
          "drae": (DRAEConfig, {"prior": "gmm", "beta": 0.1, "n_projections": 50,
                                "scale": "rae_authors"}, 100)}


def _paper_model(name):
    config_class, options, floor = FLOORS[name]
    torch.manual_seed(0)
    model = build_model(config_class(latent_dim=8, **options), (1, 28, 28), generator=gen(0))
    return model, floor


@pytest.mark.parametrize("name", list(FLOORS))
def test_paper_regularisers_stay_under_the_op_floor_without_syncs(name):
    model, floor = _paper_model(name)
    z = torch.randn(100, 8, generator=gen(1)).requires_grad_(True)
    x = torch.zeros(100, 1, 28, 28)

    def step():
        value, _ = model.regulariser(x, z, None, z, gen(2))
        model.reduce(value).backward()

    counter = _no_syncs(step)
    assert counter.ops <= floor, counter.summary(20)
    assert z.grad.abs().sum() > 0


@pytest.mark.parametrize("name,backend", [("wae", "eager"), ("swae", "eager"),
                                          ("drae", "aot_eager")])
def test_paper_regularisers_compile_without_graph_break(name, backend):
    """Prior samples, directions and discrepancy, with the draws replayed from a tape;
    for D-RAE's hand-written backward (and the learnable prior's) aot_eager traces the
    backward graph too."""
    torch._dynamo.reset()
    model, _ = _paper_model(name)
    z = torch.randn(12, 8, generator=gen(1)).requires_grad_(True)
    x = torch.zeros(12, 1, 28, 28)
    _compiled_matches_eager(lambda z, g: model.reduce(model.regulariser(x, z, None, z, g)[0]),
                            (z,), backend)
