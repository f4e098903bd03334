"""IDX files (the MNIST format), plain or gzip-compressed, read without pickling."""

from __future__ import annotations

import gzip
import math
import os
import zlib
from importlib.resources import files
from pathlib import Path

import numpy as np

# IDX type codes -> numpy dtypes (big-endian on disk).
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

MNIST_FILES = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}


def default_mnist_dir() -> Path:
    """``$OTAE_MNIST_DIR`` if set, else the MNIST files embedded in the package.

    The embedded copy lives in ``otae/data/files/mnist`` (CC BY-SA 3.0, see its
    ``LICENSE.md``) and is found with :mod:`importlib.resources`.
    """
    env = os.environ.get("OTAE_MNIST_DIR")
    if env:
        return Path(env)
    # An installed package (wheel or editable) is a folder on disk, so this is a real path.
    return Path(str(files("otae.data") / "files" / "mnist"))


_FIX = "copy or download the file again"


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped if it is gzip data (by content, not by name)."""
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] != b"\x1f\x8b":
        if path.suffix == ".gz":
            raise ValueError(f"{path} is not gzip data although named .gz: it is damaged; {_FIX}")
        return raw
    try:
        return gzip.decompress(raw)
    except EOFError:
        raise ValueError(
            f"{path} is truncated: its gzip data ends early ({len(raw)} bytes on disk); {_FIX}"
        ) from None
    except (zlib.error, gzip.BadGzipFile) as err:  # flipped bits: bad data, CRC or length
        raise ValueError(f"{path} is corrupt: damaged gzip data ({err}); {_FIX}") from None


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (``.gz`` or raw) into a numpy array of its stored dtype and shape.

    A damaged file (truncated, flipped bits, wrong header) raises ``ValueError`` naming
    the file and what is wrong.
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path} is not an IDX file (bad magic number)")
    code, ndim = data[2], data[3]
    if code not in _IDX_DTYPES:
        raise ValueError(f"{path}: unknown IDX type code 0x{code:02x} (not an IDX file?)")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path} is truncated: its IDX header is cut short; {_FIX}")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[code])
    expected = math.prod(shape) * dtype.itemsize
    if len(data) - header != expected:
        damage = "truncated" if len(data) - header < expected else "longer than its header says"
        raise ValueError(
            f"{path} is {damage}: its IDX header announces shape {shape} ({expected} bytes) "
            f"but the file holds {len(data) - header} bytes of data; {_FIX}"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


def load_mnist(
    split: str = "test", root: str | os.PathLike | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """MNIST ``split`` ('train' or 'test') as (images uint8 (n, 28, 28), labels uint8 (n,)).

    Looks for the four canonical IDX files (optionally ``.gz``) in ``root``
    (default: :func:`default_mnist_dir`). Never downloads.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    root = Path(root) if root is not None else default_mnist_dir()
    arrays, paths = [], []
    for kind in ("images", "labels"):
        name = MNIST_FILES[(split, kind)]
        candidates = [root / f"{name}.gz", root / name]
        found = next((p for p in candidates if p.exists()), None)
        if found is None:
            raise FileNotFoundError(
                f"MNIST {split} {kind} not found: put {name}.gz (or {name}) in {root} "
                f"or point OTAE_MNIST_DIR at the folder holding the four MNIST IDX files"
            )
        arrays.append(read_idx(found))
        paths.append(found)
    images, labels = arrays
    check_images_and_labels(images, labels, *paths)
    return images, labels


def check_images_and_labels(
    images: np.ndarray, labels: np.ndarray, images_path: Path, labels_path: Path
) -> None:
    """Unsigned-byte images ``(N, H, W)`` and ``N`` labels, or ValueError naming the file."""
    if images.dtype != np.uint8 or images.ndim != 3:
        raise ValueError(
            f"{images_path}: expected unsigned-byte images of shape (N, H, W), "
            f"got {images.dtype} of shape {images.shape}"
        )
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise ValueError(
            f"{labels_path}: expected {images.shape[0]} labels (one per image of "
            f"{images_path.name}), got shape {labels.shape}"
        )
