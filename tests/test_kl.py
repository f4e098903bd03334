"""KL terms: closed forms and log-densities against torch.distributions, MC against analytic."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import (
    Categorical,
    Independent,
    MixtureSameFamily,
    Normal,
    kl_divergence,
)

from otae.discrepancies.kl import (
    kl_diagonal_gaussians,
    kl_monte_carlo,
    kl_monte_carlo_mixture,
    kl_standard_normal,
    log_prob_diagonal_gaussian,
    log_prob_gaussian_mixture,
)


def _params(n=5, d=3, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(n, d, generator=g, dtype=dtype)
    logvar = 0.8 * torch.randn(n, d, generator=g, dtype=dtype)
    return mu, logvar


def _diag_normal(mu, logvar):
    return Independent(Normal(mu, torch.exp(0.5 * logvar)), 1)


def _mixture(means, logvars, logits):
    return MixtureSameFamily(Categorical(logits=logits), _diag_normal(means, logvars))


def test_kl_standard_normal_vs_torch():
    mu, logvar = _params()
    got = kl_standard_normal(mu, logvar)
    want = kl_divergence(_diag_normal(mu, logvar),
                         _diag_normal(torch.zeros_like(mu), torch.zeros_like(logvar)))
    assert got.shape == (5,)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    # Zero exactly at the prior itself.
    assert torch.all(kl_standard_normal(torch.zeros(2, 3), torch.zeros(2, 3)) == 0)


@pytest.mark.parametrize("shared_p", [False, True])
def test_kl_diagonal_gaussians_vs_torch(shared_p):
    mu_q, lv_q = _params(seed=1)
    mu_p, lv_p = _params(seed=2)
    if shared_p:
        mu_p, lv_p = mu_p[0], lv_p[0]
    got = kl_diagonal_gaussians(mu_q, lv_q, mu_p, lv_p)
    want = kl_divergence(_diag_normal(mu_q, lv_q),
                         _diag_normal(mu_p.expand_as(mu_q), lv_p.expand_as(lv_q)))
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    # Against N(0, I) it reduces to kl_standard_normal.
    torch.testing.assert_close(
        kl_diagonal_gaussians(mu_q, lv_q, torch.zeros(3, dtype=mu_q.dtype),
                              torch.zeros(3, dtype=mu_q.dtype)),
        kl_standard_normal(mu_q, lv_q), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shared", [False, True])
def test_log_prob_diagonal_gaussian_vs_torch(shared):
    mu, logvar = _params(seed=3)
    z, _ = _params(seed=4)
    if shared:
        mu, logvar = mu[1], logvar[1]
    got = log_prob_diagonal_gaussian(z, mu, logvar)
    want = _diag_normal(mu, logvar).log_prob(z)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("weights", ["uniform", "logits", "normalised"])
def test_mixture_log_prob_vs_torch(weights):
    g = torch.Generator().manual_seed(5)
    k, d, n = 4, 3, 7
    means = 2.0 * torch.randn(k, d, generator=g, dtype=torch.float64)
    logvars = 0.5 * torch.randn(k, d, generator=g, dtype=torch.float64)
    z = 3.0 * torch.randn(n, d, generator=g, dtype=torch.float64)
    logits = torch.randn(k, generator=g, dtype=torch.float64)
    if weights == "uniform":
        got = log_prob_gaussian_mixture(z, means, logvars)
        logits = torch.zeros(k, dtype=torch.float64)
    elif weights == "logits":
        got = log_prob_gaussian_mixture(z, means, logvars, logits)
    else:
        got = log_prob_gaussian_mixture(z, means, logvars, torch.log_softmax(logits, 0))
    want = _mixture(means, logvars, logits).log_prob(z)
    assert got.shape == (n,)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_mixture_log_prob_far_tail_is_finite():
    # logsumexp: points hundreds of standard deviations away still give finite values.
    means = torch.tensor([[0.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    logvars = torch.full((2, 2), -4.0, dtype=torch.float64)
    z = torch.tensor([[300.0, -200.0]], dtype=torch.float64)
    got = log_prob_gaussian_mixture(z, means, logvars)
    want = _mixture(means, logvars, torch.zeros(2, dtype=torch.float64)).log_prob(z)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-9)


def test_monte_carlo_kl_converges_to_analytic():
    # Average of the one-sample estimate over S reparameterised draws vs closed form,
    # within 5 standard errors (fixed generator: deterministic).
    mu, logvar = _params(n=4, d=3, seed=6)
    g = torch.Generator().manual_seed(7)
    s = 4000
    eps = torch.randn(s, *mu.shape, generator=g, dtype=mu.dtype)
    z = (mu + torch.exp(0.5 * logvar) * eps).reshape(-1, 3)
    mu_r, lv_r = mu.repeat(s, 1), logvar.repeat(s, 1)

    def log_prior(t):
        return log_prob_diagonal_gaussian(t, torch.zeros(3, dtype=t.dtype),
                                          torch.zeros(3, dtype=t.dtype))

    est = kl_monte_carlo(z, mu_r, lv_r, log_prior).reshape(s, 4)
    se = est.std(0) / math.sqrt(s)
    err = (est.mean(0) - kl_standard_normal(mu, logvar)).abs()
    assert torch.all(err < 5.0 * se), (err, se)
    # Passing precomputed prior log-densities gives the same values.
    torch.testing.assert_close(kl_monte_carlo(z, mu_r, lv_r, log_prior(z)), est.reshape(-1))
    # A one-component mixture prior is the same Gaussian: identical estimates.
    torch.testing.assert_close(
        kl_monte_carlo_mixture(z, mu_r, lv_r, torch.zeros(1, 3, dtype=z.dtype),
                               torch.zeros(1, 3, dtype=z.dtype)),
        est.reshape(-1), rtol=1e-12, atol=1e-12)


def test_monte_carlo_mixture_vs_torch():
    mu, logvar = _params(n=6, d=2, seed=8)
    g = torch.Generator().manual_seed(9)
    z = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=g, dtype=mu.dtype)
    means = torch.randn(3, 2, generator=g, dtype=mu.dtype)
    logvars = 0.3 * torch.randn(3, 2, generator=g, dtype=mu.dtype)
    logits = torch.randn(3, generator=g, dtype=mu.dtype)
    got = kl_monte_carlo_mixture(z, mu, logvar, means, logvars, logits)
    want = _diag_normal(mu, logvar).log_prob(z) - _mixture(means, logvars, logits).log_prob(z)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_gradcheck():
    mu, logvar = _params(n=3, d=2, seed=10)
    mu_p, lv_p = _params(n=3, d=2, seed=11)
    z, _ = _params(n=3, d=2, seed=12)
    means, logvars = _params(n=4, d=2, seed=13)
    logits = torch.randn(4, dtype=torch.float64)
    for t in (mu, logvar, mu_p, lv_p, z, means, logvars, logits):
        t.requires_grad_(True)
    gc = torch.autograd.gradcheck
    assert gc(kl_standard_normal, (mu, logvar))
    assert gc(kl_diagonal_gaussians, (mu, logvar, mu_p, lv_p))
    assert gc(log_prob_diagonal_gaussian, (z, mu, logvar))
    assert gc(log_prob_gaussian_mixture, (z, means, logvars, logits))

    def reparam_kl(m, lv, mm, lvs, lw):
        # Gradient also flows through the reparameterised sample.
        zz = m + torch.exp(0.5 * lv) * torch.linspace(-1, 1, 6, dtype=m.dtype).reshape(3, 2)
        return kl_monte_carlo_mixture(zz, m, lv, mm, lvs, lw)

    assert gc(reparam_kl, (mu, logvar, means, logvars, logits))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_follows_input(dtype):
    mu, logvar = _params(dtype=dtype)
    means, logvars = _params(n=2, dtype=dtype)
    outs = [
        kl_standard_normal(mu, logvar),
        kl_diagonal_gaussians(mu, logvar, mu.flip(0), logvar.flip(0)),
        log_prob_diagonal_gaussian(mu, mu, logvar),
        log_prob_gaussian_mixture(mu, means, logvars),
        kl_monte_carlo_mixture(mu, mu, logvar, means, logvars),
    ]
    for out in outs:
        assert out.dtype == dtype and out.shape == (5,)
    ref = kl_standard_normal(mu.double(), logvar.double())
    torch.testing.assert_close(outs[0].double(), ref,
                               rtol=1e-5 if dtype == torch.float32 else 1e-12, atol=1e-6)


_m = torch.zeros(4, 3)
_nan = torch.tensor([[0.0, float("nan"), 0.0]]).expand(4, 3)


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: kl_standard_normal(_m, torch.zeros(4, 2)), ValueError, "mu and logvar"),
        (lambda: kl_standard_normal(_m, torch.zeros(4, 3, dtype=torch.float64)), TypeError,
         "dtype"),
        (lambda: kl_standard_normal(torch.zeros(3), torch.zeros(3)), ValueError, "mu must be 2-D"),
        (lambda: kl_standard_normal(_m, _nan), ValueError, "logvar contains NaN"),
        (lambda: kl_standard_normal(torch.empty(0, 3), torch.empty(0, 3)), ValueError,
         "mu is empty"),
        (lambda: kl_diagonal_gaussians(_m, _m, torch.zeros(2), torch.zeros(2)), ValueError,
         "mu_p must have shape"),
        (lambda: kl_diagonal_gaussians(_m, _m, _m, torch.zeros(3)), ValueError,
         "mu_p and logvar_p"),
        (lambda: log_prob_diagonal_gaussian(_m, _m, torch.full((4, 3), float("inf"))),
         ValueError, "logvar contains NaN or Inf"),
        (lambda: log_prob_gaussian_mixture(_m, torch.zeros(2, 2), torch.zeros(2, 2)),
         ValueError, "z and means"),
        (lambda: log_prob_gaussian_mixture(_m, torch.zeros(2, 3), torch.zeros(3, 3)),
         ValueError, "means and logvars"),
        (lambda: log_prob_gaussian_mixture(_m, torch.zeros(2, 3), torch.zeros(2, 3),
                                           torch.zeros(3)), ValueError, "log_weights"),
        (lambda: log_prob_gaussian_mixture(_m, torch.zeros(2, 3), torch.zeros(2, 3),
                                           torch.zeros(2, 1)), ValueError, "log_weights must"),
        (lambda: log_prob_gaussian_mixture(_m.int(), torch.zeros(2, 3), torch.zeros(2, 3)),
         TypeError, "z must be a floating"),
        (lambda: kl_monte_carlo(_m, _m, _m, torch.zeros(3)), ValueError, "log_prior"),
        (lambda: kl_monte_carlo(torch.zeros(5, 3), _m, _m, torch.zeros(5)), ValueError,
         "z and mu"),
        (lambda: kl_monte_carlo(_nan, _m, _m, torch.zeros(4)), ValueError, "z contains NaN"),
    ],
)
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
