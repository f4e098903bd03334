"""Encoders and decoders: the RAE paper's conv nets, the GWAE authors' conv nets, a small
conv net, MLPs.

``build_networks(architecture, image_shape, latent_dim, probabilistic, **options)``
returns a compatible ``(encoder, decoder)`` pair; :data:`ARCHITECTURES` lists the names.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

from .base import Decoder, Encoder, MLPDecoder, MLPEncoder, count_parameters
from .conv import channel_list, conv_block, deconv_block, paper_celeba, paper_mnist, small_conv
from .gwae_conv import gwae_conv

NetworkFactory = Callable[..., tuple[Encoder, Decoder]]


def _mlp(image_shape, latent_dim, probabilistic, hidden=(512, 256)):
    """Fully connected nets for any image shape (hidden=(512, 256); decoder mirrored)."""
    hidden = tuple(channel_list("mlp", "hidden", hidden, None, allow_empty=True))
    return (
        MLPEncoder(image_shape, latent_dim, probabilistic, hidden=hidden),
        MLPDecoder(image_shape, latent_dim, hidden=tuple(reversed(hidden))),
    )


ARCHITECTURES: dict[str, NetworkFactory] = {
    "mlp": _mlp,
    "paper_mnist": paper_mnist,
    "paper_celeba": paper_celeba,
    "small_conv": small_conv,
    "gwae_conv": gwae_conv,
}


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
        known = ", ".join(sorted(ARCHITECTURES))
        raise ValueError(f"unknown network architecture {architecture!r}; known: {known}") from None
    accepted = list(inspect.signature(factory).parameters)[3:]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(unknown)} for network architecture {architecture!r}; "
            f"accepted: {', '.join(accepted) or 'none'}"
        )
    return factory(tuple(image_shape), int(latent_dim), bool(probabilistic), **options)


__all__ = [
    "ARCHITECTURES",
    "Decoder",
    "Encoder",
    "MLPDecoder",
    "MLPEncoder",
    "build_networks",
    "conv_block",
    "count_parameters",
    "deconv_block",
    "gwae_conv",
    "paper_celeba",
    "paper_mnist",
    "small_conv",
]
