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
from .pretrained import from_pretrained, save_pretrained

__all__ = [
    "MODELS",
    "Autoencoder",
    "LossTerms",
    "build_model",
    "ModelConfig",
    "PriorSampleAutoencoder",
    "from_pretrained",
    "get_model_class",
    "model_config_from_dict",
    "register_model",
    "save_pretrained",
]

# Importing the model modules registers them (one line per model family).
# isort: off
from . import vae  # noqa: E402,F401
from . import gmvae, rae, sae, spherical, swae, vampprior, wae  # noqa: E402,F401
from . import gwae  # noqa: E402,F401
from . import betatcvae, factorvae  # noqa: E402,F401
# isort: on
