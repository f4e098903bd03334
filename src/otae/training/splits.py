"""The datasets of a run: the splits a :class:`~otae.training.DataConfig` names, and the
validation rows early stopping holds out of the training set."""

from __future__ import annotations

import torch
from torch import Tensor

from ..data import ImageDataset, build_dataset
from .config import DataConfig, EarlyStoppingConfig

__all__ = ["build_split", "carve_validation", "validation_split"]


def build_split(data: DataConfig, split: str) -> ImageDataset:
    """The ``train`` or ``test`` split described by a :class:`DataConfig`."""
    subset = data.train_subset if split == "train" else data.test_subset
    return build_dataset(
        data.name, split, root=data.root, subset=subset, image_size=data.image_size
    )


def validation_split(n: int, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """``(training rows, validation rows)`` of a training set of ``n`` rows, each sorted.

    ``round(fraction * n)`` rows (at least one, and one fewer than ``n`` at most) drawn by
    a permutation seeded with ``seed`` alone: the same on every rank and for every
    ``training.seed``.
    """
    if n < 2:
        raise ValueError(
            f"training.early_stopping needs at least 2 training examples to hold some out "
            f"for validation, got {n}"
        )
    n_val = min(max(round(fraction * n), 1), n - 1)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[n_val:].sort().values, order[:n_val].sort().values


def carve_validation(
    data: ImageDataset, config: EarlyStoppingConfig
) -> tuple[ImageDataset, ImageDataset]:
    """``(training rows, validation rows)`` of ``data`` (:func:`validation_split`)."""
    train_rows, val_rows = validation_split(
        len(data), config.validation_fraction, config.validation_seed
    )
    return data.subset(train_rows), data.subset(val_rows)
