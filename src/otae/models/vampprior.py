r"""VAE with a VampPrior (Tomczak & Welling 2018).

.. math:: R_i = \log q(z_i \mid x_i) - \log \frac1K \sum_k q(z_i \mid u_k),

one-sample Monte Carlo KL per sample against the mixture of the encoder's posteriors at
``K = model.n_components`` learnable pseudo-inputs :math:`u_k`
(:class:`otae.priors.VampPrior`). Gradients reach the encoder twice (through the
posterior and through the prior) and the pseudo-inputs through the prior. The prior is
built here (it needs the image shape) and bound to this model's encoder (by
:class:`~otae.models.Autoencoder`, which binds any prior that has a ``bind`` method), whose
weights are therefore stored once, under ``encoder.``; the prior only owns ``pseudo_inputs``.

Caveat: the pseudo-inputs go through the encoder as one extra batch of K images; with
BatchNorm encoders in training mode they take part in (and are normalised by) their own
batch statistics.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..discrepancies import kl_monte_carlo
from ..priors import VampPrior
from . import _checks
from .base import Autoencoder, ModelConfig, register_model


@dataclass
class VampPriorConfig(ModelConfig):
    name: str = "vampprior"
    prior: str = "vampprior"
    #: pseudo-inputs start uniform on [low, high] (the pixel range by default)
    pseudo_input_low: float = 0.0
    pseudo_input_high: float = 1.0

    def validate(self) -> None:
        super().validate()
        _checks.choice(self.prior, "prior", ("vampprior",), "the prior is built from pseudo-inputs")
        if not self.pseudo_input_high > self.pseudo_input_low:
            raise ValueError(
                "model.pseudo_input_high must exceed model.pseudo_input_low, got "
                f"[{self.pseudo_input_low}, {self.pseudo_input_high}]"
            )


@register_model("vampprior")
class VampPriorVAE(Autoencoder):
    """``R_i = log q(z_i | x_i) - log (1/K) sum_k q(z_i | u_k)`` (per sample)."""

    config_class = VampPriorConfig
    probabilistic = True

    def __init__(self, config, encoder, decoder, prior):
        super().__init__(config, encoder, decoder, prior)  # binds the prior to the encoder
        if not isinstance(prior, VampPrior):
            raise ValueError("the vampprior model needs a VampPrior (see build_prior)")

    @classmethod
    def build_prior(cls, config, image_shape, generator):
        return VampPrior(
            config.latent_dim,
            config.n_components,
            image_shape,
            init_low=config.pseudo_input_low,
            init_high=config.pseudo_input_high,
            generator=generator,
        )

    def regulariser(self, x, mean, logvar, z, generator):
        return kl_monte_carlo(z, mean, logvar, self.prior.log_prob), {}
