"""β-TCVAE: the minibatch estimators of the KL decomposition, checked against closed forms
and exact identities, and the model built on them.

Statistical checks (codes from known Gaussians) use float64 and a batch of M = 2048. The
codes' law is then known: means ``m ~ N(0, S)`` and posteriors ``N(m, s^2 I)`` make the
aggregate posterior exactly ``N(0, S + s^2 I)``, whose total correlation is
``1/2 (sum_k log C_kk - log det C)``. The posteriors must overlap for the batch mixture
to be a density estimate: with near-point posteriors the batch is a set of spikes and
the estimate is that of a discrete law (~ (d - 1) log M; 6.6 nats measured for d = 3,
s = 0.01, M = 1024, independent codes), so s = 0.5 here.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from otae.discrepancies import kl_standard_normal
from otae.models import build_model, model_config_from_dict
from otae.models.betatcvae import (
    kl_decomposition,
    log_aggregate_densities,
    total_correlation_mws,
)

from .helpers import gen

M = 2048
SIGMA = 0.5


def gaussian_codes(cov: torch.Tensor, seed: int, m: int = M, sigma: float = SIGMA):
    """Codes, posterior means and log-variances for means ~ N(0, cov), posteriors
    N(mean, sigma^2 I), and the aggregate posterior's covariance cov + sigma^2 I."""
    g = gen(seed)
    d = cov.shape[0]
    mean = torch.randn(m, d, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(cov).T
    logvar = torch.full((m, d), 2 * math.log(sigma), dtype=torch.float64)
    z = mean + sigma * torch.randn(m, d, generator=g, dtype=torch.float64)
    return z, mean, logvar, cov + sigma**2 * torch.eye(d, dtype=torch.float64)


def closed_form_tc(cov: torch.Tensor) -> float:
    return float(0.5 * (cov.diagonal().log().sum() - torch.logdet(cov)))


def exact_tc_integrand(z: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    """``log q(z_i) - sum_k log q(z_ik)`` with the exact Gaussian densities."""
    joint = torch.distributions.MultivariateNormal(torch.zeros(cov.shape[0], dtype=cov.dtype), cov)
    marginals = torch.distributions.Normal(0.0, cov.diagonal().sqrt())
    return joint.log_prob(z) - marginals.log_prob(z).sum(1)


# ---------------------------------------------------------------- estimator values
def test_independent_codes_have_no_total_correlation():
    """Independent N(0, I) means: the closed form is 0 and so is the exact integrand at
    every sample, so only the estimator's own error remains. It is the own-sample kernel
    in the joint mixture (weight 1/M, at most ~(2 pi s^2)^{-d/2} / (M q(z)) ~ 0.01 here),
    which biases the estimate up; measured over 8 seeds: 0.008 on average, 0.015 at most."""
    z, mean, logvar, _ = gaussian_codes(torch.eye(3, dtype=torch.float64), seed=0)
    tc = total_correlation_mws(z, mean, logvar, dataset_size=1).mean()
    assert abs(float(tc)) < 0.03


@pytest.mark.parametrize(
    "cov",
    [[[1.0, 0.9], [0.9, 1.0]], [[1.0, 0.7, 0.4], [0.7, 1.0, 0.5], [0.4, 0.5, 1.0]]],
    ids=["2d-rho0.9", "3d"],
)
def test_correlated_codes_approach_the_closed_form(cov):
    """Two errors, bounded separately: the Monte Carlo error of averaging over the batch
    (the exact integrand's own mean, within 4 standard errors of the closed form: SE
    ~0.015 here), and the density estimate's error at the same samples (measured over
    8 seeds: <= 0.001 in 2-d, <= 0.009 in 3-d, where the own-sample bias is larger)."""
    cov = torch.tensor(cov, dtype=torch.float64)
    z, mean, logvar, code_cov = gaussian_codes(cov, seed=1)
    estimate = float(total_correlation_mws(z, mean, logvar, dataset_size=1).mean())
    exact = exact_tc_integrand(z, code_cov)
    standard_error = float(exact.std()) / math.sqrt(M)
    closed = closed_form_tc(code_cov)
    assert closed > 0.25  # a real dependence to find
    assert abs(float(exact.mean()) - closed) < 4 * standard_error
    assert abs(estimate - float(exact.mean())) < 0.03
    assert abs(estimate - closed) < 4 * standard_error + 0.03
    # the stratified estimator with N = M is the same batch mixture
    stratified = kl_decomposition(z, mean, logvar, dataset_size=M, estimator="mss").tc.mean()
    assert float(stratified) == pytest.approx(estimate, abs=1e-10)


def test_dataset_size_only_shifts_mws_by_constants():
    """MWS's 1/(NM): MI + log N, TC + (d - 1) log N, dimKL - d log N, relative to N = 1;
    exact identities (rounding only), so the gradients never depend on N."""
    z, mean, logvar, _ = gaussian_codes(torch.eye(4, dtype=torch.float64), seed=2, m=64)
    one = kl_decomposition(z, mean, logvar, dataset_size=1)
    big = kl_decomposition(z, mean, logvar, dataset_size=60000)
    shift = math.log(60000)
    torch.testing.assert_close(big.mi, one.mi + shift, rtol=0, atol=1e-12)
    torch.testing.assert_close(big.tc, one.tc + 3 * shift, rtol=0, atol=1e-12)
    torch.testing.assert_close(big.dim_kl, one.dim_kl - 4 * shift, rtol=0, atol=1e-12)
    torch.testing.assert_close(total_correlation_mws(z, mean, logvar, 60000), big.tc)


def test_estimators_against_a_brute_force_loop():
    """Both estimators, term by term, against explicit double loops over the batch."""
    g = gen(3)
    m, d, n = 6, 3, 50
    mean = torch.randn(m, d, generator=g, dtype=torch.float64)
    logvar = 0.3 * torch.randn(m, d, generator=g, dtype=torch.float64)
    z = mean + (0.5 * logvar).exp() * torch.randn(m, d, generator=g, dtype=torch.float64)

    def normal(i, j, k):  # N(z_ik; mean_jk, exp(logvar_jk))
        var = math.exp(float(logvar[j, k]))
        return math.exp(-(float(z[i, k] - mean[j, k])) ** 2 / (2 * var)) / math.sqrt(
            2 * math.pi * var)

    for estimator in ("mws", "mss"):
        def weight(i, j, estimator=estimator):
            if estimator == "mws":
                return 1.0 / (n * m)
            return 1.0 / n if i == j else (n - 1) / (n * (m - 1))

        own, joint, marginals = log_aggregate_densities(z, mean, logvar, n, estimator)
        for i in range(m):
            assert float(own[i]) == pytest.approx(
                math.log(math.prod(normal(i, i, k) for k in range(d))), rel=1e-12)
            q = sum(weight(i, j) * math.prod(normal(i, j, k) for k in range(d))
                    for j in range(m))
            assert float(joint[i]) == pytest.approx(math.log(q), rel=1e-12)
            q_k = [sum(weight(i, j) * normal(i, j, k) for j in range(m)) for k in range(d)]
            assert float(marginals[i]) == pytest.approx(sum(map(math.log, q_k)), rel=1e-12)


# ---------------------------------------------------------------- identities
@pytest.mark.parametrize("estimator", ["mws", "mss"])
def test_the_three_terms_sum_to_the_sampled_kl(estimator):
    """MI_i + TC_i + dimKL_i = log q(z_i|x_i) - log p(z_i) on the same samples (the
    estimates telescope), whatever the estimator and N: to float64 rounding."""
    g = gen(4)
    mean = torch.randn(32, 5, generator=g, dtype=torch.float64)
    logvar = torch.randn(32, 5, generator=g, dtype=torch.float64)
    z = mean + (0.5 * logvar).exp() * torch.randn(32, 5, generator=g, dtype=torch.float64)
    terms = kl_decomposition(z, mean, logvar, dataset_size=1000, estimator=estimator)
    posterior = torch.distributions.Normal(mean, (0.5 * logvar).exp())
    prior = torch.distributions.Normal(0.0, 1.0)
    sampled_kl = posterior.log_prob(z).sum(1) - prior.log_prob(z).sum(1)
    torch.testing.assert_close(terms.mi + terms.tc + terms.dim_kl, sampled_kl,
                               rtol=0, atol=1e-12)


def grid_mixture_log_densities(z: torch.Tensor, centres: torch.Tensor, s: float):
    """Exact ``log q(z)`` and ``sum_k log q_k(z_k)`` of the equal mixture of
    ``N(centre_g, s^2 I)`` over the rows of ``centres``."""
    def log_normal(diff):
        return -0.5 * (diff / s) ** 2 - math.log(s * math.sqrt(2 * math.pi))

    diff = z.unsqueeze(1) - centres.unsqueeze(0)  # (M, G, d)
    log_g = math.log(len(centres))
    joint = torch.logsumexp(log_normal(diff).sum(2), dim=1) - log_g
    marginals = (torch.logsumexp(log_normal(diff), dim=1) - log_g).sum(1)
    return joint, marginals


@pytest.mark.parametrize(("estimator", "dataset_size"), [("mws", 1), ("mss", 61236)])
def test_turning_the_code_moves_total_correlation_into_the_dimension_wise_kl(
    estimator, dataset_size
):
    """Two independent factors on a 5 x 5 grid of evenly spaced values, isotropic
    posteriors. Turning the means and the codes together (the same law) leaves each
    sample's MI and TC + dimKL estimates unchanged (exact identities: the joint density
    and the posterior density are rotation invariant). Only the split between TC and
    dimKL moves. The TC of the aligned code is 0 at every sample, and that of the turned
    one is the exact mixture's. The estimates match both, within the batch mixture's
    error (MWS at N = 1: the batch mixture; MSS at N >> M: the mixture of the other
    samples; measured over 8 seeds: <= 0.0031 from either answer)."""
    s, m = 0.3, M
    values = torch.linspace(-1.5, 1.5, 5, dtype=torch.float64)
    centres = torch.cartesian_prod(values, values)
    g = gen(7)
    picks = torch.randint(0, len(centres), (m,), generator=g)
    eps = torch.randn(m, 2, generator=g, dtype=torch.float64)
    a = math.radians(45.0)
    turn = torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]],
                        dtype=torch.float64)
    logvar = torch.full((m, 2), 2 * math.log(s), dtype=torch.float64)
    parts, exact_tc = [], []
    for rotation in (torch.eye(2, dtype=torch.float64), turn):
        turned = centres @ rotation.T
        mean, z = turned[picks], (centres[picks] + s * eps) @ rotation.T
        parts.append(kl_decomposition(z, mean, logvar, dataset_size, estimator))
        joint, marginals = grid_mixture_log_densities(z, turned, s)
        exact_tc.append(joint - marginals)
    aligned, rotated = parts
    torch.testing.assert_close(rotated.mi, aligned.mi, rtol=0, atol=1e-10)
    torch.testing.assert_close(rotated.tc + rotated.dim_kl, aligned.tc + aligned.dim_kl,
                               rtol=0, atol=1e-10)
    assert float(exact_tc[0].abs().max()) < 1e-10  # a factorial code: no dependence
    assert float(exact_tc[1].mean()) > 0.1  # a real dependence to find
    assert float(aligned.tc.mean()) == pytest.approx(0.0, abs=0.01)
    assert float(rotated.tc.mean()) == pytest.approx(float(exact_tc[1].mean()), abs=0.01)


def test_unit_weights_give_the_vae_kl_in_expectation():
    """With weights 1, 1, 1 the regulariser is the one-sample KL estimate, whose mean over
    posterior draws is the VAE's closed-form KL (within 4 standard errors of 4000 draws)."""
    g = gen(5)
    mean = torch.randn(8, 3, generator=g, dtype=torch.float64)
    logvar = 0.5 * torch.randn(8, 3, generator=g, dtype=torch.float64)
    draws = []
    for _ in range(4000):
        z = mean + (0.5 * logvar).exp() * torch.randn(8, 3, generator=g, dtype=torch.float64)
        terms = kl_decomposition(z, mean, logvar, dataset_size=100)
        draws.append(terms.mi + terms.tc + terms.dim_kl)
    draws = torch.stack(draws)
    error = draws.mean(0) - kl_standard_normal(mean, logvar)
    assert (error.abs() < 4 * draws.std(0) / math.sqrt(len(draws))).all(), error


@pytest.mark.parametrize("estimator", ["mws", "mss"])
def test_gradcheck(estimator):
    g = gen(6)
    mean = torch.randn(5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    logvar = (0.3 * torch.randn(5, 3, generator=g, dtype=torch.float64)).requires_grad_()
    z = torch.randn(5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, c: total_correlation_mws(a, b, c, 100),
                                    (z, mean, logvar))
    assert torch.autograd.gradcheck(
        lambda a, b, c: torch.stack(kl_decomposition(a, b, c, 100, estimator)), (z, mean, logvar)
    )


def test_bad_inputs_are_named():
    z = torch.zeros(4, 2)
    with pytest.raises(ValueError, match="dataset_size"):
        total_correlation_mws(z, z, z, 0)
    with pytest.raises(ValueError, match="estimator"):
        kl_decomposition(z, z, z, 10, "iwae")
    with pytest.raises(ValueError, match="logvar"):
        total_correlation_mws(z, z, torch.zeros(4, 3), 10)


# ---------------------------------------------------------------- the model
IMAGE = (1, 8, 8)
N = 16


def make(seed=0, **overrides):
    config = model_config_from_dict(
        {"name": "betatcvae", "latent_dim": 3, "dataset_size": 1000, **overrides})
    torch.manual_seed(seed)
    return build_model(config, IMAGE, "mlp", {"hidden": (32, 16)})


@pytest.fixture(scope="module")
def x():
    return torch.rand(N, *IMAGE, generator=gen(1234))


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("estimator", ["mws", "mss"])
def test_loss_terms_redone_by_hand(x, reduction, estimator):
    model = make(reduction=reduction, estimator=estimator, gamma=2.0, mi_weight=0.5)
    with torch.no_grad():
        terms = model.loss(x, gen(11))
        mean, logvar = model.encoder(x)
        z = mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=gen(11))
        parts = kl_decomposition(z, mean, logvar, 1000, estimator)
        reduce = torch.sum if reduction == "sum" else torch.mean
        mi, tc, dim_kl = (reduce(t) for t in parts)
        sse = (model.decode(z) - x).pow(2).flatten(1).sum(1)
    expected = 0.5 * mi + 6.0 * tc + 1.0 * dim_kl
    torch.testing.assert_close(terms["regulariser"], expected)
    torch.testing.assert_close(terms["reconstruction"], sse.mean())
    torch.testing.assert_close(terms["total"], reduce(sse) + 2.0 * expected)
    for name, value in (("mi", mi), ("tc", tc), ("dim_kl", dim_kl)):
        torch.testing.assert_close(terms[name], value)


def test_unit_weights_regulariser_is_the_sampled_kl(x):
    """The model's regulariser with weights 1, 1, 1: mean_i log q(z_i|x_i) - log p(z_i)."""
    model = make(tc_weight=1.0)
    with torch.no_grad():
        terms = model.loss(x, gen(3))
        mean, logvar = model.encoder(x)
        z = mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=gen(3))
    posterior = torch.distributions.Normal(mean, torch.exp(0.5 * logvar))
    sampled = posterior.log_prob(z).sum(1) - torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(1)
    torch.testing.assert_close(terms["regulariser"], sampled.mean(), rtol=1e-5, atol=1e-5)


def test_training_decreases_the_loss(x):
    model = make()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    totals = []
    for _ in range(40):
        terms = model.loss(x, gen(7))
        optimiser.zero_grad()
        terms["total"].backward()
        optimiser.step()
        totals.append(float(terms["total"].detach()))
    assert sum(totals[-3:]) < 0.9 * sum(totals[:3])


def test_regulariser_gradient_is_its_finite_difference_slope(x):
    """Along the regulariser's own gradient g the central difference has slope |g|^2 (in
    float64, a step of length 1e-4: MWS's value carries constants of ~100 nats, so a step
    sized by the value would not be small)."""
    model = make().double()
    x = x.double()
    state = copy.deepcopy(model.state_dict())
    value = model.loss(x, gen(7))["regulariser"]
    params = list(model.parameters())
    grads = torch.autograd.grad(value, params, allow_unused=True)
    pairs = [(p, g) for p, g in zip(params, grads, strict=True) if g is not None]
    norm2 = sum(float(g.square().sum()) for _, g in pairs)
    eta = 1e-4 / math.sqrt(norm2)

    def moved(t):
        model.load_state_dict(state)
        with torch.no_grad():
            for p, g in pairs:
                p.add_(t * eta * g)
            return float(model.loss(x, gen(7))["regulariser"])

    up, down = moved(1.0), moved(-1.0)
    assert (up - down) / (2 * eta) == pytest.approx(norm2, rel=1e-4)


def test_same_generator_same_loss(x):
    model = make()
    first, second = model.loss(x, gen(5)), model.loss(x, gen(5))
    for name in first:
        assert torch.equal(first[name], second[name]), name
    assert not torch.equal(first["regulariser"], model.loss(x, gen(6))["regulariser"])


def test_config_defaults_and_validation():
    c = model_config_from_dict({"name": "betatcvae"})
    assert (c.mi_weight, c.tc_weight, c.dim_kl_weight) == (1.0, 6.0, 1.0)
    assert (c.dataset_size, c.estimator, c.prior, c.gamma) == (60000, "mws", "normal", 1.0)
    for bad, field in (({"tc_weight": -1.0}, "tc_weight"), ({"dataset_size": 0}, "dataset_size"),
                       ({"estimator": "iwae"}, "estimator"), ({"prior": "gmm"}, "prior")):
        with pytest.raises(ValueError, match=field):
            model_config_from_dict({"name": "betatcvae", **bad})
