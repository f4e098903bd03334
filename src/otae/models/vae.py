"""VAE (Kingma & Welling 2014): probabilistic encoder, N(0, I) prior, analytic KL."""

from __future__ import annotations

from dataclasses import dataclass

from ..discrepancies import kl_standard_normal
from .base import Autoencoder, ModelConfig, register_model


@dataclass
class VAEConfig(ModelConfig):
    name: str = "vae"
    prior: str = "normal"

    def validate(self) -> None:
        super().validate()
        if self.prior != "normal":
            raise ValueError("vae uses the analytic KL to N(0, I): model.prior must be 'normal'")


@register_model("vae")
class VAE(Autoencoder):
    """``KL(q(z|x) || N(0, I))`` per sample, in closed form."""

    config_class = VAEConfig
    probabilistic = True

    def regulariser(self, x, mean, logvar, z, generator):
        return kl_standard_normal(mean, logvar), {}
