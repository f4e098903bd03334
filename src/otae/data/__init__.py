"""Datasets from local files only (no network): MNIST ships inside the package.

:func:`build_dataset` builds any of :data:`DATASETS` (mnist, idx, celeba,
image_folder) as an :class:`ImageDataset` of ``[0, 1]`` images and int64 labels.
:func:`load_multiview` loads a :class:`MultiViewDataset` (the embedded UCI "handwritten"
set, or a user ``.mat`` / ``.npz`` file).
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
from .multiview import (
    HANDWRITTEN_VIEWS,
    MULTIVIEW_DATASETS,
    MultiViewDataset,
    default_handwritten_dir,
    load_csv_multiview,
    load_handwritten,
    load_mat_multiview,
    load_multiview,
    load_npz_multiview,
    split_indices,
    standardise,
)

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
    "HANDWRITTEN_VIEWS",
    "MULTIVIEW_DATASETS",
    "MultiViewDataset",
    "default_handwritten_dir",
    "load_csv_multiview",
    "load_handwritten",
    "load_mat_multiview",
    "load_multiview",
    "load_npz_multiview",
    "split_indices",
    "standardise",
]
