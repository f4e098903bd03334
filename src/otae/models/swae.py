r"""SWAE (Kolouri et al. 2018): deterministic encoder, N(0, I) prior, sliced Wasserstein.

.. math:: R = \frac1L \sum_{l=1}^L \frac1N \sum_i
          \big(\mathrm{sort}(z \theta_l)_i - \mathrm{sort}(y \theta_l)_i\big)^2,
          \quad \theta_l \sim U(S^{d-1}),\ y_i \sim p(z),

:func:`otae.discrepancies.sliced_wasserstein` (the module
:class:`otae.losses.SlicedWassersteinLoss`, ``model.discrepancy_loss``) between the
batch codes and as many prior samples; prior samples, then directions, are drawn from
the ``generator`` passed to ``loss``. A batch-level scalar.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..losses import SlicedWassersteinLoss
from . import _checks
from .base import ModelConfig, PriorSampleAutoencoder, register_model


@dataclass
class SWAEConfig(ModelConfig):
    name: str = "swae"
    prior: str = "normal"
    #: L, random directions per batch (the RAE paper's D-RAE value, 50)
    n_projections: int = 50

    def validate(self) -> None:
        super().validate()
        _checks.known_prior(self.prior, "swae")
        _checks.count(self.n_projections, "n_projections")


@register_model("swae")
class SWAE(PriorSampleAutoencoder):
    """``R = SW_2^2(codes, prior samples)`` over ``n_projections`` uniform directions."""

    config_class = SWAEConfig
    loss_class = SlicedWassersteinLoss

    def loss_options(self):
        return {"n_projections": self.config.n_projections}
