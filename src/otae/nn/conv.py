"""Convolutional encoders and decoders: the RAE paper's nets and a small CPU-friendly net.

Every factory has the signature ``(image_shape, latent_dim, probabilistic, **options)``
and returns an ``(Encoder, Decoder)`` pair built on :mod:`otae.nn.base`. A factory
given an image shape it is not built for raises a ``ValueError`` that says which
shapes it accepts, before any layer is created.

* ``paper_mnist`` (RAE paper §6.1, 1x28x28): encoder 4 blocks ``Conv2d(k4, s2, p1, no bias)
  + BatchNorm2d + ReLU`` with 128-256-512-1024 channels (28 -> 14 -> 7 -> 3 -> 1), then
  the linear head(s); decoder ``Linear(latent, 1024*7*7)``, reshape, two blocks
  ``ConvTranspose2d(k4, s2, p1, no bias) + BatchNorm2d + ReLU`` (1024 -> 512 -> 256,
  7 -> 14 -> 28) and a 1x1 ``ConvTranspose2d`` to the image; linear output.
* ``paper_celeba`` (RAE paper §6.1, 3x64x64): the same encoder (64 -> 32 -> 16 -> 8 -> 4, head
  from 1024*4*4 features); decoder ``Linear(latent, 1024*8*8)``, three transposed-conv
  blocks 1024 -> 512 -> 256 -> 128 (8 -> 16 -> 32 -> 64) and a 1x1 transposed conv to 3
  channels; linear output.
* ``small_conv``: for any image whose height and width are divisible by
  ``2 ** len(channels)`` (4 with the default ``channels=(32, 64)``): conv blocks,
  flatten, ``Linear(hidden) + ReLU``; decoder ``Linear(hidden) + ReLU +
  Linear(channels[-1]*(H/4)*(W/4)) + ReLU``, transposed-conv blocks back up, the last one
  straight to the image channels (linear output).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from .base import Decoder, Encoder, as_shape_tuple


def _fmt(shape: Sequence[int]) -> str:
    return "x".join(str(int(s)) for s in shape)


def _is_int(value: object) -> bool:
    # bool is an int to Python, and a float 2.5 would be truncated: neither is a width
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def positive_int(name: str, option: str, value: object) -> int:
    """``value`` as an int >= 1, or a one-line ValueError naming the architecture ``name``
    and its ``option``."""
    if not _is_int(value) or int(value) < 1:
        raise ValueError(f"{name}: {option} must be a positive integer, got {value!r}")
    return int(value)


def channel_list(
    name: str, option: str, values: Sequence[int], length: int | None, allow_empty: bool = False
) -> list[int]:
    """``values`` as positive ints (``length`` of them unless None; at least one unless
    ``allow_empty``), or a one-line ValueError naming the architecture ``name`` and its
    ``option``."""
    # a string is a sequence too: "32" would read as channels [3, 2]
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not all(
        _is_int(c) for c in values
    ):
        raise ValueError(f"{name}: {option} must be a list of integers, got {values!r}")
    channels = [int(c) for c in values]
    if (not channels and not allow_empty) or any(c < 1 for c in channels):
        raise ValueError(f"{name}: {option} must be positive integers, got {values!r}")
    if length is not None and len(channels) != length:
        raise ValueError(
            f"{name}: {option} must have {length} entries (one per layer of the paper's net), "
            f"got {len(channels)}: {channels}"
        )
    return channels


def conv_block(in_channels: int, out_channels: int) -> list[nn.Module]:
    """``Conv2d(k4, s2, p1, bias=False) + BatchNorm2d + ReLU``: halves even sizes."""
    return [
        nn.Conv2d(in_channels, out_channels, kernel_size=4, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    ]


def deconv_block(in_channels: int, out_channels: int) -> list[nn.Module]:
    """``ConvTranspose2d(k4, s2, p1, bias=False) + BatchNorm2d + ReLU``: doubles sizes."""
    return [
        nn.ConvTranspose2d(
            in_channels, out_channels, kernel_size=4, stride=2, padding=1, bias=False
        ),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    ]


def _conv_out(size: int) -> int:
    """Output size of a k4 s2 p1 convolution."""
    return (size + 2 - 4) // 2 + 1


def halving_geometry(
    name: str, image_shape: Sequence[int], channels: Sequence[int], hidden: int
) -> tuple[tuple[int, int, int], list[int], int, tuple[int, int]]:
    """Checked settings of a net that halves the image once per entry of ``channels``
    (``small_conv``, ``gwae_conv``): the shape, the channels, ``hidden`` and the
    ``(height, width)`` at the lowest resolution; a one-line ValueError naming ``name``
    otherwise."""
    shape = as_shape_tuple(image_shape)
    chans = channel_list(name, "channels", channels, None)
    hidden = positive_int(name, "hidden", hidden)
    factor = 2 ** len(chans)
    c, h, w = shape
    if h % factor or w % factor:
        raise ValueError(
            f"{name} with {len(chans)} conv layers needs image height and width divisible "
            f"by {factor} (e.g. {c}x{factor * 7}x{factor * 7}, {c}x{factor * 8}x{factor * 8}), "
            f"got {_fmt(shape)}; change data.image_size or the number of channels"
        )
    return shape, chans, hidden, (h // factor, w // factor)


@dataclass(frozen=True)
class _PaperNet:
    """What tells the RAE paper's two conv nets apart (its §6.1); the rest is :func:`_paper`."""

    name: str
    image_shape: tuple[int, int, int]
    #: side of the decoder's first feature map (doubled by each transposed-conv block)
    decoder_start: int
    #: transposed-conv blocks, so ``decoder_channels`` has ``n_up + 1`` entries
    n_up: int
    #: the other net, suggested when the image shape is wrong
    alternative: str


_PAPER_MNIST = _PaperNet("paper_mnist", (1, 28, 28), 7, 2, "paper_celeba (3x64x64)")
_PAPER_CELEBA = _PaperNet("paper_celeba", (3, 64, 64), 8, 3, "paper_mnist (1x28x28)")


def _paper(
    net: _PaperNet,
    image_shape: Sequence[int],
    latent_dim: int,
    probabilistic: bool,
    channels: Sequence[int],
    decoder_channels: Sequence[int],
) -> tuple[Encoder, Decoder]:
    name, expected, decoder_start = net.name, net.image_shape, net.decoder_start
    shape = as_shape_tuple(image_shape)
    if shape != expected:
        raise ValueError(
            f"{name} is built for {_fmt(expected)} images, got {_fmt(shape)}; "
            f"use {net.alternative} or small_conv"
        )
    enc_channels = channel_list(name, "channels", channels, 4)
    dec_channels = channel_list(name, "decoder_channels", decoder_channels, net.n_up + 1)

    layers: list[nn.Module] = []
    width, size = shape[0], shape[1]
    for c in enc_channels:
        layers += conv_block(width, c)
        width, size = c, _conv_out(size)
    layers.append(nn.Flatten())
    encoder = Encoder(nn.Sequential(*layers), width * size * size, shape, latent_dim, probabilistic)

    start = dec_channels[0]
    dec: list[nn.Module] = [
        nn.Linear(latent_dim, start * decoder_start * decoder_start),
        nn.Unflatten(1, (start, decoder_start, decoder_start)),
    ]
    for c_in, c_out in zip(dec_channels[:-1], dec_channels[1:], strict=True):
        dec += deconv_block(c_in, c_out)
    dec.append(nn.ConvTranspose2d(dec_channels[-1], shape[0], kernel_size=1))
    decoder = Decoder(nn.Sequential(*dec), shape, latent_dim)
    return encoder, decoder


def paper_mnist(
    image_shape: Sequence[int],
    latent_dim: int,
    probabilistic: bool,
    channels: Sequence[int] = (128, 256, 512, 1024),
    decoder_channels: Sequence[int] = (1024, 512, 256),
) -> tuple[Encoder, Decoder]:
    """The MNIST conv net of RAE paper §6.1, for 1x28x28: 128-256-512-1024 channels."""
    return _paper(_PAPER_MNIST, image_shape, latent_dim, probabilistic, channels, decoder_channels)


def paper_celeba(
    image_shape: Sequence[int],
    latent_dim: int,
    probabilistic: bool,
    channels: Sequence[int] = (128, 256, 512, 1024),
    decoder_channels: Sequence[int] = (1024, 512, 256, 128),
) -> tuple[Encoder, Decoder]:
    """The CelebA conv net of RAE paper §6.1, for 3x64x64: 128-256-512-1024 channels."""
    return _paper(_PAPER_CELEBA, image_shape, latent_dim, probabilistic, channels, decoder_channels)


def small_conv(
    image_shape: Sequence[int],
    latent_dim: int,
    probabilistic: bool,
    channels: Sequence[int] = (32, 64),
    hidden: int = 256,
) -> tuple[Encoder, Decoder]:
    """Small conv net for images with sides divisible by ``2 ** len(channels)``."""
    shape, chans, hidden, (h_low, w_low) = halving_geometry(
        "small_conv", image_shape, channels, hidden
    )
    c = shape[0]
    n_low = chans[-1] * h_low * w_low

    layers: list[nn.Module] = []
    width = c
    for ch in chans:
        layers += conv_block(width, ch)
        width = ch
    layers += [nn.Flatten(), nn.Linear(n_low, hidden), nn.ReLU()]
    encoder = Encoder(nn.Sequential(*layers), hidden, shape, latent_dim, probabilistic)

    dec: list[nn.Module] = [
        nn.Linear(latent_dim, hidden),
        nn.ReLU(),
        nn.Linear(hidden, n_low),
        nn.ReLU(),
        nn.Unflatten(1, (chans[-1], h_low, w_low)),
    ]
    rev = chans[::-1]
    for c_in, c_out in zip(rev[:-1], rev[1:], strict=True):
        dec += deconv_block(c_in, c_out)
    dec.append(nn.ConvTranspose2d(chans[0], c, kernel_size=4, stride=2, padding=1))
    decoder = Decoder(nn.Sequential(*dec), shape, latent_dim)
    return encoder, decoder


__all__ = ["conv_block", "deconv_block", "paper_celeba", "paper_mnist", "small_conv"]
