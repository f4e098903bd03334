"""One way to count, batch and label anything that holds images.

otae's functions accept images as a ``(N, C, H, W)`` tensor or as a dataset with
``__len__`` and ``get_batch(indices) -> (images, labels)`` (every
:class:`~otae.data.ImageDataset`); these helpers are the only place that tells the two
apart, so every evaluation, figure and training path iterates data the same way.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

__all__ = ["iter_batches", "labels_of", "num_items", "take_batch"]


def _is_dataset(images: Any) -> bool:
    return not isinstance(images, Tensor) and hasattr(images, "get_batch")


def num_items(images: Any) -> int:
    """Number of images in a tensor or a dataset-like object."""
    if isinstance(images, Tensor):
        if images.dim() != 4:
            raise ValueError(f"images must have shape (N, C, H, W), got {tuple(images.shape)}")
        return int(images.shape[0])
    if _is_dataset(images):
        return len(images)
    raise TypeError(
        "images must be a (N, C, H, W) tensor or a dataset with __len__ and "
        f"get_batch(indices), got {type(images).__name__}"
    )


def take_batch(images: Any, indices: Tensor) -> tuple[Tensor, Tensor | None]:
    """``(images[indices], labels[indices] or None)`` from a tensor or a dataset."""
    indices = torch.as_tensor(indices, dtype=torch.long)
    if isinstance(images, Tensor):
        return images[indices.to(images.device)], None
    batch = images.get_batch(indices)
    if isinstance(batch, (tuple, list)):
        x = batch[0]
        y = batch[1] if len(batch) > 1 else None
    else:
        x, y = batch, None
    return x, y


def iter_batches(images: Any, batch_size: int) -> Iterator[tuple[Tensor, Tensor | None]]:
    """``(images, labels or None)`` of consecutive batches of ``batch_size`` (the last one
    may be smaller), in order; a tensor is sliced, not indexed (no copy)."""
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = num_items(images)
    for start in range(0, n, int(batch_size)):
        stop = min(n, start + int(batch_size))
        if isinstance(images, Tensor):
            yield images[start:stop], None
        else:
            yield take_batch(images, torch.arange(start, stop))


def labels_of(dataset: Any) -> Tensor | None:
    """All labels of ``dataset`` as an int64 tensor (its ``labels`` attribute, else read
    batch by batch), or None when it has none, is empty, or marks any image unlabelled
    (a negative label)."""
    labels = getattr(dataset, "labels", None)
    if labels is None:
        parts = [y for _, y in iter_batches(dataset, 4096)] if _is_dataset(dataset) else []
        if not parts or any(y is None for y in parts):
            return None
        labels = torch.cat(parts)
    labels = torch.as_tensor(labels).long()
    return None if labels.numel() == 0 or bool((labels < 0).any()) else labels
