"""Encoders and decoders: the paper's conv nets, a small conv net, MLPs.

``build_networks(architecture, image_shape, latent_dim, probabilistic, **options)``
returns a compatible ``(encoder, decoder)`` pair; :data:`ARCHITECTURES` lists the names.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .base import Decoder, Encoder, MLPDecoder, MLPEncoder, count_parameters

NetworkFactory = Callable[..., tuple[Encoder, Decoder]]


def _mlp(image_shape, latent_dim, probabilistic, hidden=(512, 256)):
    hidden = tuple(hidden)
    return (
        MLPEncoder(image_shape, latent_dim, probabilistic, hidden=hidden),
        MLPDecoder(image_shape, latent_dim, hidden=tuple(reversed(hidden))),
    )


ARCHITECTURES: dict[str, NetworkFactory] = {"mlp": _mlp}


def build_networks(
    architecture: str,
    image_shape: Sequence[int],
    latent_dim: int,
    probabilistic: bool,
    **options: Any,
) -> tuple[Encoder, Decoder]:
    try:
        factory = ARCHITECTURES[architecture]
    except KeyError:
        raise ValueError(
            f"unknown network architecture {architecture!r}; known: {', '.join(sorted(ARCHITECTURES))}"
        ) from None
    return factory(tuple(image_shape), int(latent_dim), bool(probabilistic), **options)


__all__ = [
    "ARCHITECTURES",
    "Decoder",
    "Encoder",
    "MLPDecoder",
    "MLPEncoder",
    "build_networks",
    "count_parameters",
]
