"""Model zoo: training decreases the loss, regularisers equal their discrepancy, determinism,
checkpoints, config validation.

Tiny problem: 16 random 1x8x8 images, MLP nets (32, 16), latent 3, K = 3 prior
components. Every random draw of a loss goes through an explicit ``torch.Generator``;
the reference values below re-create the generator and redo the draws by hand, in the
order the models document (reparameterisation noise, prior samples, directions).
"""

import copy

import pytest
import torch
import torch.nn.functional as F

from otae.discrepancies import (
    hierarchical_fgw,
    kl_monte_carlo_mixture,
    max_sliced_fgw,
    mmd,
    sinkhorn,
    sinkhorn_divergence,
    sliced_fgw,
    sliced_wasserstein,
    spherical_sliced_fgw,
)
from otae.models import MODELS, build_model, model_config_from_dict
from otae.priors import GaussianMixturePrior, StandardNormalPrior
from otae.sphere import uniform_directions

from .helpers import gen

IMAGE = (1, 8, 8)
N = 16
BASE = {"latent_dim": 3, "n_components": 3}

CASES = {
    "wae": {"name": "wae"},
    "wae-gaussian": {"name": "wae", "kernel": "gaussian", "scales": [1.0]},
    "swae": {"name": "swae", "n_projections": 20},
    "gmvae": {"name": "gmvae"},
    "vampprior": {"name": "vampprior"},
    "prae": {"name": "prae", "n_outer": 10},
    "prae-auto": {"name": "prae", "n_outer": 10, "tau": "auto"},
    "drae": {"name": "drae", "n_projections": 20},
    "drae-authors": {"name": "drae", "n_projections": 20, "scale": "rae_authors"},
    "ssfg": {"name": "ssfg", "n_iters": 3},
    "mssfg": {"name": "mssfg", "n_iters": 3, "n_locations": 2},
    "pssfg": {"name": "pssfg", "n_iters": 3},
    "maxsfg": {"name": "maxsfg", "n_iters": 3, "n_starts": 2},
    "sae": {"name": "sae", "n_iters": 30, "epsilon": 0.5},
    "sae-gmm": {"name": "sae", "prior": "gmm", "n_iters": 30, "epsilon": 0.5},
    "sae-vmf": {"name": "sae", "prior": "vmf", "n_iters": 30, "prior_kappa": 5.0},
    "sae-sphere-div": {"name": "sae", "prior": "sphere_uniform", "divergence": True},
}
PER_SAMPLE = {"gmvae", "vampprior"}
SPHERICAL = {"ssfg", "mssfg", "pssfg", "maxsfg"}


def make(case, seed=0, **overrides):
    config = model_config_from_dict({**BASE, **CASES[case], **overrides})
    torch.manual_seed(seed)
    return build_model(config, IMAGE, "mlp", {"hidden": (32, 16)}, generator=gen(seed + 1))


@pytest.fixture(scope="module")
def x():
    return torch.rand(N, *IMAGE, generator=gen(1234))


def prior_samples(prior, n, g):
    """Prior samples redone by hand for the Gaussian priors (stratified for the GMM)."""
    if isinstance(prior, GaussianMixturePrior):
        labels = torch.arange(prior.n_components).repeat_interleave(n // prior.n_components)
        labels = torch.cat((labels, torch.arange(n % prior.n_components)))
        labels = labels.sort().values
        eps = torch.randn(n, prior.latent_dim, generator=g)
        return prior.means[labels] + prior.stds[labels] * eps
    if isinstance(prior, StandardNormalPrior):
        return torch.randn(n, prior.latent_dim, generator=g)
    return prior.sample(n, g)


def reference(model, x, seed):
    """The regulariser recomputed from the discrepancy functions, and the decoded code."""
    c, g = model.config, gen(seed)
    mean, logvar = model.encoder(x)
    if c.name == "sae" and c.prior in ("vmf", "sphere_uniform"):
        mean = F.normalize(mean, dim=-1)
    z = (
        mean
        if logvar is None
        else mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=g)
    )
    if c.name in ("gmvae", "vampprior"):
        if c.name == "gmvae":
            means, logvars = model.prior.means, model.prior.logvars
        else:
            means, logvars = model.encoder(model.prior.pseudo_inputs)
        return kl_monte_carlo_mixture(z, mean, logvar, means, logvars), z
    if c.name == "prae":
        value = hierarchical_fgw(
            mean,
            torch.exp(0.5 * logvar),
            model.prior.means,
            model.prior.stds,
            beta=c.beta,
            n_outer=c.n_outer,
            n_inner=c.n_inner,
            tau=c.tau,
        )
        return value, z
    y = prior_samples(model.prior, N, g)
    if c.name == "wae":
        return mmd(z, y, kernel=c.kernel, scales=c.scales), z
    if c.name == "swae":
        return sliced_wasserstein(z, y, n_projections=c.n_projections, generator=g), z
    if c.name == "drae":
        return sliced_fgw(z, y, c.beta, c.n_projections, generator=g, scale=c.scale), z
    if c.name == "sae":
        if c.divergence:
            return sinkhorn_divergence(z, y, epsilon=c.epsilon, p=c.p), z
        return sinkhorn(z, y, epsilon=c.epsilon, n_iters=c.n_iters, p=c.p), z
    warm = c.warm_start and bool((model.locations.norm(dim=-1) > 0).all())
    init = model.locations.clone() if warm else None
    if c.name == "maxsfg":
        if init is not None:
            fresh = uniform_directions(c.n_starts - 1, c.latent_dim, generator=g)
            init = torch.cat((init, fresh))
        return max_sliced_fgw(
            z, y, c.beta, c.n_iters, c.lr, c.n_starts, generator=g, init_directions=init
        ), z
    k = c.n_locations if c.name == "mssfg" else 1
    value = spherical_sliced_fgw(
        z,
        y,
        c.beta,
        c.kappa,
        c.n_projections,
        c.n_iters,
        c.lr,
        n_components=k,
        distribution="power" if c.name == "pssfg" else "vmf",
        generator=g,
        init_locations=init,
    )
    return value, z


def test_every_model_is_covered():
    mine = {"wae", "swae", "gmvae", "vampprior", "prae", "drae", "sae"} | SPHERICAL
    assert mine <= set(MODELS)
    assert mine <= {CASES[c]["name"] for c in CASES}


# ------------------------------------------------------------------ training
@pytest.mark.parametrize("case", sorted(CASES))
def test_training_decreases_loss_and_trains_the_prior(case, x):
    model = make(case)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    totals = []
    for step in range(40):
        terms = model.loss(x, gen(7))  # identical noise at every step
        for name, value in terms.items():
            assert torch.isfinite(value).all(), (step, name)
        optimiser.zero_grad()
        terms["total"].backward()
        if step == 0:
            # Regularisers computed on prior samples / densities train the prior too.
            prior_params = list(model.prior.parameters())
            for p in prior_params:
                assert p.grad is not None and torch.isfinite(p.grad).all()
                assert p.grad.abs().sum() > 0
        optimiser.step()
        model.end_of_batch()
        totals.append(terms["total"].item())
    first, last = sum(totals[:3]) / 3, sum(totals[-3:]) / 3
    assert last < 0.9 * first, (first, last)


@pytest.mark.parametrize("case", sorted(CASES))
def test_regulariser_gradient_is_its_finite_difference_slope(case, x):
    """The regulariser alone, not the total (which the reconstruction dominates): along
    its own autograd gradient g, the central difference of R with the same noise has
    slope |g|^2 (a flipped or mis-scaled regulariser gradient gives -|g|^2 or another
    multiple); the step is sized to change R by 1%, and R(theta - eta g) < R < R(+)."""
    model = make(case)
    state = copy.deepcopy(model.state_dict())
    value = model.loss(x, gen(7))["regulariser"]
    named = list(model.named_parameters())
    grads = torch.autograd.grad(value, [p for _, p in named], allow_unused=True)
    pairs = [(p, g) for (_, p), g in zip(named, grads, strict=True) if g is not None]
    assert pairs, "the regulariser reaches no parameter"
    norm2 = sum(float(g.square().sum()) for _, g in pairs)
    r0 = float(value.detach())
    eta = 0.01 * abs(r0) / norm2

    def moved(t):
        model.load_state_dict(state)  # also resets the spherical models' warm start
        with torch.no_grad():
            for p, g in pairs:
                p.add_(t * eta * g)
            return float(model.loss(x, gen(7))["regulariser"])

    up, down = moved(1.0), moved(-1.0)
    model.load_state_dict(state)
    assert down < r0 < up, (down, r0, up)
    assert (up - down) / (2 * eta) == pytest.approx(norm2, rel=0.1)


# ------------------------------------------------------------------ values
@pytest.mark.parametrize("case", sorted(CASES))
def test_regulariser_equals_discrepancy(case, x):
    model = make(case)
    for call in range(2):  # the second call checks the spherical models' warm start
        with torch.no_grad():
            expected, z = reference(model, x, seed=11 + call)
            terms = model.loss(x, gen(11 + call))
        reduced = expected.mean() if expected.dim() else expected
        torch.testing.assert_close(terms["regulariser"], reduced, rtol=1e-5, atol=1e-6)
        sse = (model.decode(z) - x).pow(2).flatten(1).sum(1)
        torch.testing.assert_close(terms["reconstruction"], sse.mean())
        torch.testing.assert_close(
            terms["total"], sse.mean() + model.config.gamma * reduced, rtol=1e-5, atol=1e-5
        )


@pytest.mark.parametrize("case", sorted(CASES))
def test_regulariser_shape_follows_its_kind(case, x):
    model = make(case)
    mean, logvar = model.encode(x)
    z = model.reparameterise(mean, logvar, gen(0))
    value, extras = model.regulariser(x, mean, logvar, z, gen(1))
    assert value.shape == ((N,) if CASES[case]["name"] in PER_SAMPLE else ())
    assert extras == {}


@pytest.mark.parametrize("case", ["gmvae", "drae"])
def test_sum_reduction(case, x):
    model = make(case, reduction="sum", gamma=2.0)
    with torch.no_grad():
        expected, z = reference(model, x, seed=3)
        terms = model.loss(x, gen(3))
    sse = (model.decode(z) - x).pow(2).flatten(1).sum(1)
    reg = expected.sum() if expected.dim() else expected
    torch.testing.assert_close(terms["total"], sse.sum() + 2.0 * reg, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("case", sorted(CASES))
def test_same_generator_same_loss(case, x):
    model = make(case)
    state = copy.deepcopy(model.state_dict())  # the spherical models update a buffer
    first = model.loss(x, gen(5))
    model.load_state_dict(state)
    second = model.loss(x, gen(5))
    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), name
    if CASES[case]["name"] != "prae":  # the P-RAE regulariser itself draws nothing
        model.load_state_dict(state)
        assert not torch.equal(first["regulariser"], model.loss(x, gen(6))["regulariser"])


@pytest.mark.parametrize("case", sorted(CASES))
def test_checkpoint_round_trip(case, x):
    model = make(case)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(3):
        optimiser.zero_grad()
        model.loss(x, gen(step))["total"].backward()
        optimiser.step()
        model.end_of_batch()
    fresh = make(case, seed=99)
    fresh.load_state_dict(copy.deepcopy(model.state_dict()))
    with torch.no_grad():
        assert torch.equal(model.reconstruct(x), fresh.reconstruct(x))
        assert torch.equal(model.sample(6, gen(4)), fresh.sample(6, gen(4)))
        if model.prior.n_components > 1:
            assert torch.equal(
                model.sample_component(1, 4, gen(5)), fresh.sample_component(1, 4, gen(5))
            )
    a, b = model.loss(x, gen(8)), fresh.loss(x, gen(8))
    for name in a:
        assert torch.equal(a[name], b[name]), name


# ------------------------------------------------------------------ model specifics
def test_vampprior_stores_the_encoder_once(x):
    model = make("vampprior")
    keys = set(model.state_dict())
    assert {k for k in keys if k.startswith("prior.")} == {"prior.pseudo_inputs"}
    assert model.prior.encoder is model.encoder
    clone = copy.deepcopy(model)
    assert clone.prior.encoder is clone.encoder
    # Pseudo-inputs start uniform on [0, 1] (the pixel range).
    u = model.prior.pseudo_inputs
    assert u.shape == (3, *IMAGE) and 0 <= u.min() and u.max() <= 1


@pytest.mark.parametrize("case", sorted(SPHERICAL))
def test_spherical_search_is_warm_started_in_training_only(case, x):
    model = make(case)
    assert torch.equal(model.locations, torch.zeros_like(model.locations))
    model.loss(x, gen(1))
    found = model.locations.clone()
    assert torch.allclose(found.norm(dim=-1), torch.ones(found.shape[0]))
    model.eval()
    model.loss(x, gen(2))
    assert torch.equal(model.locations, found)  # evaluation leaves the buffer alone
    model.train()
    # Zero ascent steps from a warm start keep the stored location(s) (maxsfg: the
    # best of previous + fresh starts, whichever has the larger slice value).
    model.config.n_iters = 0
    model.loss(x, gen(3))
    if case != "maxsfg":
        torch.testing.assert_close(model.locations, found)


def test_spherical_cold_start_without_warm_start(x):
    model = make("ssfg", warm_start=False)
    model.loss(x, gen(1))
    with torch.no_grad():
        expected, _ = reference(model, x, seed=2)  # reference: init None (warm_start off)
        assert torch.equal(model.loss(x, gen(2))["regulariser"], expected)


def test_mssfg_searches_n_locations(x):
    """The buffer is (n_locations, d) from birth: check what a training call stores in it,
    the k = 4 unit locations that spherical_sliced_fgw finds from random starts on the
    same codes and prior samples with the same draws (prior samples, then the search's)."""
    model = make("mssfg", n_locations=4)
    c = model.config
    model.loss(x, gen(0))
    with torch.no_grad():
        g = gen(0)
        z, _ = model.encoder(x)
        y = prior_samples(model.prior, N, g)
        _, expected = spherical_sliced_fgw(
            z, y, c.beta, c.kappa, c.n_projections, c.n_iters, c.lr, n_components=4,
            distribution="vmf", generator=g, return_locations=True,
        )
    assert expected.shape == (4, 3)
    torch.testing.assert_close(model.locations, expected)
    torch.testing.assert_close(model.locations.norm(dim=-1), torch.ones(4))


@pytest.mark.parametrize("case", ["sae-vmf", "sae-sphere-div"])
def test_sae_codes_on_the_sphere(case, x):
    model = make(case)
    with torch.no_grad():
        codes = model.embed(x)
        torch.testing.assert_close(codes.norm(dim=-1), torch.ones(N))
        expected = model.decoder(F.normalize(model.encoder(x)[0], dim=-1))
        torch.testing.assert_close(model.reconstruct(x), expected)


def test_sae_euclidean_codes_are_not_projected(x):
    model = make("sae")
    with torch.no_grad():
        assert torch.equal(model.embed(x), model.encoder(x)[0])


def test_sae_vmf_locations_stay_on_the_sphere(x):
    model = make("sae-vmf")
    optimiser = torch.optim.Adam(model.parameters(), lr=0.1)
    for step in range(3):
        optimiser.zero_grad()
        model.loss(x, gen(step))["total"].backward()
        optimiser.step()
        model.end_of_batch()
    torch.testing.assert_close(model.prior.locations.norm(dim=-1), torch.ones(3))
    assert model.prior.kappa == 5.0


def test_sae_vmf_prior_can_be_frozen():
    model = make("sae-vmf", prior_learnable=False)
    assert list(model.prior.parameters()) == []


# ------------------------------------------------------------------ config validation
BAD = [
    ({"name": "wae", "kernel": "rbf"}, "kernel"),
    ({"name": "wae", "scales": [1.0, -2.0]}, "scales"),
    ({"name": "swae", "n_projections": 0}, "n_projections"),
    ({"name": "gmvae", "prior": "normal"}, "prior"),
    ({"name": "vampprior", "prior": "gmm"}, "prior"),
    ({"name": "vampprior", "pseudo_input_low": 1.0}, "pseudo_input_high"),
    ({"name": "prae", "prior": "vmf"}, "prior"),
    ({"name": "prae", "tau": "fast"}, "tau"),
    ({"name": "prae", "tau": -1.0}, "tau"),
    ({"name": "prae", "beta": 1.5}, "beta"),
    ({"name": "prae", "n_inner": 0}, "n_inner"),
    ({"name": "drae", "scale": "sum"}, "scale"),
    ({"name": "drae", "prior": "nonexistent"}, "prior"),
    ({"name": "ssfg", "kappa": -1.0}, "kappa"),
    ({"name": "ssfg", "lr": 0.0}, "lr"),
    ({"name": "ssfg", "latent_dim": 1}, "latent_dim"),
    ({"name": "pssfg", "n_iters": -1}, "n_iters"),
    ({"name": "mssfg", "n_locations": 0}, "n_locations"),
    ({"name": "maxsfg", "n_starts": 0}, "n_starts"),
    ({"name": "sae", "p": 3}, "p"),
    ({"name": "sae", "epsilon": 0.0}, "epsilon"),
    ({"name": "sae", "prior": "vmf", "latent_dim": 1}, "latent_dim"),
    ({"name": "sae", "prior_kappa": -1.0}, "prior_kappa"),
    ({"name": "wae", "gamma": -1.0}, "gamma"),
    ({"name": "wae", "bandwidth": 1.0}, "bandwidth"),
    ({"name": "maxsfg", "kappa": 10.0}, "kappa"),  # max-SFG has no concentration
]


@pytest.mark.parametrize(("values", "field"), BAD, ids=[f"{v['name']}-{f}" for v, f in BAD])
def test_config_rejects_nonsense(values, field):
    with pytest.raises(ValueError, match=field):
        model_config_from_dict(values)


def test_config_defaults():
    c = model_config_from_dict({"name": "prae"})
    assert (c.prior, c.beta, c.n_outer, c.tau, c.n_components) == ("gmm", 0.1, 20, "centred", 10)
    c = model_config_from_dict({"name": "drae"})
    assert (c.prior, c.beta, c.n_projections, c.scale) == ("gmm", 0.1, 50, "mean")
    c = model_config_from_dict({"name": "ssfg"})
    assert (c.kappa, c.n_projections, c.n_iters, c.lr, c.warm_start) == (50.0, 10, 10, 0.1, True)
    assert model_config_from_dict({"name": "mssfg"}).n_locations == 5
    assert model_config_from_dict({"name": "wae"}).scales == (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
    c = model_config_from_dict({"name": "prae", "tau": 0.5})  # YAML number -> float step
    assert c.solver_tau() == 0.5
