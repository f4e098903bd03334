"""Priors over the latent space: an interface, the families, and a registry.

``build_prior(name, latent_dim, n_components, generator=..., **options)``
builds a prior by name; :data:`PRIORS` lists the names (``otae list``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .base import Prior, stratified_counts
from .gaussian import GaussianMixturePrior, StandardNormalPrior

PriorFactory = Callable[..., Prior]

PRIORS: dict[str, PriorFactory] = {
    "normal": lambda latent_dim, n_components, generator=None, **kw: StandardNormalPrior(
        latent_dim, **kw
    ),
    "gmm": lambda latent_dim, n_components, generator=None, **kw: GaussianMixturePrior(
        latent_dim, n_components, generator=generator, **kw
    ),
}


def register_prior(name: str, factory: PriorFactory) -> None:
    if name in PRIORS:
        raise ValueError(f"prior {name!r} registered twice")
    PRIORS[name] = factory


def build_prior(
    name: str,
    latent_dim: int,
    n_components: int = 1,
    *,
    generator: torch.Generator | None = None,
    **options: Any,
) -> Prior:
    """Prior ``name`` over ``R^latent_dim``; unknown names list the known ones."""
    try:
        factory = PRIORS[name]
    except KeyError:
        raise ValueError(
            f"unknown prior {name!r}; known priors: {', '.join(sorted(PRIORS))}"
        ) from None
    return factory(latent_dim, n_components, generator=generator, **options)


__all__ = [
    "PRIORS",
    "GaussianMixturePrior",
    "Prior",
    "StandardNormalPrior",
    "build_prior",
    "register_prior",
    "stratified_counts",
]
