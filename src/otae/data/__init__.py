"""Datasets from local files only (no network): MNIST ships inside the package.

:func:`build_dataset` builds any of :data:`DATASETS` (mnist, idx, celeba,
image_folder, shapes) as an :class:`ImageDataset` of ``[0, 1]`` images and int64 labels;
``shapes`` (:func:`load_shapes`, dSprites-like, rendered in memory) is a
:class:`FactorImageDataset` that also holds its generative factors.
:func:`load_multiview` loads a :class:`MultiViewDataset` (the embedded UCI "handwritten"
set, or a user ``.mat`` / ``.npz`` file).
"""

from .datasets import (
    CelebADataset,
    FirstN,
    ImageDataset,
    ImageFolderDataset,
    TensorImageDataset,
    load_idx_dataset,
)
from .factors import (
    SHAPES_FACTOR_SIZES,
    SHAPES_FACTORS,
    FactorImageDataset,
    load_shapes,
    render_shapes,
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
from .registry import DATASETS, build_dataset

__all__ = [
    "DATASETS",
    "SHAPES_FACTORS",
    "SHAPES_FACTOR_SIZES",
    "CelebADataset",
    "FactorImageDataset",
    "FirstN",
    "ImageDataset",
    "ImageFolderDataset",
    "TensorImageDataset",
    "build_dataset",
    "default_mnist_dir",
    "load_idx_dataset",
    "load_mnist",
    "load_shapes",
    "read_idx",
    "render_shapes",
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
