"""Datasets by name: :func:`build_dataset` and its registry :data:`DATASETS`.

:func:`build_dataset` builds one by name (see :data:`DATASETS`):

* ``mnist``: the MNIST copy shipped inside the package (``root`` or
  ``$OTAE_MNIST_DIR`` point elsewhere); splits ``train`` / ``test``.
* ``idx``: any MNIST-like IDX set in ``root`` (``train-images-idx3-ubyte[.gz]``,
  ``train-labels-idx1-ubyte[.gz]``, ``t10k-...`` or ``test-...``); splits ``train`` / ``test``.
* ``celeba``: CelebA's aligned images ``root/img_align_celeba/*.jpg`` with the official
  split file ``root/list_eval_partition.txt``; splits ``train`` / ``valid`` / ``test``;
  centre crop 140 then bilinear resize to 64x64 (the paper's preprocessing).
* ``image_folder``: every png/jpg/jpeg/bmp file under ``root``; the split is ignored
  (point ``root`` at a different folder for a test set).
* ``shapes``: dSprites-like shapes with known generative factors, rendered in memory
  (:mod:`otae.data.factors`); splits ``train`` / ``test`` / ``all``; 64x64 or 32x32.
* ``shapes_fine``: the same shapes on a finer factor grid (75,600 images, 7560 test).

Nothing is ever downloaded.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from .datasets import (
    CELEBA_SPLITS,
    CelebADataset,
    ImageDataset,
    ImageFolderDataset,
    TensorImageDataset,
    load_idx_dataset,
)
from .factors import load_shapes, shapes_grid_spec
from .idx import load_mnist

__all__ = ["DATASETS", "DatasetBuilder", "build_dataset"]

#: ``builder(split, root, image_size) -> ImageDataset``
DatasetBuilder = Callable[..., ImageDataset]


def _need_root(name: str, root: str | os.PathLike | None) -> Path:
    if root is None or str(root) == "":
        raise ValueError(
            f"dataset {name!r} reads files from a folder: data.root must be set "
            f"(the root argument of build_dataset)"
        )
    return Path(root).expanduser()


def _check_split(name: str, split: str, allowed: Sequence[str]) -> None:
    if split not in allowed:
        raise ValueError(f"{name} split must be one of {', '.join(allowed)}, got {split!r}")


def _native_size(name: str, dataset: ImageDataset, image_size: int | None) -> ImageDataset:
    if image_size is not None and tuple(dataset.image_shape[1:]) != (image_size, image_size):
        h, w = dataset.image_shape[1:]
        raise ValueError(
            f"{name} images are used at their stored size {h}x{w}; data.image_size must be "
            f"unset (or {h} if square), got {image_size}"
        )
    return dataset


def _build_mnist(split: str, root: str | None, image_size: int | None) -> ImageDataset:
    """MNIST 1x28x28 embedded in the package (root / $OTAE_MNIST_DIR override); train/test."""
    _check_split("mnist", split, ("train", "test"))
    images, labels = load_mnist(split, root=root)
    dataset = TensorImageDataset(torch.from_numpy(images)[:, None], torch.from_numpy(labels))
    return _native_size("mnist", dataset, image_size)


def _build_idx(split: str, root: str | None, image_size: int | None) -> ImageDataset:
    """Any MNIST-like IDX set in data.root (train-/t10k-/test- files, .gz or raw); train/test."""
    _check_split("idx", split, ("train", "test"))
    return _native_size("idx", load_idx_dataset(_need_root("idx", root), split), image_size)


def _build_celeba(split: str, root: str | None, image_size: int | None) -> ImageDataset:
    """CelebA from data.root (img_align_celeba/, list_eval_partition.txt); train/valid/test."""
    _check_split("celeba", split, tuple(CELEBA_SPLITS))
    return CelebADataset(_need_root("celeba", root), split, image_size=image_size or 64)


def _build_image_folder(split: str, root: str | None, image_size: int | None) -> ImageDataset:
    """Every png/jpg/jpeg/bmp under data.root; class sub-folders give labels; split ignored."""
    # One folder is one dataset: use another root for a test set.
    return ImageFolderDataset(_need_root("image_folder", root), image_size=image_size)


def _build_shapes(
    split: str, root: str | None, image_size: int | None, grid: str = "coarse"
) -> ImageDataset:
    """dSprites-like shapes with 5 known factors, rendered by otae; train/test/all, 64 or 32."""

    if root is not None and str(root) != "":
        raise ValueError(
            f"dataset {shapes_grid_spec(grid).name!r} is generated, not read: data.root must "
            f"be unset, got {root!r}"
        )
    return load_shapes(split, image_size=image_size or 64, grid=grid)


def _build_shapes_fine(split: str, root: str | None, image_size: int | None) -> ImageDataset:
    """shapes on a finer factor grid (3 x 7 x 16 x 15 x 15 = 75,600); train/test/all, 64 or 32."""
    return _build_shapes(split, root, image_size, grid="fine")


DATASETS: dict[str, DatasetBuilder] = {
    "mnist": _build_mnist,
    "idx": _build_idx,
    "celeba": _build_celeba,
    "image_folder": _build_image_folder,
    "shapes": _build_shapes,
    "shapes_fine": _build_shapes_fine,
}


def build_dataset(
    name: str,
    split: str = "train",
    root: str | os.PathLike | None = None,
    subset: int | None = None,
    image_size: int | None = None,
) -> ImageDataset:
    """Dataset ``name`` (a key of :data:`DATASETS`), optionally its first ``subset`` examples.

    ``split`` is 'train' / 'test' for mnist and idx, 'train' / 'valid' / 'test' for
    celeba, 'train' / 'test' / 'all' for shapes and shapes_fine, ignored for image_folder.
    ``root`` is the data folder (required except for mnist, whose embedded copy it
    overrides, and shapes, which has none). ``image_size`` resizes celeba (default 64)
    and image_folder images, renders shapes at 64 (default) or 32; mnist and idx keep
    their size.
    """
    try:
        builder = DATASETS[name]
    except KeyError:
        raise ValueError(
            f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}"
        ) from None
    root = None if root is None else os.fspath(root)
    dataset = builder(split, root, None if image_size is None else int(image_size))
    if subset is not None:
        dataset = dataset.first(subset)
    return dataset
