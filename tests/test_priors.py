"""Priors: GMM, VampPrior, uniform and vMF-mixture priors on the sphere (values, not shapes)."""

import math

import pytest
import torch
from scipy import integrate

from otae.nn import MLPEncoder
from otae.priors import (
    PRIORS,
    GaussianMixturePrior,
    SphereUniformPrior,
    VampPrior,
    VonMisesFisherMixturePrior,
    build_prior,
)
from otae.priors.sphere import log_sphere_area, vmf_log_normaliser
from otae.sphere import vmf_mean_resultant_length

from .helpers import gen

F64 = torch.float64


def test_registry_keeps_existing_and_adds_sphere_priors():
    assert {"normal", "gmm", "sphere_uniform", "vmf"} <= set(PRIORS)
    assert isinstance(build_prior("sphere_uniform", 4), SphereUniformPrior)
    prior = build_prior("vmf", 4, 3, generator=gen(0), kappa=7.0, learnable=False)
    assert isinstance(prior, VonMisesFisherMixturePrior) and prior.kappa == 7.0
    assert "vampprior" not in PRIORS  # needs an encoder and the image shape


# ------------------------------------------------------------------ GMM
def gmm(d=3, k=4, seed=0):
    prior = GaussianMixturePrior(d, k, generator=gen(seed))
    with torch.no_grad():
        prior.means.mul_(5.0)  # well separated
        prior.logvars.copy_(torch.linspace(-1.0, 0.5, k * d).reshape(k, d))
    return prior


@pytest.mark.parametrize("k", [0, 3])
def test_gmm_sample_component_lands_near_its_mean(k):
    prior, n = gmm(), 4000
    with torch.no_grad():
        samples = prior.sample_component(k, n, gen(1))
        bound = 5.0 * prior.stds[k] / math.sqrt(n)
        assert ((samples.mean(0) - prior.means[k]).abs() < bound).all()
        torch.testing.assert_close(samples.std(0), prior.stds[k], rtol=0.06, atol=0.0)


@pytest.mark.parametrize("n", [12, 14])
def test_gmm_sampling_is_stratified(n):
    prior = gmm()
    labels = prior.component_labels(n)
    counts = torch.bincount(labels, minlength=4).tolist()
    assert counts == [n // 4 + (1 if i < n % 4 else 0) for i in range(4)]
    with torch.no_grad():
        samples = prior.sample(n, gen(2))
        eps = torch.randn(n, 3, generator=gen(2))
        torch.testing.assert_close(samples, prior.means[labels] + prior.stds[labels] * eps)
        # Every row is nearest to its own component's mean (they are 5 sigma apart).
        nearest = torch.cdist(samples, prior.means).argmin(1)
    assert (nearest == labels).float().mean() > 0.9


# ------------------------------------------------------------------ VampPrior
@pytest.fixture(scope="module")
def vamp():
    torch.manual_seed(0)
    encoder = MLPEncoder((1, 4, 4), 2, probabilistic=True, hidden=(16,))
    prior = VampPrior(2, 3, (1, 4, 4), generator=gen(3)).bind(encoder)
    return prior, encoder


def test_vamp_log_prob_is_the_mixture_of_posteriors(vamp):
    prior, encoder = vamp
    z = torch.randn(7, 2, generator=gen(4))
    with torch.no_grad():
        got = prior.log_prob(z)
        means, logvars = encoder(prior.pseudo_inputs)
        expected = torch.empty(7)
        for i in range(7):
            density = 0.0
            for k in range(3):
                normal = torch.distributions.Normal(means[k], torch.exp(0.5 * logvars[k]))
                density += normal.log_prob(z[i]).sum().exp() / 3
            expected[i] = torch.log(density)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_vamp_sample_component_mean_is_the_encoder_mean(vamp):
    prior, encoder = vamp
    n = 4000
    with torch.no_grad():
        mean, logvar = encoder(prior.pseudo_inputs[1:2])
        samples = prior.sample_component(1, n, gen(5))
        std = torch.exp(0.5 * logvar[0])
        assert ((samples.mean(0) - mean[0]).abs() < 5 * std / math.sqrt(n)).all()
        torch.testing.assert_close(samples.std(0), std, rtol=0.06, atol=0.0)
        gm, gs = prior.gaussian_components()
        torch.testing.assert_close(gm[1], mean[0])
        torch.testing.assert_close(gs[1], std)


def test_vamp_sampling_is_stratified_and_reparameterised(vamp):
    prior, encoder = vamp
    labels = prior.component_labels(8)
    assert torch.bincount(labels).tolist() == [3, 3, 2]
    samples = prior.sample(8, gen(6))
    with torch.no_grad():
        means, logvars = encoder(prior.pseudo_inputs)
        eps = torch.randn(8, 2, generator=gen(6))
        torch.testing.assert_close(
            samples.detach(), means[labels] + torch.exp(0.5 * logvars[labels]) * eps
        )
    samples.square().sum().backward()
    assert prior.pseudo_inputs.grad.abs().sum() > 0
    assert encoder.mean_head.weight.grad.abs().sum() > 0
    prior.zero_grad()
    encoder.zero_grad()


def test_vamp_state_dict_holds_only_pseudo_inputs(vamp):
    prior, _ = vamp
    assert set(prior.state_dict()) == {"pseudo_inputs"}
    assert [name for name, _ in prior.named_parameters()] == ["pseudo_inputs"]


def test_vamp_bind_checks_the_encoder():
    prior = VampPrior(2, 3, (1, 4, 4), generator=gen(0))
    with pytest.raises(RuntimeError, match="bind"):
        prior.sample(3)
    with pytest.raises(ValueError, match="probabilistic"):
        prior.bind(MLPEncoder((1, 4, 4), 2, probabilistic=False, hidden=(8,)))
    with pytest.raises(ValueError, match="latent"):
        prior.bind(MLPEncoder((1, 4, 4), 3, probabilistic=True, hidden=(8,)))
    with pytest.raises(ValueError, match="image shape"):
        prior.bind(MLPEncoder((1, 5, 5), 2, probabilistic=True, hidden=(8,)))
    with pytest.raises(ValueError, match="component"):
        prior.sample_component(3, 2)


# ------------------------------------------------------------------ sphere priors
def test_sphere_uniform_samples():
    prior, n, d = SphereUniformPrior(5), 20000, 5
    samples = prior.sample(n, gen(0))
    torch.testing.assert_close(samples.norm(dim=-1), torch.ones(n))
    # Uniform on S^{d-1}: mean 0, E[z z^T] = I / d.
    assert samples.mean(0).abs().max() < 5 / math.sqrt(d * n)
    second = samples.T @ samples / n
    torch.testing.assert_close(second, torch.eye(d) / d, atol=0.01, rtol=0.0)
    assert torch.equal(samples, prior.sample(n, gen(0)))
    torch.testing.assert_close(prior.component_means(), torch.zeros(1, d))
    torch.testing.assert_close(prior.log_prob(samples[:3]), torch.full((3,), -log_sphere_area(d)))


def test_sphere_area():
    assert log_sphere_area(2) == pytest.approx(math.log(2 * math.pi))
    assert log_sphere_area(3) == pytest.approx(math.log(4 * math.pi))


@pytest.mark.parametrize(("d", "kappa"), [(3, 10.0), (8, 20.0)])
def test_vmf_component_mean_direction(d, kappa):
    prior, n = VonMisesFisherMixturePrior(d, 3, kappa=kappa, generator=gen(1)), 6000
    with torch.no_grad():
        samples = prior.sample_component(2, n, gen(2))
        torch.testing.assert_close(samples.norm(dim=-1), torch.ones(n))
        loc = prior.component_means()[2]
        length = vmf_mean_resultant_length(kappa, d)
        # E[theta] = A_d(kappa) * loc; each coordinate has variance <= 1 - A^2.
        bound = 5 * math.sqrt(1 - length**2) / math.sqrt(n)
        assert (samples.mean(0) - length * loc).abs().max() < bound
    torch.testing.assert_close(loc.norm(), torch.tensor(1.0))


def test_vmf_sampling_is_stratified_and_reparameterised():
    prior = VonMisesFisherMixturePrior(4, 3, kappa=50.0, generator=gen(3))
    n = 13
    labels = prior.component_labels(n)
    assert torch.bincount(labels).tolist() == [5, 4, 4]
    samples = prior.sample(n, gen(4))
    torch.testing.assert_close(samples.detach().norm(dim=-1), torch.ones(n))
    # With kappa = 50 every sample is close to its own component's location.
    cosines = (samples.detach() @ prior.component_means().T).argmax(1)
    assert torch.equal(cosines, labels)
    samples.sum().backward()
    assert prior.locations.grad.abs().sum() > 0
    assert torch.equal(prior.sample(n, gen(4)), samples.detach())


def test_vmf_log_normaliser_closed_forms():
    kappa = 3.0
    # d = 2: the von Mises density exp(k cos) / (2 pi I_0(k)).
    assert vmf_log_normaliser(kappa, 2) == pytest.approx(
        -math.log(2 * math.pi * float(torch.special.i0(torch.tensor(kappa, dtype=F64))))
    )
    # d = 3: k / (4 pi sinh k).
    expected3 = math.log(kappa / (4 * math.pi * math.sinh(kappa)))
    assert vmf_log_normaliser(kappa, 3) == pytest.approx(expected3)
    assert vmf_log_normaliser(0.0, 3) == pytest.approx(-math.log(4 * math.pi))
    # Large d, small kappa: scipy's scaled Bessel underflows, the series takes over and
    # tends to the uniform density.
    assert vmf_log_normaliser(1e-6, 600) == pytest.approx(-log_sphere_area(600), abs=1e-6)


def test_vmf_mixture_density_integrates_to_one_on_the_circle():
    prior = VonMisesFisherMixturePrior(2, 3, kappa=4.0, generator=gen(5))

    def density(angle):
        z = torch.tensor([[math.cos(angle), math.sin(angle)]])
        return float(prior.log_prob(z).exp())

    with torch.no_grad():
        total, _ = integrate.quad(density, 0.0, 2 * math.pi, limit=200)
    assert total == pytest.approx(1.0, abs=1e-6)


def test_vmf_normalise_and_validation():
    prior = VonMisesFisherMixturePrior(3, 2, generator=gen(0))
    with torch.no_grad():
        prior.locations.mul_(3.0)
    prior.normalise_()
    torch.testing.assert_close(prior.locations.norm(dim=-1), torch.ones(2))
    with pytest.raises(ValueError, match="latent_dim"):
        VonMisesFisherMixturePrior(1, 2)
    with pytest.raises(ValueError, match="latent_dim"):
        SphereUniformPrior(1)
    with pytest.raises(ValueError, match="kappa"):
        VonMisesFisherMixturePrior(3, 2, kappa=-1.0)
