"""The model zoo: one base class, each model a short file registered by name."""

from .base import (
    MODELS,
    Autoencoder,
    LossTerms,
    ModelConfig,
    PriorSampleAutoencoder,
    build_model,
    get_model_class,
    model_config_from_dict,
    register_model,
)

__all__ = [
    "MODELS",
    "Autoencoder",
    "LossTerms",
    "build_model",
    "ModelConfig",
    "PriorSampleAutoencoder",
    "get_model_class",
    "model_config_from_dict",
    "register_model",
]

# Importing the model modules registers them (one line per model family).
# isort: off
from . import vae  # noqa: E402,F401
from . import gmvae, rae, sae, spherical, swae, vampprior, wae  # noqa: E402,F401
from . import gwae  # noqa: E402,F401
from . import betatcvae, factorvae  # noqa: E402,F401
# isort: on
