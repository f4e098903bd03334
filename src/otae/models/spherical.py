r"""RAEs with the spherical sliced FGW family (Nguyen et al., ICLR 2021).

Deterministic encoder, learnable GMM prior, and with :math:`F(\theta) =
FG_\beta(\theta_\# q, \theta_\# p)` on the codes and as many stratified prior samples:

* ``ssfg``:   :math:`R = \max_\epsilon \mathbb{E}_{\theta \sim vMF(\epsilon, \kappa)} F(\theta)`;
* ``mssfg``:  the vMF replaced by :math:`\frac1k \sum_i vMF(\epsilon_i, \kappa)`,
  ``k = model.n_locations`` (not the prior's ``n_components``);
* ``pssfg``:  the vMF replaced by the power spherical :math:`PS(\epsilon, \kappa)`;
* ``maxsfg``: :math:`R = \max_\theta F(\theta)`.

The location search (:func:`otae.discrepancies.spherical_sliced_fgw`,
:func:`~otae.discrepancies.max_sliced_fgw`) runs on DETACHED codes and prior samples;
the value at the found location(s) is back-propagated into the encoder and the prior
only. The found location(s) are kept in the registered buffer ``locations`` (all zeros
until the first search; saved with the model) and, with ``warm_start``, the next
batch's search starts from them. Because it runs every batch from a warm start, the
search defaults to ``n_iters = 10`` steps; the spec's reference value (a same-author
implementation) is 100 steps with lr 0.1, kappa 50, L 10. The buffer is only updated
in training mode, so evaluating a model does not change it.
Whether the buffer holds a search result is known on the host (set by a training
search, recomputed by ``load_state_dict``), so a training step never reads the buffer
back (no host synchronisation); set the buffer through ``load_state_dict``.

Draws from the ``generator`` passed to ``loss``: prior samples, then (maxsfg only, on a
warm start) ``n_starts - 1`` fresh starting directions, then the search's own draws.
Values are at the "mean" scale of :func:`~otae.discrepancies.sliced_fgw` (unit
directions, parts averaged): there is no "rae_authors" scale for this family.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..discrepancies import max_sliced_fgw, spherical_sliced_fgw
from ..sphere import uniform_directions
from . import _checks
from .base import ModelConfig, PriorSampleAutoencoder, register_model


@dataclass
class SearchConfig(ModelConfig):
    """Fields shared by the four models (the location search and the FGW trade-off)."""

    prior: str = "gmm"
    beta: float = 0.1
    #: ascent steps per batch (spec reference: 100 from a cold start)
    n_iters: int = 10
    #: initial ascent step, about the angle in radians (decays linearly to 0)
    lr: float = 0.1
    #: start each batch's search from the previous batch's location(s)
    warm_start: bool = True

    def validate(self) -> None:
        super().validate()
        _checks.known_prior(self.prior, self.name)
        _checks.sphere_dim(self.latent_dim, self.name)
        _checks.unit_interval(self.beta, "beta")
        _checks.count(self.n_iters, "n_iters", minimum=0)
        _checks.positive(self.lr, "lr")


@dataclass
class SSFGConfig(SearchConfig):
    name: str = "ssfg"
    kappa: float = 50.0
    #: L, directions per ascent step and for the returned value
    n_projections: int = 10

    def validate(self) -> None:
        super().validate()
        _checks.positive(self.kappa, "kappa", allow_zero=True)
        _checks.count(self.n_projections, "n_projections")


@dataclass
class MSSFGConfig(SSFGConfig):
    name: str = "mssfg"
    #: k, the number of vMF locations (the functions' default; the paper's is not known)
    n_locations: int = 5

    def validate(self) -> None:
        super().validate()
        _checks.count(self.n_locations, "n_locations")


@dataclass
class PSSFGConfig(SSFGConfig):
    name: str = "pssfg"


@dataclass
class MaxSFGConfig(SearchConfig):
    name: str = "maxsfg"
    #: parallel ascents; on a warm start one of them is the previous direction
    n_starts: int = 4

    def validate(self) -> None:
        super().validate()
        _checks.count(self.n_starts, "n_starts")


class _SphericalRAE(PriorSampleAutoencoder):
    """Shared regulariser: prior samples, warm-started search, buffer update."""

    distribution = "vmf"

    def __init__(self, config, encoder, decoder, prior):
        super().__init__(config, encoder, decoder, prior)
        self.register_buffer("locations", torch.zeros(self.n_locations, config.latent_dim))
        # Whether ``locations`` holds a search result, kept on the host so that the
        # training step does not synchronise to test the buffer; refreshed on loading.
        self._searched = False
        self.register_load_state_dict_post_hook(_SphericalRAE._refresh_searched)

    @staticmethod
    def _refresh_searched(module: _SphericalRAE, incompatible_keys) -> None:
        module._searched = bool((module.locations.norm(dim=-1) > 0).all())

    def draw_schedule_key(self) -> tuple:
        # the first search draws random starts; later ones start from ``locations``
        return (self._searched,)

    @property
    def n_locations(self) -> int:
        return 1

    def initial_locations(self, generator: torch.Generator | None) -> torch.Tensor | None:
        """The search's starting point(s): the stored location(s), or None (random)."""
        if not self.config.warm_start or not self._searched:
            return None
        return self.locations

    def search(self, z, y, generator, init):
        c = self.config
        return spherical_sliced_fgw(
            z,
            y,
            beta=c.beta,
            kappa=c.kappa,
            n_projections=c.n_projections,
            n_iters=c.n_iters,
            lr=c.lr,
            n_components=self.n_locations,
            distribution=self.distribution,
            generator=generator,
            init_locations=init,
            return_locations=True,
        )

    def discrepancy(self, z, y, generator):
        value, found = self.search(z, y, generator, self.initial_locations(generator))
        if self.training:
            self.locations.copy_(found.reshape(self.locations.shape))
            self._searched = True
        return value


@register_model("ssfg")
class SSFGRAE(_SphericalRAE):
    """``R = max_eps E_{theta ~ vMF(eps, kappa)} FG_beta(theta#codes, theta#prior)``."""

    config_class = SSFGConfig


@register_model("mssfg")
class MSSFGRAE(_SphericalRAE):
    """``R = max_{eps_1..k} E_{theta ~ 1/k sum_i vMF(eps_i, kappa)} FG_beta(...)``."""

    config_class = MSSFGConfig

    @property
    def n_locations(self) -> int:
        return self.config.n_locations


@register_model("pssfg")
class PSSFGRAE(_SphericalRAE):
    """``R = max_eps E_{theta ~ PS(eps, kappa)} FG_beta(theta#codes, theta#prior)``."""

    config_class = PSSFGConfig
    distribution = "power"


@register_model("maxsfg")
class MaxSFGRAE(_SphericalRAE):
    """``R = max_theta FG_beta(theta#codes, theta#prior)`` (multi-start ascent)."""

    config_class = MaxSFGConfig

    def initial_locations(self, generator):
        previous = super().initial_locations(generator)
        if previous is None or self.config.n_starts == 1:
            return previous
        fresh = uniform_directions(
            self.config.n_starts - 1,
            self.config.latent_dim,
            generator=generator,
            dtype=previous.dtype,
            device=previous.device,
        )
        return torch.cat((previous, fresh))

    def search(self, z, y, generator, init):
        c = self.config
        return max_sliced_fgw(
            z,
            y,
            beta=c.beta,
            n_iters=c.n_iters,
            lr=c.lr,
            n_starts=c.n_starts,
            generator=generator,
            init_directions=init,
            return_direction=True,
        )
