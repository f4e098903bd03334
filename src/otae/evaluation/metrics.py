"""Test-set metrics in the units of the RAE paper's Table 2, and batched encoding.

The reconstruction loss reported in tables is the mean over images of the
per-image *sum* of squared errors, pixels in ``[0, 1]``, computed from the
decoded posterior means (:meth:`Autoencoder.reconstruct`, no sampling noise).

Every function here accepts the images either as a float tensor ``(N, C, H, W)``
or as a dataset-like object with ``__len__`` and ``get_batch(indices)`` returning
``(images, labels)``; both are processed in batches.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from ..data import batches as _batches_module
from ..data.batches import iter_batches

__all__ = [
    "encode_dataset",
    "encode_posterior",
    "eval_mode",
    "mean_image_baseline",
    "model_device_dtype",
    "reconstruction_metrics",
]

#: names that moved to :mod:`otae.data.batches`; the old path warns until the next release
_MOVED = ("num_items", "take_batch")


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        warnings.warn(
            f"otae.evaluation.metrics.{name} moved to otae.data.batches.{name}; the old "
            "path goes away in the next release",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(_batches_module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---------------------------------------------------------------------- helpers
@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model.eval()`` and ``torch.no_grad()`` inside; every submodule's mode restored after."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        for module, training in modes:
            module.training = training


def model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Device and dtype of the model's first floating parameter or buffer (CPU and the
    default dtype for a model without any)."""
    for tensor in list(model.parameters()) + list(model.buffers()):
        if tensor.is_floating_point():
            return tensor.device, tensor.dtype
    return torch.device("cpu"), torch.get_default_dtype()


# ---------------------------------------------------------------------- metrics
def reconstruction_metrics(
    model: nn.Module, images: Any, batch_size: int = 500
) -> dict[str, float]:
    """Reconstruction error of ``model`` on ``images`` (the RAE paper's "Rec. loss" unit).

    Returns ``rec_loss`` (mean over images of the per-image sum of squared
    errors), ``mse_per_pixel`` (``rec_loss`` divided by the number of values per
    image, C*H*W) and ``n_images``. Accumulated in float64; runs under
    ``torch.no_grad`` in eval mode, restoring the model's previous modes.
    """
    device, dtype = model_device_dtype(model)
    total = torch.zeros((), dtype=torch.float64)
    count = 0
    values_per_image = None
    with eval_mode(model):
        for x, _ in iter_batches(images, batch_size):
            x = x.to(device=device, dtype=dtype)
            x_hat = model.reconstruct(x)
            sse = (x_hat.double() - x.double()).pow(2).flatten(1).sum(1)
            total += sse.sum().cpu()
            count += int(x.shape[0])
            values_per_image = int(x[0].numel())
    if count == 0:
        raise ValueError("reconstruction_metrics needs at least one image")
    rec_loss = float(total) / count
    return {
        "rec_loss": rec_loss,
        "mse_per_pixel": rec_loss / values_per_image,
        "n_images": count,
    }


def mean_image_baseline(
    train_images: Any, test_images: Any, batch_size: int = 500
) -> dict[str, float]:
    """Error of predicting the mean training image for every test image.

    The "does the model learn at all" baseline, in the same units and keys as
    :func:`reconstruction_metrics`: ``rec_loss`` is
    ``mean_i ||x_i - mean_train||^2`` over test images ``x_i``.
    """
    total_image = None
    n_train = 0
    for x, _ in iter_batches(train_images, batch_size):
        x = x.double().cpu()
        part = x.sum(0)
        total_image = part if total_image is None else total_image + part
        n_train += int(x.shape[0])
    if n_train == 0:
        raise ValueError("mean_image_baseline needs at least one training image")
    mean_image = total_image / n_train
    total = torch.zeros((), dtype=torch.float64)
    count = 0
    for x, _ in iter_batches(test_images, batch_size):
        x = x.double().cpu()
        if tuple(x.shape[1:]) != tuple(mean_image.shape):
            raise ValueError(
                f"test images {tuple(x.shape[1:])} and training images "
                f"{tuple(mean_image.shape)} differ in shape"
            )
        total += (x - mean_image).pow(2).flatten(1).sum(1).sum()
        count += int(x.shape[0])
    if count == 0:
        raise ValueError("mean_image_baseline needs at least one test image")
    rec_loss = float(total) / count
    return {
        "rec_loss": rec_loss,
        "mse_per_pixel": rec_loss / mean_image.numel(),
        "n_images": count,
    }


def encode_posterior(
    model: nn.Module, images: Any, batch_size: int = 500
) -> tuple[Tensor, Tensor | None]:
    """``(mean, logvar)``, each ``(N, d)`` on the CPU, of the encoder's posteriors of all
    images (``logvar`` None for a deterministic encoder); no_grad, eval mode, restored."""
    device, dtype = model_device_dtype(model)
    means, logvars = [], []
    with eval_mode(model):
        for x, _ in iter_batches(images, batch_size):
            mean, logvar = model.encode(x.to(device=device, dtype=dtype))
            means.append(mean.cpu())
            if logvar is not None:
                logvars.append(logvar.cpu())
    if not means:
        latent_dim = getattr(getattr(model, "config", None), "latent_dim", 0)
        empty = torch.zeros(0, latent_dim, dtype=dtype)
        return empty, (empty.clone() if getattr(model, "probabilistic", False) else None)
    return torch.cat(means), (torch.cat(logvars) if logvars else None)


def encode_dataset(model: nn.Module, images: Any, batch_size: int = 500) -> Tensor:
    """``(N, d)`` codes (posterior means, :meth:`embed`) of all images, on the CPU.

    Runs under ``torch.no_grad`` in eval mode, restoring the model's modes.
    """
    device, dtype = model_device_dtype(model)
    codes = []
    with eval_mode(model):
        for x, _ in iter_batches(images, batch_size):
            codes.append(model.embed(x.to(device=device, dtype=dtype)).cpu())
    if not codes:
        latent_dim = getattr(getattr(model, "config", None), "latent_dim", 0)
        return torch.zeros(0, latent_dim, dtype=dtype)
    return torch.cat(codes)
