r"""GMVAE as in the RAE paper's Table 1: probabilistic encoder, learnable GMM prior.

.. math:: R_i = \log q(z_i \mid x_i) - \log p(z_i),\quad
          p(z) = \frac1K \sum_k \mathcal{N}(z; u_k, \operatorname{diag} \sigma_k^2),

the one-sample Monte Carlo KL (:func:`otae.discrepancies.kl_monte_carlo`) at the very
reparameterised sample ``z_i`` the decoder sees, per sample (reduced by
``model.reduction``). Gradients reach the encoder through ``z`` and the density, the
prior's means and log-variances through ``log p``. This is the "VAE with a learnable
mixture prior" of the RAE comparison, not Dilokthanakul et al.'s full model with a
categorical latent.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..discrepancies import kl_monte_carlo
from . import _checks
from .base import Autoencoder, ModelConfig, register_model


@dataclass
class GMVAEConfig(ModelConfig):
    name: str = "gmvae"
    prior: str = "gmm"

    def validate(self) -> None:
        super().validate()
        _checks.choice(self.prior, "prior", ("gmm",), "gmvae learns a Gaussian-mixture prior")


@register_model("gmvae")
class GMVAE(Autoencoder):
    """``R_i = log q(z_i | x_i) - log p(z_i)`` against the learnable GMM (per sample)."""

    config_class = GMVAEConfig
    probabilistic = True

    def regulariser(self, x, mean, logvar, z, generator):
        return kl_monte_carlo(z, mean, logvar, self.prior.log_prob), {}
