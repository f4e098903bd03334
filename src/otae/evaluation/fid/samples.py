"""Samples of a model for FID: generated in batches, their statistics, and 8-bit files
that carry them to where FID can run."""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..._io import atomic_write
from ..metrics import eval_mode
from .frechet import FeatureExtractor, feature_statistics
from .statistics import features_of

__all__ = ["generate_samples", "generated_statistics", "load_samples_npz", "save_samples_npz"]


def _check_sampling(n: int, batch_size: int) -> tuple[int, int]:
    n, batch_size = int(n), int(batch_size)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return n, batch_size


def _sample_batches(
    model: nn.Module, n: int, batch_size: int, generator: torch.Generator | None
) -> Iterator[Tensor]:
    """``model.sample`` in batches of ``batch_size`` (eval mode, no grad), clamped to [0, 1]."""
    with eval_mode(model):
        for start in range(0, n, batch_size):
            yield model.sample(min(batch_size, n - start), generator).float().clamp(0, 1)


def generate_samples(
    model: nn.Module,
    n: int,
    generator: torch.Generator | None = None,
    batch_size: int = 500,
) -> Tensor:
    """``n`` images from ``model.sample``: ``(n, C, H, W)`` float32 in ``[0, 1]``, on the CPU.

    Decoded in batches of ``batch_size`` with ``generator`` (eval mode, no grad, modes
    restored) and clamped to ``[0, 1]`` (decoders are linear), exactly the images
    :func:`generated_statistics` scores; :func:`save_samples_npz` keeps them.
    """
    n, batch_size = _check_sampling(n, batch_size)
    return torch.cat([x.cpu() for x in _sample_batches(model, n, batch_size, generator)])


def generated_statistics(
    model: nn.Module,
    extractor: FeatureExtractor,
    n: int,
    *,
    batch_size: int = 500,
    generator: torch.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(mu, sigma)`` of the features of ``n`` images from ``model.sample``.

    Decoded in batches of ``batch_size`` with ``generator`` (eval mode, no grad, modes
    restored), clamped to ``[0, 1]`` (decoders are linear) and passed to ``extractor``
    batch by batch (the images of :func:`generate_samples`, never all in memory).
    """
    if int(n) < 2:
        raise ValueError(f"n must be >= 2, got {n}")
    n, batch_size = _check_sampling(n, batch_size)
    parts = [features_of(extractor, x) for x in _sample_batches(model, n, batch_size, generator)]
    return feature_statistics(np.concatenate(parts))


def save_samples_npz(images: Any, path: str | os.PathLike) -> Path:
    """Save images as 8-bit ``uint8 (N, C, H, W)`` under key ``images`` (``np.savez_compressed``).

    ``images``: a tensor or array ``(N, C, H, W)``, uint8 as is, floating in ``[0, 1]``
    clamped and rounded to ``round(255 x)`` (the quantisation
    :class:`InceptionFeatureExtractor` applies anyway, so FID of the saved samples
    equals FID of the images). Writes exactly ``path`` (no ``.npz`` added), atomically.
    """
    if isinstance(images, Tensor):
        images = images.detach().cpu().numpy()
    array = np.asarray(images)
    if array.ndim != 4 or array.shape[0] < 1:
        raise ValueError(f"samples must have shape (N, C, H, W) with N >= 1, got {array.shape}")
    if array.dtype != np.uint8:
        if not np.issubdtype(array.dtype, np.floating):
            raise ValueError(f"samples must be uint8 or floating in [0, 1], got {array.dtype}")
        array = np.rint(np.clip(array.astype(np.float64), 0, 1) * 255).astype(np.uint8)
    path = Path(path)
    atomic_write(path, lambda f: np.savez_compressed(f, images=array))
    return path


def load_samples_npz(path: str | os.PathLike) -> np.ndarray:
    """The ``uint8 (N, C, H, W)`` array that :func:`save_samples_npz` wrote to ``path``.

    Read with ``allow_pickle=False``; a missing file is a FileNotFoundError, anything
    but an npz with a 4-d uint8 ``images`` array a ValueError naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"samples file {path} not found")
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError("a single .npy array, not an .npz archive")
        with data:
            if "images" not in data.files:
                raise ValueError(f"no 'images' array (it holds: {', '.join(data.files) or 'none'})")
            images = np.array(data["images"])
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(
            f"{path} is not a samples file written by save_samples_npz ({_first_line(err)})"
        ) from None
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[0] < 1:
        raise ValueError(
            f"{path}: 'images' must be uint8 (N, C, H, W) with N >= 1, "
            f"got {images.dtype} {images.shape}"
        )
    return images


def _first_line(err: BaseException) -> str:
    return next((line.strip() for line in str(err).splitlines() if line.strip()), "")
