"""Learnable implicit meta-priors of GWAE (Nakagawa et al., ICLR 2023; spec §3).

GWAE only ever *samples* its prior (the relational GW term and the W-bound critic
work from samples), so the prior can be any reparameterised pushforward
``z = g(eps)`` of fixed noise ``eps``; restricting the family of ``g`` is how a
meta-prior is imposed:

* :class:`NeuralSamplerPrior`: ``g`` is an MLP from ``N(0, I_m)`` to ``R^d``
  (the unrestricted "neural sampler");
* :class:`FactorisedPrior`: ``g`` acts coordinate-wise, ``z_k = g_k(eps_k)`` with
  ``eps ~ N(0, I_d)``, so the coordinates of ``z`` are independent by
  construction (the disentanglement meta-prior);
* the clustering meta-prior is the existing learnable
  :class:`~otae.priors.gaussian.GaussianMixturePrior`.

Both classes here are one-component priors without a tractable density:
``log_prob`` and ``gaussian_components`` raise, and :meth:`component_means`
returns the ``(1, d)`` mean of a fixed number of samples drawn with a fixed seed
(for the latent plots). Initial weights are drawn with the ``generator`` given to
the constructor, so a prior is reproducible from a seed alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .. import noise
from .base import Prior

#: samples used by :meth:`_ImplicitPrior.component_means`, and the seed they are drawn with
MEAN_SAMPLES = 4096
MEAN_SEED = 0


def _uniform(shape: Sequence[int], bound: float, generator: torch.Generator | None) -> Tensor:
    return (2.0 * torch.rand(*shape, generator=generator) - 1.0) * bound


def _inverse_softplus(y: float) -> float:
    return y + math.log(-math.expm1(-y))


class _ImplicitPrior(Prior):
    """A one-component pushforward ``z = transform(eps)`` of ``eps ~ N(0, I_noise_dim)``."""

    noise_dim: int

    def transform(self, eps: Tensor) -> Tensor:
        """The pushforward ``g``: ``(n, noise_dim)`` noise to ``(n, latent_dim)`` codes."""
        raise NotImplementedError

    def sample(self, n: int, generator: noise.Generatorish = None) -> Tensor:
        return self.transform(self._noise(n, generator, self.noise_dim))

    def component_means(self) -> Tensor:
        """``(1, d)``: mean of :data:`MEAN_SAMPLES` samples drawn with seed :data:`MEAN_SEED`.

        Deterministic for fixed parameters; computed without gradient (plots only).
        """
        generator = torch.Generator(device=self._device()).manual_seed(MEAN_SEED)
        with torch.no_grad():
            return self.sample(MEAN_SAMPLES, generator).mean(0, keepdim=True)


class NeuralSamplerPrior(_ImplicitPrior):
    """``z = g(eps)``, ``eps ~ N(0, I_m)``, ``g`` an MLP with ``hidden`` LeakyReLU(0.2) layers.

    ``noise_dim`` (``m``) defaults to ``latent_dim``. Layers are initialised like
    ``nn.Linear`` (uniform in ``±1/sqrt(fan_in)``) but drawn with ``generator``; then
    the last layer is rescaled so that every coordinate has mean 0 and standard
    deviation 1 on :data:`MEAN_SAMPLES` noise draws of seed :data:`MEAN_SEED`: the
    sampler starts at the scale of ``N(0, I)``, like :class:`FactorisedPrior`. (A
    default-initialised MLP of this shape starts at a standard deviation of about
    0.09, a prior ten times narrower than the posteriors' initial noise; GWAE's
    critic then spends its first epochs shrinking the posteriors, and a comparison of
    meta-priors would measure the initial scale rather than the family.)
    """

    def __init__(
        self,
        latent_dim: int,
        hidden: Sequence[int] = (128, 128),
        *,
        noise_dim: int | None = None,
        negative_slope: float = 0.2,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(latent_dim, 1)
        self.noise_dim = int(noise_dim) if noise_dim is not None else self.latent_dim
        widths = [self.noise_dim, *(int(h) for h in hidden), self.latent_dim]
        if min(widths) < 1:
            raise ValueError(f"noise_dim and hidden sizes must be >= 1, got {widths}")
        layers: list[nn.Module] = []
        for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            linear = nn.Linear(fan_in, fan_out)
            bound = 1.0 / math.sqrt(fan_in)
            with torch.no_grad():
                linear.weight.copy_(_uniform((fan_out, fan_in), bound, generator))
                linear.bias.copy_(_uniform((fan_out,), bound, generator))
            layers.append(linear)
            if i < len(widths) - 2:
                layers.append(nn.LeakyReLU(negative_slope))
        self.net = nn.Sequential(*layers)
        self._standardise_output(layers[-1])

    def _standardise_output(self, last: nn.Linear) -> None:
        """Rescale ``last`` so the initial samples have mean 0 and std 1 per coordinate."""
        generator = torch.Generator().manual_seed(MEAN_SEED)
        with torch.no_grad():
            out = self.net(torch.randn(MEAN_SAMPLES, self.noise_dim, generator=generator))
            mean, std = out.mean(0), out.std(0).clamp_min(1e-12)
            last.weight.div_(std[:, None])
            last.bias.sub_(mean).div_(std)

    def transform(self, eps: Tensor) -> Tensor:
        return self.net(eps)


class FactorisedPrior(_ImplicitPrior):
    """Independent coordinates ``z_k = g_k(eps_k)``, ``eps ~ N(0, I_d)``.

    Each ``g_k`` is a one-hidden-layer network of ``hidden`` tanh units plus a
    linear skip term::

        g_k(e) = b_k + a_k e + sum_h v_kh tanh(w_kh e + c_kh)

    with ``a_k = softplus(.) > 0``. With ``monotone=True`` (default) also
    ``v_kh = softplus(.)`` and ``w_kh = softplus(.)``, so every ``g_k`` is strictly
    increasing: a learnable quantile function, able to represent any smooth 1-D
    marginal. All ``d`` networks are evaluated at once from ``(d, hidden)`` weight
    tables (no loop over dimensions), and ``g_k`` reads only column ``k`` of the
    noise and only row ``k`` of every table. At initialisation ``a_k = 1``,
    ``b_k = 0`` and the tanh part is small, so the prior starts close to ``N(0, I)``.
    """

    def __init__(
        self,
        latent_dim: int,
        hidden: int = 16,
        *,
        monotone: bool = True,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(latent_dim, 1)
        if int(hidden) < 1:
            raise ValueError(f"hidden must be >= 1, got {hidden}")
        self.noise_dim = self.latent_dim
        self.hidden = int(hidden)
        self.monotone = bool(monotone)
        d, h = self.latent_dim, self.hidden
        self.shift = nn.Parameter(torch.zeros(d))
        self.raw_scale = nn.Parameter(torch.full((d,), _inverse_softplus(1.0)))
        self.in_weight = nn.Parameter(torch.randn(d, h, generator=generator))
        self.in_bias = nn.Parameter(torch.randn(d, h, generator=generator))
        out = torch.randn(d, h, generator=generator)
        # small tanh contributions at init: softplus(-4) ~ 0.018 per unit, or N(0, 0.02^2)
        self.out_weight = nn.Parameter(-4.0 + 0.1 * out if self.monotone else 0.02 * out)

    def _weights(self) -> tuple[Tensor, Tensor]:
        if self.monotone:
            return F.softplus(self.in_weight), F.softplus(self.out_weight)
        return self.in_weight, self.out_weight

    def transform(self, eps: Tensor) -> Tensor:
        w, v = self._weights()
        units = torch.tanh(eps.unsqueeze(-1) * w + self.in_bias)  # (n, d, hidden)
        return self.shift + F.softplus(self.raw_scale) * eps + (units * v).sum(-1)


__all__ = ["FactorisedPrior", "NeuralSamplerPrior"]
