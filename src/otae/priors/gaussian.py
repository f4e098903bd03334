"""Standard normal and learnable diagonal Gaussian-mixture priors."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .. import noise
from ..discrepancies.kl import log_prob_diagonal_gaussian, log_prob_gaussian_mixture
from .base import Prior


class StandardNormalPrior(Prior):
    """``N(0, I_d)``: one component with mean 0 and unit standard deviations."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__(latent_dim, 1)
        self.register_buffer("_zero", torch.zeros(()), persistent=False)

    def sample(self, n: int, generator: noise.Generatorish = None) -> Tensor:
        return self._noise(n, generator)

    def log_prob(self, z: Tensor) -> Tensor:
        zeros = torch.zeros_like(z)
        return log_prob_diagonal_gaussian(z, zeros, zeros)

    def gaussian_components(self) -> tuple[Tensor, Tensor]:
        zeros = self._zero.new_zeros(1, self.latent_dim)
        return zeros, torch.ones_like(zeros)


class GaussianMixturePrior(Prior):
    """Mixture of ``K`` diagonal Gaussians with uniform weights.

    Means and log-variances are learnable (``learnable=False`` freezes them);
    means start from ``N(0, init_scale^2)`` (random init, RAE paper §6.1) drawn with
    ``generator``, log-variances at ``log(init_std^2)``. :meth:`sample` is
    stratified: each component contributes ``n / K`` draws (the remainder goes to
    the first components), reparameterised as ``mu_k + sigma_k * eps``.
    """

    def __init__(
        self,
        latent_dim: int,
        n_components: int = 10,
        *,
        learnable: bool = True,
        init_scale: float = 1.0,
        init_std: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(latent_dim, n_components)
        means = init_scale * torch.randn(n_components, latent_dim, generator=generator)
        logvars = torch.full((n_components, latent_dim), 2.0 * float(torch.tensor(init_std).log()))
        if learnable:
            self.means = nn.Parameter(means)
            self.logvars = nn.Parameter(logvars)
        else:
            self.register_buffer("means", means)
            self.register_buffer("logvars", logvars)

    @property
    def stds(self) -> Tensor:
        return torch.exp(0.5 * self.logvars)

    def sample(self, n: int, generator: noise.Generatorish = None) -> Tensor:
        return self._mixture_sample(self.means, self.stds, n, generator)

    def sample_component(self, k: int, n: int, generator: noise.Generatorish = None) -> Tensor:
        self._check_component(k)
        return self.means[k] + self.stds[k] * self._noise(n, generator)

    def log_prob(self, z: Tensor) -> Tensor:
        return log_prob_gaussian_mixture(z, self.means, self.logvars)

    def gaussian_components(self) -> tuple[Tensor, Tensor]:
        return self.means, self.stds
