"""The conv nets of the GWAE authors' code: ``ConvGaussianEncoder`` / ``ConvDecoder`` of
their library vaetc (``ganmodokix/vaetc``, ``vaetc/network/cnn.py``, MIT licence), which
their GWAE and every baseline of their comparisons use (Nakagawa et al., ICLR 2023).

* Encoder: the logit of the pixels (clamped to ``[1e-4, 1 - 1e-4]`` first), then per
  entry of ``channels`` a ``Conv2d(k4, s2, p1)`` + SiLU (+ ``BatchNorm2d`` after the
  activation with ``batchnorm``), flatten, ``Linear(hidden)`` + SiLU, then the linear
  mean and log-variance heads (each followed by a ``BatchNorm1d`` with ``batchnorm``,
  as vaetc's Gaussian encoder; a deterministic encoder's head has none, as vaetc's
  ``ConvEncoder``).
* Decoder: ``Linear(hidden)`` + SiLU + ``Linear(channels[-1] * h * w)`` + SiLU, reshape to
  the lowest resolution, ``ConvTranspose2d(k4, s2, p1)`` + SiLU (+ BN) back through the
  channels in reverse, one more at ``channels[0]`` to full size, a ``Conv2d(k5, p2)`` to
  the image channels and a sigmoid (``output="sigmoid"``; ``"linear"`` drops it).

With the defaults (``channels=(32, 64, 128, 256)``, ``hidden=256``) on 3x64x64 images
these are exactly vaetc's nets. vaetc builds them for 3x64x64 only (every data set is
resized to it); here any image whose sides are divisible by ``2 ** len(channels)``
works, e.g. 1x32x32 ``shapes_fine``, or 1x28x28 MNIST with two entries in ``channels``.
The GWAE authors' setting (``settings/gwae.yaml``) has ``batchnorm: false``; when
they turn it on, the momentum is their ``BATCHNORM_MOMENTUM = 0.5``, the default here.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .base import Decoder, Encoder
from .conv import halving_geometry

#: pixels are clamped to [LOGIT_EPS, 1 - LOGIT_EPS] before the encoder's logit (vaetc's)
LOGIT_EPS = 1e-4
OUTPUTS = ("sigmoid", "linear")


class Logit(nn.Module):
    """``log(x / (1 - x))`` of ``x`` clamped to ``[eps, 1 - eps]``: images in [0, 1] to the
    real line, vaetc's ``SigmoidInverse`` (the decoder's sigmoid undoes it)."""

    def __init__(self, eps: float = LOGIT_EPS) -> None:
        super().__init__()
        self.eps = float(eps)

    def forward(self, x: Tensor) -> Tensor:
        return torch.logit(x, eps=self.eps)


def _unit(conv: nn.Module, channels: int, batchnorm: bool, momentum: float) -> list[nn.Module]:
    """``conv`` + SiLU (+ BatchNorm2d after the activation, vaetc's order)."""
    layers: list[nn.Module] = [conv, nn.SiLU()]
    if batchnorm:
        layers.append(nn.BatchNorm2d(channels, momentum=momentum))
    return layers


def gwae_conv(
    image_shape: Sequence[int],
    latent_dim: int,
    probabilistic: bool,
    channels: Sequence[int] = (32, 64, 128, 256),
    hidden: int = 256,
    batchnorm: bool = False,
    batchnorm_momentum: float = 0.5,
    output: str = "sigmoid",
) -> tuple[Encoder, Decoder]:
    """The GWAE authors' conv nets (vaetc's), for sides divisible by ``2 ** len(channels)``."""
    shape, chans, hidden, (h_low, w_low) = halving_geometry(
        "gwae_conv", image_shape, channels, hidden
    )
    if output not in OUTPUTS:
        raise ValueError(f"gwae_conv: output must be one of {', '.join(OUTPUTS)}, got {output!r}")
    # a YAML typo ("ture", "no") would otherwise pass as a truthy string
    if not isinstance(batchnorm, bool):
        raise ValueError(f"gwae_conv: batchnorm must be true or false, got {batchnorm!r}")
    if isinstance(batchnorm_momentum, bool) or not isinstance(batchnorm_momentum, numbers.Real):
        raise ValueError(
            f"gwae_conv: batchnorm_momentum must be a number in (0, 1], got {batchnorm_momentum!r}"
        )
    momentum = float(batchnorm_momentum)
    if not 0.0 < momentum <= 1.0:
        raise ValueError(f"gwae_conv: batchnorm_momentum must be in (0, 1], got {momentum}")
    c = shape[0]
    n_low = chans[-1] * h_low * w_low

    body: list[nn.Module] = [Logit()]
    width = c
    for ch in chans:
        body += _unit(nn.Conv2d(width, ch, 4, stride=2, padding=1), ch, batchnorm, momentum)
        width = ch
    body += [nn.Flatten(), nn.Linear(n_low, hidden), nn.SiLU()]
    encoder = Encoder(nn.Sequential(*body), hidden, shape, latent_dim, probabilistic)
    if batchnorm and probabilistic:
        d = int(latent_dim)
        encoder.mean_head = nn.Sequential(encoder.mean_head, nn.BatchNorm1d(d, momentum=momentum))
        encoder.logvar_head = nn.Sequential(
            encoder.logvar_head, nn.BatchNorm1d(d, momentum=momentum)
        )

    dec: list[nn.Module] = [
        nn.Linear(int(latent_dim), hidden),
        nn.SiLU(),
        nn.Linear(hidden, n_low),
        nn.SiLU(),
        nn.Unflatten(1, (chans[-1], h_low, w_low)),
    ]
    rev = chans[::-1]
    for c_in, c_out in zip(rev[:-1], rev[1:], strict=True):
        dec += _unit(nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1), c_out,
                     batchnorm, momentum)  # fmt: skip
    dec += _unit(nn.ConvTranspose2d(chans[0], chans[0], 4, stride=2, padding=1), chans[0],
                 batchnorm, momentum)  # fmt: skip
    dec.append(nn.Conv2d(chans[0], c, 5, stride=1, padding=2))
    if output == "sigmoid":
        dec.append(nn.Sigmoid())
    decoder = Decoder(nn.Sequential(*dec), shape, latent_dim)
    return encoder, decoder


__all__ = ["LOGIT_EPS", "Logit", "gwae_conv"]
