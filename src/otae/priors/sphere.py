r"""Hyperspherical priors on :math:`S^{d-1}` (Sinkhorn autoencoder, Patrini et al. 2019).

* ``"sphere_uniform"``: the uniform distribution on :math:`S^{d-1}`;
* ``"vmf"``: the uniform mixture :math:`\frac1K \sum_k vMF(\mu_k, \kappa)` of von
  Mises-Fisher distributions, density :math:`C_d(\kappa) e^{\kappa \mu_k^\top z}` with
  :math:`C_d(\kappa) = \kappa^{d/2-1} / ((2\pi)^{d/2} I_{d/2-1}(\kappa))`.

Both set ``on_sphere = True``: a model whose codes must live on the sphere (the SAE)
projects them there when it sees this flag. Samplers are those of :mod:`otae.sphere`
(Wood's vMF sampler, reparameterised through a Householder reflection), so the vMF
locations learn from regularisers computed on prior samples.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from scipy import special
from torch import Tensor, nn

from .. import noise
from ..sphere import sample_von_mises_fisher, uniform_directions
from .base import Prior

__all__ = [
    "SphereUniformPrior",
    "VonMisesFisherMixturePrior",
    "log_sphere_area",
    "vmf_log_normaliser",
]


def log_sphere_area(d: int) -> float:
    r"""``log`` of the surface area :math:`2\pi^{d/2} / \Gamma(d/2)` of :math:`S^{d-1}`."""
    return math.log(2.0) + 0.5 * d * math.log(math.pi) - math.lgamma(0.5 * d)


def vmf_log_normaliser(kappa: float, d: int) -> float:
    r""":math:`\log C_d(\kappa)`, the log normalising constant of :math:`vMF(\cdot, \kappa)`.

    :math:`\log I_\nu(\kappa)` (:math:`\nu = d/2 - 1`) comes from the exponentially scaled
    ``scipy.special.ive``; where that underflows (large d, small kappa), from the power
    series :math:`I_\nu(\kappa) = \sum_m (\kappa/2)^{2m+\nu} / (m!\, \Gamma(m+\nu+1))`,
    summed in log space. ``kappa = 0`` gives the uniform density.
    """
    kappa = float(kappa)
    if kappa == 0.0:
        return -log_sphere_area(d)
    nu = 0.5 * d - 1.0
    scaled = float(special.ive(nu, kappa))
    if scaled > 1e-300 and math.isfinite(scaled):
        log_bessel = math.log(scaled) + kappa
    else:
        half = math.log(kappa / 2.0)
        terms = [
            (2 * m + nu) * half - math.lgamma(m + 1.0) - math.lgamma(m + nu + 1.0)
            for m in range(400)
        ]
        top = max(terms)
        log_bessel = top + math.log(sum(math.exp(t - top) for t in terms))
    return nu * math.log(kappa) - 0.5 * d * math.log(2.0 * math.pi) - log_bessel


def _check_dim(latent_dim: int) -> None:
    if int(latent_dim) < 2:
        raise ValueError(f"a prior on the sphere S^(d-1) needs latent_dim >= 2, got {latent_dim}")


class SphereUniformPrior(Prior):
    """Uniform distribution on the unit sphere :math:`S^{d-1}` (normalised Gaussians)."""

    on_sphere = True

    def __init__(self, latent_dim: int) -> None:
        _check_dim(latent_dim)
        super().__init__(latent_dim, 1)
        self.register_buffer("_zero", torch.zeros(()), persistent=False)

    def sample(self, n: int, generator: noise.Generatorish = None) -> Tensor:
        return uniform_directions(
            int(n),
            self.latent_dim,
            generator=generator,
            dtype=self._zero.dtype,
            device=self._zero.device,
        )

    def log_prob(self, z: Tensor) -> Tensor:
        """Constant ``-log |S^{d-1}|`` (density w.r.t. the surface measure; z assumed unit)."""
        return torch.full(
            z.shape[:1], -log_sphere_area(self.latent_dim), dtype=z.dtype, device=z.device
        )

    def component_means(self) -> Tensor:
        """The mean of the uniform law, the origin: ``(1, d)`` zeros."""
        return self._zero.new_zeros(1, self.latent_dim)


class VonMisesFisherMixturePrior(Prior):
    r"""Uniform mixture of ``K`` :math:`vMF(\mu_k, \kappa)` on :math:`S^{d-1}`.

    Locations :math:`\mu_k` start uniform on the sphere (drawn with ``generator``) and
    are learnable unless ``learnable=False``; the stored parameter need not be unit
    (the samplers normalise it, so its gradient is tangent), :meth:`normalise_` puts it
    back on the sphere, after every optimiser step through :meth:`end_of_batch`.
    ``kappa`` (fixed, >= 0) is shared by all components. :meth:`sample` is stratified:
    exactly ``n / K`` draws per component (remainder to the first components, as
    :func:`~otae.priors.base.stratified_counts`), rows grouped by component as
    :meth:`component_labels` says; static shapes, no host synchronisation.
    """

    on_sphere = True

    def __init__(
        self,
        latent_dim: int,
        n_components: int = 10,
        *,
        kappa: float = 20.0,
        learnable: bool = True,
        generator: torch.Generator | None = None,
    ) -> None:
        _check_dim(latent_dim)
        super().__init__(latent_dim, n_components)
        kappa = float(kappa)
        if not math.isfinite(kappa) or kappa < 0:
            raise ValueError(f"kappa must be finite and >= 0, got {kappa}")
        self.kappa = kappa
        locations = uniform_directions(n_components, latent_dim, generator=generator)
        if learnable:
            self.locations = nn.Parameter(locations)
        else:
            self.register_buffer("locations", locations)

    @property
    def unit_locations(self) -> Tensor:
        return F.normalize(self.locations, dim=-1)

    def component_means(self) -> Tensor:
        """The ``(K, d)`` unit locations (the modes; the means are shorter by A_d(kappa))."""
        return self.unit_locations

    def component_labels(self, n: int) -> Tensor:
        """``(n,)`` component index of each row returned by :meth:`sample`."""
        per, extra = divmod(int(n), self.n_components)
        labels = torch.arange(self.n_components, device=self.locations.device)
        # Python repeat counts: the output size is known on the host (no sync).
        return torch.cat((labels[:extra].repeat_interleave(per + 1),
                          labels[extra:].repeat_interleave(per)))

    def sample(self, n: int, generator: noise.Generatorish = None) -> Tensor:
        per, extra = divmod(int(n), self.n_components)
        # (K, ceil(n / K), d) draws; the first `extra` components keep all their rows (the
        # stratified_counts layout), the others all but the last: static slices, one cat.
        draws = sample_von_mises_fisher(
            self.locations, self.kappa, per + (extra > 0), generator=generator
        )
        if not extra:
            return draws.reshape(int(n), self.latent_dim)
        return torch.cat((draws[:extra].reshape(-1, self.latent_dim),
                          draws[extra:, :per].reshape(-1, self.latent_dim)))

    def sample_component(self, k: int, n: int, generator: noise.Generatorish = None) -> Tensor:
        self._check_component(k)
        return sample_von_mises_fisher(
            self.locations[int(k)], self.kappa, int(n), generator=generator
        )

    def log_prob(self, z: Tensor) -> Tensor:
        """Mixture density w.r.t. the surface measure of :math:`S^{d-1}` (z assumed unit)."""
        logits = self.kappa * (z @ self.unit_locations.T)  # (n, K)
        const = vmf_log_normaliser(self.kappa, self.latent_dim) - math.log(self.n_components)
        return torch.logsumexp(logits, dim=1) + const

    @torch.no_grad()
    def normalise_(self) -> None:
        """Put the stored locations back on the unit sphere (in place)."""
        self.locations.copy_(F.normalize(self.locations, dim=-1))

    def end_of_batch(self) -> None:
        """Renormalise the locations after each optimiser step (any model using this prior)."""
        self.normalise_()
