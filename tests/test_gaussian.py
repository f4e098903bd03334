"""Closed-form W2 between diagonal Gaussians against POT's Bures-Wasserstein distance."""

import numpy as np
import ot
import pytest
import torch

from otae.discrepancies import gaussian_w2_squared, input_checks, pairwise_gaussian_w2_squared


def gaussians(n, d=4, seed=0, dtype=torch.float64, offset=0.0):
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(n, d, generator=g, dtype=dtype) + offset
    sigma = torch.rand(n, d, generator=g, dtype=dtype) * 2
    return mu, sigma


def bures_squared(mu_a, sigma_a, mu_b, sigma_b):
    """POT's Bures-Wasserstein distance with full (diagonal) covariance matrices, squared."""
    cov = [np.stack([np.diag(s**2) for s in sig.numpy()]) for sig in (sigma_a, sigma_b)]
    return ot.gaussian.bures_wasserstein_distance(mu_a.numpy(), mu_b.numpy(), *cov) ** 2


def test_closed_form_matches_pot_bures_wasserstein():
    mu_a, sigma_a = gaussians(5, seed=1)
    mu_b, sigma_b = gaussians(7, seed=2)
    want = bures_squared(mu_a, sigma_a, mu_b, sigma_b)  # (5, 7)
    got = gaussian_w2_squared(mu_a[:, None], sigma_a[:, None], mu_b[None], sigma_b[None])
    assert got.shape == (5, 7)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-10)
    np.testing.assert_allclose(
        pairwise_gaussian_w2_squared(mu_a, sigma_a, mu_b, sigma_b).numpy(), want, rtol=1e-10
    )


def test_single_pair_by_hand():
    mu1, s1 = torch.tensor([0.0, 1.0]), torch.tensor([1.0, 2.0])
    mu2, s2 = torch.tensor([3.0, -1.0]), torch.tensor([0.5, 0.0])
    # 9 + 4 + 0.25 + 4
    assert gaussian_w2_squared(mu1, s1, mu2, s2).item() == pytest.approx(17.25, rel=1e-7)


def test_zero_std_is_squared_euclidean():
    mu_a, _ = gaussians(6, seed=3)
    mu_b, _ = gaussians(4, seed=4)
    zero_a, zero_b = torch.zeros_like(mu_a), torch.zeros_like(mu_b)
    got = pairwise_gaussian_w2_squared(mu_a, zero_a, mu_b, zero_b)
    want = ((mu_a[:, None] - mu_b[None]) ** 2).sum(-1)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=0)


@pytest.mark.parametrize("offset", [0.0, 1e3])
def test_pairwise_equals_direct_broadcast(offset):
    # The expansion |a|^2 + |b|^2 - 2ab is centred first, so an offset of 1e3 (which
    # would cost ~1e6 * eps absolute error uncentred) does not hurt the relative error.
    mu_a, sigma_a = gaussians(30, d=6, seed=5, offset=offset)
    mu_b, sigma_b = gaussians(20, d=6, seed=6, offset=offset)
    got = pairwise_gaussian_w2_squared(mu_a, sigma_a, mu_b, sigma_b)
    want = ((mu_a[:, None] - mu_b[None]) ** 2).sum(-1) + ((sigma_a[:, None] - sigma_b[None]) ** 2).sum(-1)
    assert got.shape == (30, 20)
    assert ((got - want).abs() / want).max().item() < 1e-10


def test_pairwise_self_is_symmetric_nonnegative_with_zero_diagonal():
    mu, sigma = gaussians(15, seed=7, offset=50.0)
    c = pairwise_gaussian_w2_squared(mu, sigma, mu, sigma)
    assert (c >= 0).all()
    torch.testing.assert_close(c, c.T, rtol=0, atol=1e-12)
    assert c.diagonal().abs().max().item() < 1e-10


def test_broadcasting_over_leading_dims():
    g = torch.Generator().manual_seed(8)
    mu1, s1 = torch.randn(3, 1, 2, 4, generator=g), torch.rand(3, 1, 2, 4, generator=g)
    mu2, s2 = torch.randn(5, 1, 4, generator=g), torch.rand(5, 1, 4, generator=g)
    got = gaussian_w2_squared(mu1, s1, mu2, s2)
    assert got.shape == (3, 5, 2)
    i, j, k = 2, 4, 1
    want = ((mu1[i, 0, k] - mu2[j, 0]) ** 2).sum() + ((s1[i, 0, k] - s2[j, 0]) ** 2).sum()
    assert got[i, j, k].item() == pytest.approx(want.item(), rel=1e-6)


def test_gradcheck():
    mu_a, sigma_a = gaussians(4, d=3, seed=9)
    mu_b, sigma_b = gaussians(3, d=3, seed=10)
    args = [t.clone().requires_grad_(True) for t in (mu_a, sigma_a, mu_b, sigma_b)]
    assert torch.autograd.gradcheck(pairwise_gaussian_w2_squared, args)
    pair = [args[0], args[1], args[2][:1].detach().requires_grad_(True),
            args[3][:1].detach().requires_grad_(True)]
    assert torch.autograd.gradcheck(gaussian_w2_squared, pair)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_follows_input(dtype):
    mu_a, sigma_a = gaussians(5, seed=11, dtype=dtype)
    mu_b, sigma_b = gaussians(4, seed=12, dtype=dtype)
    out = pairwise_gaussian_w2_squared(mu_a, sigma_a, mu_b, sigma_b)
    assert out.dtype == dtype and out.device == mu_a.device
    want = pairwise_gaussian_w2_squared(*(t.double() for t in (mu_a, sigma_a, mu_b, sigma_b)))
    torch.testing.assert_close(out.double(), want, rtol=1e-5 if dtype == torch.float32 else 1e-12,
                               atol=1e-5 if dtype == torch.float32 else 0)
    assert gaussian_w2_squared(mu_a, sigma_a, mu_a, sigma_a).dtype == dtype


def test_bad_input():
    mu, sigma = gaussians(4, d=3)
    other_mu, other_sigma = gaussians(4, d=2)
    with pytest.raises(ValueError, match="mu_a and mu_b"):
        pairwise_gaussian_w2_squared(mu, sigma, other_mu, other_sigma)
    with pytest.raises(ValueError, match="mu_a and sigma_a"):
        pairwise_gaussian_w2_squared(mu, sigma[:, :2], mu, sigma)
    with pytest.raises(ValueError, match="sigma_b must be >= 0"):
        pairwise_gaussian_w2_squared(mu, sigma, mu, -sigma - 1)
    with pytest.raises(ValueError, match="mu_b contains NaN"):
        pairwise_gaussian_w2_squared(mu, sigma, mu * float("nan"), sigma)
    with pytest.raises(ValueError, match="sigma_a contains NaN or Inf"):
        pairwise_gaussian_w2_squared(mu, sigma + float("inf"), mu, sigma)
    with pytest.raises(ValueError, match="mu_a is empty"):
        pairwise_gaussian_w2_squared(mu[:0], sigma[:0], mu, sigma)
    with pytest.raises(ValueError, match="mu_a must be 2-D"):
        pairwise_gaussian_w2_squared(mu[0], sigma[0], mu, sigma)
    with pytest.raises(TypeError, match="mu_b must be a torch.Tensor"):
        pairwise_gaussian_w2_squared(mu, sigma, mu.numpy(), sigma)
    with pytest.raises(TypeError, match="mu_a and mu_b must have the same dtype"):
        pairwise_gaussian_w2_squared(mu, sigma, mu.float(), sigma.float())
    with pytest.raises(ValueError, match="mu1 and mu2 leading dims"):
        gaussian_w2_squared(mu, sigma, mu[:3], sigma[:3])
    with pytest.raises(ValueError, match="mu1 and mu2 must agree along dim -1"):
        gaussian_w2_squared(mu, sigma, other_mu, other_sigma)
    with pytest.raises(ValueError, match="sigma2 must be >= 0"):
        gaussian_w2_squared(mu, sigma, mu, -sigma - 1)
    with pytest.raises(ValueError, match="mu1 must be 1-D"):
        gaussian_w2_squared(torch.tensor(1.0), torch.tensor(1.0), mu, sigma)
    with pytest.raises(TypeError, match="sigma1 must be a floating-point"):
        gaussian_w2_squared(mu, sigma.long(), mu, sigma)
    with input_checks(False):  # the sign check is switched off with the others
        pairwise_gaussian_w2_squared(mu, -sigma, mu, sigma)
