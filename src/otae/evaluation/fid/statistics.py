"""Feature statistics of a dataset, cached on disk by dataset, size and extractor."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..._io import atomic_write
from ...data.batches import num_items, take_batch
from .frechet import FeatureExtractor, feature_statistics

__all__ = [
    "dataset_fingerprint",
    "dataset_statistics",
    "default_cache_dir",
    "statistics_cache_path",
]


def default_cache_dir() -> Path:
    """``$OTAE_CACHE_DIR`` if set, else ``~/.cache/otae``."""
    return Path(os.environ.get("OTAE_CACHE_DIR") or Path.home() / ".cache" / "otae").expanduser()


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("_") or "_"


def dataset_fingerprint(dataset: Any, n: int, probe: int = 16) -> str:
    """Short hash of ``len(dataset)`` and the bytes of its first ``min(n, probe)`` images.

    Guards the statistics cache against two datasets given the same ``key`` (another
    root folder, another preprocessing) without reading all ``n`` images.
    """
    count = min(int(n), int(probe), num_items(dataset))
    x, _ = take_batch(dataset, torch.arange(count))
    x = x.detach().to("cpu", torch.float32).contiguous()
    digest = hashlib.sha256()
    digest.update(f"{num_items(dataset)}:{tuple(x.shape)}:".encode())
    digest.update(x.numpy().tobytes())
    return digest.hexdigest()[:12]


def statistics_cache_path(
    cache_dir: str | os.PathLike, key: str, n: int, extractor_name: str, fingerprint: str
) -> Path:
    """``cache_dir/<key>-n<n>-<extractor name>-<fingerprint>.npz`` (unsafe characters -> ``_``)."""
    stem = f"{_safe(key)}-n{int(n)}-{_safe(extractor_name)}-{_safe(fingerprint)}"
    return Path(cache_dir) / f"{stem}.npz"


def features_of(extractor: Callable[[Tensor], Any], images: Tensor) -> np.ndarray:
    """``extractor(images)`` as a float64 ``(N, D)`` array, or a ValueError naming its shape."""
    features = np.asarray(extractor(images), dtype=np.float64)
    if features.ndim != 2 or features.shape[0] != images.shape[0]:
        raise ValueError(
            f"the feature extractor returned shape {features.shape} for "
            f"{images.shape[0]} images; expected (N, D)"
        )
    return features


def _load_cached(path: Path, n: int, name: str) -> tuple[np.ndarray, np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as data:
            mu, sigma = np.array(data["mu"]), np.array(data["sigma"])
            cached_n, cached_name = int(data["n"]), str(data["extractor"])
    except (OSError, KeyError, ValueError):
        return None
    if cached_n != n or cached_name != name or sigma.shape != (mu.shape[0], mu.shape[0]):
        return None
    return mu, sigma


def _save_cached(path: Path, mu: np.ndarray, sigma: np.ndarray, n: int, name: str, key: str):
    atomic_write(
        path,
        lambda f: np.savez(
            f, mu=mu, sigma=sigma, n=np.int64(n), extractor=np.str_(name), key=np.str_(key)
        ),
    )


def dataset_statistics(
    dataset: Any,
    extractor: FeatureExtractor,
    n: int,
    *,
    key: str,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
    batch_size: int = 500,
) -> tuple[np.ndarray, np.ndarray]:
    """``(mu, sigma)`` of the features of the first ``n`` images of ``dataset``, cached.

    ``key`` names the dataset *and its split* (e.g. ``"mnist-test"``); the cache file
    (:func:`statistics_cache_path`, in ``cache_dir`` or :func:`default_cache_dir`) adds
    ``n``, ``extractor.name`` and a fingerprint of the data, so different settings never
    share a file. It holds ``mu``, ``sigma`` and ``n`` (``np.savez``, read with
    ``allow_pickle=False``); a file that does not match is recomputed and overwritten.
    ``use_cache=False`` neither reads nor writes it.
    """
    n = int(n)
    available = num_items(dataset)
    if not 2 <= n <= available:
        raise ValueError(f"n must be between 2 and the {available} images available, got {n}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    name = str(extractor.name)
    path = None
    if use_cache:
        directory = default_cache_dir() if cache_dir is None else Path(cache_dir)
        path = statistics_cache_path(directory, key, n, name, dataset_fingerprint(dataset, n))
        cached = _load_cached(path, n, name) if path.is_file() else None
        if cached is not None:
            return cached
    parts = []
    for start in range(0, n, int(batch_size)):
        x, _ = take_batch(dataset, torch.arange(start, min(n, start + int(batch_size))))
        parts.append(features_of(extractor, x.float().clamp(0, 1)))
    mu, sigma = feature_statistics(np.concatenate(parts))
    if path is not None:
        _save_cached(path, mu, sigma, n, name, key)
    return mu, sigma
