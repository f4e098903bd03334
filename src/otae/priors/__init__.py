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
from .meta import (
    FactorisedNeuralPrior,
    FactorisedQuantilePrior,
    FactorisedUniformPrior,
    GumbelMixturePrior,
    NeuralPrior,
)
from .sphere import SphereUniformPrior, VonMisesFisherMixturePrior
from .vamp import VampPrior

PriorFactory = Callable[..., Prior]

PRIORS: dict[str, PriorFactory] = {
    "normal": lambda latent_dim, n_components, generator=None, **kw: StandardNormalPrior(
        latent_dim, **kw
    ),
    "gmm": lambda latent_dim, n_components, generator=None, **kw: GaussianMixturePrior(
        latent_dim, n_components, generator=generator, **kw
    ),
    # Hyperspherical priors (Sinkhorn AE): codes and samples on S^(d-1).
    "sphere_uniform": lambda latent_dim, n_components, generator=None, **kw: SphereUniformPrior(
        latent_dim, **kw
    ),
    "vmf": lambda latent_dim, n_components, generator=None, **kw: VonMisesFisherMixturePrior(
        latent_dim, n_components, generator=generator, **kw
    ),
    # GWAE's meta-priors (docs/gwae.md)
    "neural": lambda latent_dim, n_components, generator=None, **kw: NeuralPrior(
        latent_dim, generator=generator, **kw
    ),
    "factorised_neural": lambda latent_dim, n_components, generator=None, **kw: (
        FactorisedNeuralPrior(latent_dim, generator=generator, **kw)
    ),
    "factorised_normal": lambda latent_dim, n_components, generator=None, **kw: (
        StandardNormalPrior(latent_dim, **kw)
    ),
    "factorised_uniform": lambda latent_dim, n_components, generator=None, **kw: (
        FactorisedUniformPrior(latent_dim, **kw)
    ),
    "factorised_quantile": lambda latent_dim, n_components, generator=None, **kw: (
        FactorisedQuantilePrior(latent_dim, generator=generator, **kw)
    ),
    "gumbel_gmm": lambda latent_dim, n_components, generator=None, **kw: GumbelMixturePrior(
        latent_dim, n_components, generator=generator, **kw
    ),
}


#: names that no longer exist, with what to use instead
RENAMED = {
    "factorised": "use 'factorised_neural' (the GWAE authors' disentanglement meta-prior) or "
    "'factorised_quantile' (otae's earlier monotone quantile map)",
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
    if name in RENAMED:
        raise ValueError(f"prior {name!r} was renamed: {RENAMED[name]}")
    try:
        factory = PRIORS[name]
    except KeyError:
        raise ValueError(
            f"unknown prior {name!r}; known priors: {', '.join(sorted(PRIORS))}"
        ) from None
    return factory(latent_dim, n_components, generator=generator, **options)


__all__ = [
    "PRIORS",
    "FactorisedNeuralPrior",
    "FactorisedQuantilePrior",
    "FactorisedUniformPrior",
    "GumbelMixturePrior",
    "NeuralPrior",
    "GaussianMixturePrior",
    "Prior",
    "SphereUniformPrior",
    "StandardNormalPrior",
    "VampPrior",
    "VonMisesFisherMixturePrior",
    "build_prior",
    "register_prior",
    "stratified_counts",
]
