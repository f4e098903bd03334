r"""Kullback-Leibler terms of the probabilistic autoencoders (VAE, GMVAE, VampPrior).

The encoder outputs a diagonal Gaussian posterior
:math:`q(z|x_n) = \mathcal{N}(\mu_n, \operatorname{diag}(e^{\ell_n}))` per sample, with
:math:`\ell_n` the log-variances. All functions here return ONE value PER SAMPLE,
shape (N,), summed over the d latent dimensions; reduce over the batch (mean or
sum) in the loss.

- Standard normal prior (VAE), closed form:

  .. math:: KL(q \| \mathcal{N}(0, I)) = \tfrac12 \sum_k (\mu_k^2 + e^{\ell_k} - 1 - \ell_k).

- Two diagonal Gaussians, closed form:

  .. math:: KL(q \| p) = \tfrac12 \sum_k \big(\ell^p_k - \ell^q_k
            + (e^{\ell^q_k} + (\mu^q_k - \mu^p_k)^2) e^{-\ell^p_k} - 1\big).

- Mixture prior :math:`p(z) = \sum_c \pi_c \mathcal{N}(z; m_c, \operatorname{diag}(e^{v_c}))`
  (GMVAE; VampPrior, whose components are the encoder's posteriors at K learnt
  pseudo-inputs): no closed form, so the one-sample Monte Carlo estimate

  .. math:: \widehat{KL} = \log q(z|x) - \log p(z),\quad z = \mu + e^{\ell/2} \odot \varepsilon,

  unbiased for :math:`KL(q \| p)` when z is the reparameterised sample, and
  differentiable in the posterior and prior parameters through z and the densities.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..checks import check_same, check_tensor

__all__ = [
    "kl_standard_normal",
    "kl_diagonal_gaussians",
    "log_prob_diagonal_gaussian",
    "log_prob_gaussian_mixture",
    "kl_monte_carlo",
    "kl_monte_carlo_mixture",
]

_LOG_2PI = math.log(2.0 * math.pi)


def _check_posterior(mu: torch.Tensor, logvar: torch.Tensor, names=("mu", "logvar")) -> None:
    check_tensor(mu, names[0], ndims=(2,))
    check_tensor(logvar, names[1], ndims=(2,))
    check_same(mu, logvar, names)


def _check_params_for(
    z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, names: tuple[str, str, str]
) -> None:
    """``mu``, ``logvar`` of shape (N, d) matching ``z``, or (d,) shared by all samples."""
    zn, mn, ln = names
    check_tensor(mu, mn, ndims=(1, 2))
    check_tensor(logvar, ln, ndims=(1, 2))
    check_same(mu, logvar, (mn, ln))
    check_same(z, mu, (zn, mn), shape=False)
    if mu.shape != z.shape and mu.shape != z.shape[-1:]:
        raise ValueError(
            f"{mn} must have shape {tuple(z.shape)} or {tuple(z.shape[-1:])} to match {zn}, "
            f"got {tuple(mu.shape)}"
        )


def kl_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    r"""Closed-form :math:`KL(\mathcal{N}(\mu, \operatorname{diag} e^{\ell}) \| \mathcal{N}(0, I))`.

    Args:
        mu, logvar: (N, d) posterior means and log-variances.

    Returns:
        (N,): the KL of each sample, summed over the d dimensions (not averaged).
    """
    _check_posterior(mu, logvar)
    return 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar).sum(-1)


def kl_diagonal_gaussians(
    mu_q: torch.Tensor, logvar_q: torch.Tensor, mu_p: torch.Tensor, logvar_p: torch.Tensor
) -> torch.Tensor:
    r"""Closed-form KL(q || p) between diagonal Gaussians (see module docstring).

    Args:
        mu_q, logvar_q: (N, d) parameters of q.
        mu_p, logvar_p: (N, d) parameters of p, or (d,) for one p shared by all rows.

    Returns:
        (N,): summed over the d dimensions.
    """
    _check_posterior(mu_q, logvar_q, ("mu_q", "logvar_q"))
    _check_params_for(mu_q, mu_p, logvar_p, ("mu_q", "mu_p", "logvar_p"))
    ratio = (logvar_q.exp() + (mu_q - mu_p).square()) * torch.exp(-logvar_p)
    return 0.5 * (logvar_p - logvar_q + ratio - 1.0).sum(-1)


def log_prob_diagonal_gaussian(
    z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor
) -> torch.Tensor:
    r""":math:`\log \mathcal{N}(z; \mu, \operatorname{diag} e^{\ell})` per row, shape (N,).

    Args:
        z: (N, d) points.
        mu, logvar: (N, d) (one Gaussian per row) or (d,) (one Gaussian for all rows).
    """
    check_tensor(z, "z", ndims=(2,))
    _check_params_for(z, mu, logvar, ("z", "mu", "logvar"))
    maha = (z - mu).square() * torch.exp(-logvar)
    return -0.5 * (_LOG_2PI + logvar + maha).sum(-1)


def log_prob_gaussian_mixture(
    z: torch.Tensor,
    means: torch.Tensor,
    logvars: torch.Tensor,
    log_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Log-density of a K-component diagonal Gaussian mixture at each row of ``z``.

    .. math:: \log p(z_n) = \operatorname{logsumexp}_c \big(\log \pi_c
              + \log \mathcal{N}(z_n; m_c, \operatorname{diag} e^{v_c})\big)

    Args:
        z: (N, d) points.
        means, logvars: (K, d) component means and log-variances.
        log_weights: (K,) log mixture weights; they are normalised here with
            ``log_softmax``, so unnormalised logits are accepted (and normalised ones
            pass unchanged). ``None``: uniform weights 1/K.

    Returns:
        (N,). Builds an (N, K, d) intermediate: exact differences rather than the
        Gram-matrix expansion, whose cancellation would cost accuracy far from the
        component means.
    """
    check_tensor(z, "z", ndims=(2,))
    check_tensor(means, "means", ndims=(2,))
    check_tensor(logvars, "logvars", ndims=(2,))
    check_same(means, logvars, ("means", "logvars"))
    check_same(z, means, ("z", "means"), shape=False, dims=(1,))
    k = means.shape[0]
    if log_weights is None:
        log_pi = torch.full((k,), -math.log(k), dtype=z.dtype, device=z.device)
    else:
        check_tensor(log_weights, "log_weights", ndims=(1,))
        check_same(means, log_weights, ("means", "log_weights"), shape=False, dims=(0,))
        log_pi = torch.log_softmax(log_weights, dim=0)
    diff = z.unsqueeze(1) - means  # (N, K, d)
    maha = (diff.square() * torch.exp(-logvars)).sum(-1)  # (N, K)
    log_comp = -0.5 * (z.shape[1] * _LOG_2PI + logvars.sum(-1) + maha)
    return torch.logsumexp(log_comp + log_pi, dim=1)


def kl_monte_carlo(
    z: torch.Tensor,
    mu: torch.Tensor,
    logvar: torch.Tensor,
    log_prior: Callable[[torch.Tensor], torch.Tensor] | torch.Tensor,
) -> torch.Tensor:
    r"""One-sample Monte Carlo KL estimate :math:`\log q(z|x) - \log p(z)` per row.

    Args:
        z: (N, d) the reparameterised sample ``mu + exp(logvar / 2) * eps``; pass the
            very tensor the decoder sees, so gradients flow through it.
        mu, logvar: (N, d) posterior parameters.
        log_prior: a callable mapping ``z`` to the (N,) prior log-densities, or those
            (N,) log-densities already computed.

    Returns:
        (N,). Averaged over many draws of z it converges to :math:`KL(q \| p)`; a
        single value can be negative.
    """
    check_tensor(z, "z", ndims=(2,))
    _check_posterior(mu, logvar)
    check_same(z, mu, ("z", "mu"))
    log_p = log_prior(z) if callable(log_prior) else log_prior
    check_tensor(log_p, "log_prior", ndims=(1,))
    check_same(z, log_p, ("z", "log_prior"), shape=False, dims=(0,))
    return log_prob_diagonal_gaussian(z, mu, logvar) - log_p


def kl_monte_carlo_mixture(
    z: torch.Tensor,
    mu: torch.Tensor,
    logvar: torch.Tensor,
    means: torch.Tensor,
    logvars: torch.Tensor,
    log_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """:func:`kl_monte_carlo` against the mixture prior of :func:`log_prob_gaussian_mixture`.

    GMVAE: ``means``, ``logvars`` (K, d) are the learnable prior components.
    VampPrior: they are the encoder's means and log-variances at the K pseudo-inputs
    (uniform weights). Returns (N,).
    """
    return kl_monte_carlo(
        z, mu, logvar, log_prob_gaussian_mixture(z, means, logvars, log_weights)
    )
