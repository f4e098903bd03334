"""Datasets from local files only (no network): MNIST ships with the repository."""

from .idx import load_mnist, read_idx

__all__ = ["load_mnist", "read_idx"]
