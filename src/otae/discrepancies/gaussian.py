r"""Closed-form squared 2-Wasserstein distance between diagonal Gaussians.

For :math:`p = \mathcal{N}(\mu_1, \operatorname{diag}(\sigma_1^2))` and
:math:`q = \mathcal{N}(\mu_2, \operatorname{diag}(\sigma_2^2))` (RAE paper, eq. 10),

.. math::

    W_2^2(p, q) = \lVert \mu_1 - \mu_2 \rVert_2^2 + \lVert \sigma_1 - \sigma_2 \rVert_2^2,

with :math:`\sigma` the standard deviations (not variances). This is the Bures-Wasserstein
formula :math:`\lVert \mu_1-\mu_2 \rVert^2 + \operatorname{tr}(\Sigma_1 + \Sigma_2
- 2 (\Sigma_1^{1/2} \Sigma_2 \Sigma_1^{1/2})^{1/2})` for commuting covariances. It is the
squared Euclidean distance between the stacked vectors :math:`(\mu, \sigma) \in
\mathbb{R}^{2d}`, which is how the pairwise matrix is computed.
"""

from __future__ import annotations

import torch

from ..checks import check_same, check_tensor, checks_enabled
from ._pairwise import pairwise_sqeuclidean

__all__ = [
    "gaussian_w2_squared",
    "joint_gaussian_w2_squared",
    "pairwise_gaussian_w2_squared",
    "pairwise_sqeuclidean",
]


def _check_std(sigma: torch.Tensor, name: str) -> None:
    if checks_enabled() and bool((sigma < 0).any()):
        raise ValueError(f"{name} must be >= 0 (standard deviations), got a negative entry")


def check_gaussians(mu: torch.Tensor, sigma: torch.Tensor, names: tuple[str, str],
                    ndims: tuple[int, ...]) -> None:
    """Validate one family of diagonal Gaussians: means and std devs of equal shape."""
    check_tensor(mu, names[0], ndims=ndims)
    check_tensor(sigma, names[1], ndims=ndims)
    check_same(mu, sigma, names)
    _check_std(sigma, names[1])


def gaussian_w2_squared(
    mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor
) -> torch.Tensor:
    r"""Squared 2-Wasserstein distance between diagonal Gaussians, elementwise over batches.

    Args:
        mu1, sigma1: means and standard deviations (>= 0) of shape (..., d).
        mu2, sigma2: the same for the second family, shape (..., d); the leading dims of
            the two families broadcast against each other.

    Returns:
        Shape: the broadcast of the leading dims; dtype and device of ``mu1``.
        Differentiable in all four arguments.
    """
    for mu, sigma, names in ((mu1, sigma1, ("mu1", "sigma1")), (mu2, sigma2, ("mu2", "sigma2"))):
        nd = mu.ndim if isinstance(mu, torch.Tensor) and mu.ndim > 0 else 1
        check_gaussians(mu, sigma, names, ndims=(nd,))
    check_same(mu1, mu2, ("mu1", "mu2"), shape=False, dims=(-1,))
    try:
        torch.broadcast_shapes(mu1.shape, mu2.shape)
    except RuntimeError as err:
        raise ValueError(
            f"mu1 and mu2 leading dims do not broadcast: {tuple(mu1.shape)} and {tuple(mu2.shape)}"
        ) from err
    return (mu1 - mu2).square().sum(-1) + (sigma1 - sigma2).square().sum(-1)


def pairwise_gaussian_w2_squared(
    mu_a: torch.Tensor, sigma_a: torch.Tensor, mu_b: torch.Tensor, sigma_b: torch.Tensor
) -> torch.Tensor:
    r"""Matrix of squared 2-Wasserstein distances between two families of diagonal Gaussians.

    Args:
        mu_a, sigma_a: means and standard deviations (>= 0) of N Gaussians, shape (N, d).
        mu_b, sigma_b: the same for K Gaussians, shape (K, d).

    Returns:
        (N, K) matrix ``C[i, j] = W_2^2(a_i, b_j)``, dtype and device of ``mu_a``. Computed
        as squared Euclidean distances between the stacked (N, 2d) and (K, 2d) vectors
        ``[mu, sigma]`` by the centred expansion of :func:`pairwise_sqeuclidean`: O(N K + (N + K) d)
        memory. In float64 it matches the direct broadcast to ~1e-13 relative on data of
        unit spread; in float32 the absolute error is ~1e-7 times the squared spread.
    """
    check_gaussians(mu_a, sigma_a, ("mu_a", "sigma_a"), ndims=(2,))
    check_gaussians(mu_b, sigma_b, ("mu_b", "sigma_b"), ndims=(2,))
    check_same(mu_a, mu_b, ("mu_a", "mu_b"), shape=False, dims=(1,))
    return pairwise_sqeuclidean(torch.cat((mu_a, sigma_a), 1), torch.cat((mu_b, sigma_b), 1))


def joint_gaussian_w2_squared(
    mu_p: torch.Tensor, sigma_p: torch.Tensor, mu_q: torch.Tensor, sigma_q: torch.Tensor
) -> torch.Tensor:
    r"""Squared 2-Wasserstein distances between all N + K Gaussians of two families.

    Args:
        mu_p, sigma_p: means and standard deviations (>= 0) of N Gaussians, shape (N, d).
        mu_q, sigma_q: the same for K Gaussians, shape (K, d).

    Returns:
        (N + K, N + K) symmetric matrix :math:`D` with zero diagonal, dtype and device of
        ``mu_p``; its blocks ``D[:N, N:]``, ``D[:N, :N]``, ``D[N:, N:]`` are the three cost
        matrices of hierarchical FGW. One Gram matrix :math:`G = Z Z^\top` of the stacked
        vectors :math:`Z = [\mu, \sigma] - \bar z` (centred on their mean, see
        :func:`pairwise_sqeuclidean` for why), :math:`D = g 1^\top + 1 g^\top - 2 G` with
        :math:`g = \operatorname{diag} G` (so the diagonal is exactly 0), clamped at 0:
        six operations where three :func:`pairwise_gaussian_w2_squared` take about forty.
    """
    check_gaussians(mu_p, sigma_p, ("mu_p", "sigma_p"), ndims=(2,))
    check_gaussians(mu_q, sigma_q, ("mu_q", "sigma_q"), ndims=(2,))
    check_same(mu_p, mu_q, ("mu_p", "mu_q"), shape=False, dims=(1,))
    z = torch.cat((torch.cat((mu_p, sigma_p), 1), torch.cat((mu_q, sigma_q), 1)))
    z = z - z.detach().mean(0)
    gram = z @ z.T
    sq = gram.diagonal()
    return torch.add(sq.unsqueeze(1) + sq, gram, alpha=-2.0).clamp_min(0.0)
