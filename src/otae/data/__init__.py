"""Datasets from local files only (no network): MNIST ships inside the package.

:func:`build_dataset` builds any of :data:`DATASETS` (mnist, idx, celeba,
image_folder) as an :class:`ImageDataset` of ``[0, 1]`` images and int64 labels.
"""

from .datasets import (
    DATASETS,
    CelebADataset,
    FirstN,
    ImageDataset,
    ImageFolderDataset,
    TensorImageDataset,
    build_dataset,
    load_idx_dataset,
)
from .idx import default_mnist_dir, load_mnist, read_idx

__all__ = [
    "DATASETS",
    "CelebADataset",
    "FirstN",
    "ImageDataset",
    "ImageFolderDataset",
    "TensorImageDataset",
    "build_dataset",
    "default_mnist_dir",
    "load_idx_dataset",
    "load_mnist",
    "read_idx",
]
