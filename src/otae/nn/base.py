"""Encoder/decoder contract shared by every architecture.

* An :class:`Encoder` maps images ``(N, C, H, W)`` to ``(mean, logvar)``, each
  ``(N, latent_dim)``; ``logvar`` is ``None`` for deterministic encoders. A body
  produces features, and one linear head (two for probabilistic encoders, RAE
  paper §6.1) maps them to the code.
* A :class:`Decoder` maps codes ``(N, latent_dim)`` to images ``(N, C, H, W)``,
  with a linear output (no sigmoid, as in the RAE paper) except where an
  architecture says otherwise (``gwae_conv``'s sigmoid, as the GWAE authors').

Both check their input shape at the boundary and raise a ``ValueError`` naming
the expected and received shapes, instead of a matmul error from inside torch.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn


def as_shape_tuple(image_shape: Sequence[int]) -> tuple[int, int, int]:
    """``image_shape`` as a ``(channels, height, width)`` tuple of positive ints, or a
    one-line ValueError."""
    shape = tuple(int(s) for s in image_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"image_shape must be (channels, height, width), got {image_shape}")
    return shape  # type: ignore[return-value]


class Encoder(nn.Module):
    """Body ``(N, C, H, W) -> (N, F)`` followed by mean (and log-variance) heads."""

    def __init__(
        self,
        body: nn.Module,
        n_features: int,
        image_shape: Sequence[int],
        latent_dim: int,
        probabilistic: bool,
    ) -> None:
        super().__init__()
        self.image_shape = as_shape_tuple(image_shape)
        self.latent_dim = int(latent_dim)
        self.probabilistic = bool(probabilistic)
        self.body = body
        self.mean_head = nn.Linear(n_features, self.latent_dim)
        self.logvar_head = nn.Linear(n_features, self.latent_dim) if probabilistic else None

    def check_input(self, x: Tensor) -> None:
        if not isinstance(x, Tensor):
            raise TypeError(f"encoder input must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 4 or tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(
                f"{type(self).__name__} expects images of shape "
                f"(N, {', '.join(map(str, self.image_shape))}), "
                f"got {tuple(x.shape)}; choose a network built for this image size "
                "(network.architecture / data.image_size in the config)"
            )

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        self.check_input(x)
        features = self.body(x).flatten(1)
        mean = self.mean_head(features)
        logvar = self.logvar_head(features) if self.logvar_head is not None else None
        return mean, logvar


class Decoder(nn.Module):
    """Maps ``(N, latent_dim)`` codes to ``(N, C, H, W)`` images (linear output)."""

    def __init__(self, net: nn.Module, image_shape: Sequence[int], latent_dim: int) -> None:
        super().__init__()
        self.image_shape = as_shape_tuple(image_shape)
        self.latent_dim = int(latent_dim)
        self.net = net

    def forward(self, z: Tensor) -> Tensor:
        if not isinstance(z, Tensor) or z.dim() != 2 or z.shape[1] != self.latent_dim:
            got = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
            raise ValueError(f"decoder expects codes of shape (N, {self.latent_dim}), got {got}")
        return self.net(z).reshape(z.shape[0], *self.image_shape)


class MLPEncoder(Encoder):
    """Flatten, then ``hidden`` ReLU layers, then the heads."""

    def __init__(
        self,
        image_shape: Sequence[int],
        latent_dim: int,
        probabilistic: bool = False,
        hidden: Sequence[int] = (512, 256),
    ) -> None:
        shape = as_shape_tuple(image_shape)
        layers: list[nn.Module] = [nn.Flatten()]
        width = shape[0] * shape[1] * shape[2]
        for h in hidden:
            layers += [nn.Linear(width, int(h)), nn.ReLU()]
            width = int(h)
        super().__init__(nn.Sequential(*layers), width, shape, latent_dim, probabilistic)


class MLPDecoder(Decoder):
    """``hidden`` ReLU layers, then a linear layer to all pixels."""

    def __init__(
        self, image_shape: Sequence[int], latent_dim: int, hidden: Sequence[int] = (256, 512)
    ) -> None:
        shape = as_shape_tuple(image_shape)
        layers: list[nn.Module] = []
        width = int(latent_dim)
        for h in hidden:
            layers += [nn.Linear(width, int(h)), nn.ReLU()]
            width = int(h)
        layers.append(nn.Linear(width, shape[0] * shape[1] * shape[2]))
        super().__init__(nn.Sequential(*layers), shape, latent_dim)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = ["Decoder", "Encoder", "MLPDecoder", "MLPEncoder", "as_shape_tuple", "count_parameters"]
