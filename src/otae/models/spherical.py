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
only. The search is the loss module ``model.discrepancy_loss``
(:class:`otae.losses.SphericalSlicedFGWLoss` or :class:`~otae.losses.MaxSlicedFGWLoss`).
The found location(s) are kept in its registered buffer ``locations`` (``model.locations``;
all zeros until the first search; saved with the model under the key ``locations``)
and, with ``warm_start``, the next batch's search starts from them. Because it runs
every batch from a warm start, the search defaults to ``n_iters = 10`` steps; a
related implementation by the same authors uses 100 steps with lr 0.1, kappa 50,
L 10 (the SSFG paper's own values are not known). The buffer is only updated
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

from .. import noise
from ..losses import MaxSlicedFGWLoss, SphericalSlicedFGWLoss
from . import _checks
from .base import ModelConfig, PriorSampleAutoencoder, register_model

#: the found locations' key in a model's state dict, and in its loss module's
_MODEL_KEY, _MODULE_KEY = "locations", "discrepancy_loss.locations"


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
    """Shared regulariser: prior samples, then the warm-started search of the loss module.

    The module (``discrepancy_loss``) holds the ``locations`` buffer; checkpoints keep
    the key ``locations`` of the model (saved under it, mapped back on loading), so
    checkpoints written before the module existed load unchanged.
    """

    loss_class = SphericalSlicedFGWLoss
    distribution = "vmf"

    def __init__(self, config, encoder, decoder, prior):
        super().__init__(config, encoder, decoder, prior)
        self.register_state_dict_post_hook(_SphericalRAE._save_locations)
        self.register_load_state_dict_pre_hook(_SphericalRAE._load_locations)

    @staticmethod
    def _save_locations(module, state_dict, prefix, local_metadata) -> None:
        key = prefix + _MODULE_KEY
        if key in state_dict:
            state_dict[prefix + _MODEL_KEY] = state_dict.pop(key)

    @staticmethod
    def _load_locations(module, state_dict, prefix, *args) -> None:
        key = prefix + _MODEL_KEY
        if key in state_dict:
            state_dict[prefix + _MODULE_KEY] = state_dict.pop(key)

    @property
    def locations(self) -> torch.Tensor:
        """The found location(s), the loss module's buffer (zeros before the first search)."""
        return self.discrepancy_loss.locations

    def draw_schedule_key(self) -> tuple:
        # the first search draws random starts; later ones start from ``locations``
        return (self.discrepancy_loss.searched,)

    @property
    def n_locations(self) -> int:
        return 1

    def loss_options(self):
        c = self.config
        return {"dim": c.latent_dim, "beta": c.beta, "kappa": c.kappa,
                "n_projections": c.n_projections, "n_iters": c.n_iters, "lr": c.lr,
                "n_locations": self.n_locations, "distribution": self.distribution,
                "warm_start": c.warm_start, "diagnostics": c.diagnostics}

    def initial_locations(self, generator: noise.Generatorish) -> torch.Tensor | None:
        """The search's starting point(s): the stored location(s), or None (random)."""
        return self.synced_loss().initial_locations(generator)


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
    loss_class = MaxSlicedFGWLoss

    def loss_options(self):
        c = self.config
        return {"dim": c.latent_dim, "beta": c.beta, "n_iters": c.n_iters, "lr": c.lr,
                "n_starts": c.n_starts, "warm_start": c.warm_start, "diagnostics": c.diagnostics}
