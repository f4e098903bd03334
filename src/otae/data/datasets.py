"""Image datasets from local files: embedded MNIST, any IDX set, CelebA, a folder of images.

Every dataset is an :class:`ImageDataset`: item ``i`` is ``(image, label)`` with
``image`` a float32 ``(C, H, W)`` tensor in ``[0, 1]`` and ``label`` an int64
scalar tensor (``-1`` for unlabelled data); :meth:`ImageDataset.get_batch` returns
a whole batch at once (vectorised for in-memory data). :mod:`otae.data.registry`
builds them by name. Nothing is ever downloaded.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from .idx import check_images_and_labels, read_idx

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")
CELEBA_URL = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"
CELEBA_SPLITS = {"train": 0, "valid": 1, "test": 2}


def as_index_tensor(indices: Tensor | Sequence[int]) -> Tensor:
    indices = torch.as_tensor(indices, dtype=torch.long)
    if indices.dim() != 1:
        raise ValueError(f"indices must be one-dimensional, got shape {tuple(indices.shape)}")
    return indices


def _pil_to_tensor(image: Image.Image) -> Tensor:
    """PIL image (mode L or RGB) -> float32 (C, H, W) in [0, 1]."""
    array = np.asarray(image, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.transpose(2, 0, 1).copy()).float().div_(255)


def _load_image(path: Path, mode: str) -> Image.Image:
    """The image file converted to ``mode``; a damaged file raises ValueError naming it."""
    try:
        with Image.open(path) as image:
            return image.convert(mode)
    except FileNotFoundError:
        raise
    except (OSError, SyntaxError, ValueError) as err:  # PIL's errors for damaged files
        raise ValueError(f"{path}: cannot read this image file, it is damaged ({err})") from None


def _image_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as image:
            return image.size
    except FileNotFoundError:
        raise
    except (OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"{path}: cannot read this image file, it is damaged ({err})") from None


def _size_pair(image_size: int | Sequence[int] | None) -> tuple[int, int] | None:
    """``None``, a side length, or ``(height, width)`` -> ``(height, width)``."""
    if image_size is None:
        return None
    if isinstance(image_size, (int, np.integer)):
        pair = (int(image_size), int(image_size))
    else:
        pair = tuple(int(s) for s in image_size)
    if len(pair) != 2 or min(pair) < 1:
        raise ValueError(
            f"image_size must be a positive int or (height, width), got {image_size!r}"
        )
    return pair  # type: ignore[return-value]


class ImageDataset(Dataset):
    """Images in ``[0, 1]`` with int64 labels (``-1``: unlabelled)."""

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(channels, height, width)`` of every image."""
        raise NotImplementedError

    @property
    def labels(self) -> Tensor | None:
        """All labels as a LongTensor ``(N,)``, or ``None`` for unlabelled data."""
        return None

    @property
    def device(self) -> torch.device | None:
        """Where :meth:`get_batch` builds its batches (None: on the host, item by item)."""
        return None

    def on_device(self, device: torch.device) -> ImageDataset:
        """This dataset with its examples held on ``device`` if it lives in memory (indexed
        there, no per-batch copy); datasets read from disk return themselves."""
        return self

    def get_batch(self, indices: Tensor | Sequence[int]) -> tuple[Tensor, Tensor]:
        """Images ``(B, C, H, W)`` float32 in ``[0, 1]`` and labels ``(B,)`` int64."""
        indices = as_index_tensor(indices)
        if len(indices) == 0:
            return torch.zeros(0, *self.image_shape), torch.zeros(0, dtype=torch.long)
        items = [self[i] for i in indices.tolist()]
        return torch.stack([x for x, _ in items]), torch.stack([y for _, y in items])

    def first(self, n: int) -> ImageDataset:
        """The first ``n`` examples (deterministic subset)."""
        return FirstN(self, self._check_subset(n))

    def subset(self, indices: Tensor | Sequence[int]) -> ImageDataset:
        """The examples at ``indices`` (in that order)."""
        return Rows(self, indices)

    def _check_rows(self, indices: Tensor | Sequence[int]) -> Tensor:
        indices = as_index_tensor(indices).cpu()
        if len(indices) and (indices.min() < 0 or indices.max() >= len(self)):
            raise IndexError(f"subset indices out of range for a dataset of {len(self)} examples")
        return indices

    def _check_subset(self, n: int) -> int:
        n = int(n)
        if n < 1:
            raise ValueError(f"subset must be a positive number of examples, got {n}")
        if n > len(self):
            raise ValueError(f"subset={n} asks for more examples than the {len(self)} available")
        return n

    def _check_index(self, index: int) -> int:
        n = len(self)
        index = int(index)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"index {index} out of range for a dataset of {n} examples")
        return index


class FirstN(ImageDataset):
    """The first ``n`` examples of another dataset."""

    def __init__(self, base: ImageDataset, n: int) -> None:
        self.base = base
        self.n = int(n)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.base[self._check_index(index)]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.base.image_shape

    @property
    def labels(self) -> Tensor | None:
        labels = self.base.labels
        return None if labels is None else labels[: self.n]

    @property
    def device(self) -> torch.device | None:
        return self.base.device

    def on_device(self, device: torch.device) -> ImageDataset:
        moved = self.base.on_device(device)
        return self if moved is self.base else moved.first(self.n)

    def get_batch(self, indices: Tensor | Sequence[int]) -> tuple[Tensor, Tensor]:
        indices = as_index_tensor(indices)
        if len(indices) and (indices.min() < -self.n or indices.max() >= self.n):
            raise IndexError(f"batch indices out of range for a dataset of {self.n} examples")
        return self.base.get_batch(torch.where(indices < 0, indices + self.n, indices))


class Rows(ImageDataset):
    """The examples of another dataset at given indices (e.g. a validation split)."""

    def __init__(self, base: ImageDataset, indices: Tensor | Sequence[int]) -> None:
        self.base = base
        self.indices = base._check_rows(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.base[int(self.indices[self._check_index(index)])]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.base.image_shape

    @property
    def labels(self) -> Tensor | None:
        labels = self.base.labels
        return None if labels is None else labels[self.indices.to(labels.device)]

    @property
    def device(self) -> torch.device | None:
        return self.base.device

    def on_device(self, device: torch.device) -> ImageDataset:
        moved = self.base.on_device(device)
        return self if moved is self.base else moved.subset(self.indices)

    def get_batch(self, indices: Tensor | Sequence[int]) -> tuple[Tensor, Tensor]:
        indices = as_index_tensor(indices)
        n = len(self.indices)
        if len(indices) and (indices.min() < -n or indices.max() >= n):
            raise IndexError(f"batch indices out of range for a dataset of {n} examples")
        rows = self.indices.to(indices.device)[torch.where(indices < 0, indices + n, indices)]
        return self.base.get_batch(rows)


class TensorImageDataset(ImageDataset):
    """In-memory uint8 images ``(N, C, H, W)`` and optional labels ``(N,)``."""

    def __init__(self, images: Tensor | np.ndarray, labels: Tensor | np.ndarray | None = None):
        images = torch.as_tensor(images)
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(
                f"images must be a uint8 tensor of shape (N, C, H, W), "
                f"got {images.dtype} of shape {tuple(images.shape)}"
            )
        if labels is not None:
            labels = torch.as_tensor(labels).long()
            if labels.shape != (images.shape[0],):
                raise ValueError(
                    f"labels must have shape ({images.shape[0]},) to match the images, "
                    f"got {tuple(labels.shape)}"
                )
        self.images = images
        self._labels = labels

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        index = self._check_index(index)
        label = self._labels[index] if self._labels is not None else torch.tensor(-1)
        return self.images[index].float().div_(255), label.clone()

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    @property
    def labels(self) -> Tensor | None:
        return self._labels

    @property
    def device(self) -> torch.device:
        return self.images.device

    def on_device(self, device: torch.device) -> TensorImageDataset:
        # uint8 on the device (MNIST: 47 MB); converted to float per batch there
        labels = None if self._labels is None else self._labels.to(device)
        return TensorImageDataset(self.images.to(device), labels)

    def get_batch(self, indices: Tensor | Sequence[int]) -> tuple[Tensor, Tensor]:
        indices = as_index_tensor(indices)
        images = self.images[indices].float().div_(255)
        if self._labels is None:
            return images, torch.full((len(indices),), -1, dtype=torch.long, device=images.device)
        return images, self._labels[indices]

    def first(self, n: int) -> ImageDataset:
        n = self._check_subset(n)
        labels = None if self._labels is None else self._labels[:n]
        return TensorImageDataset(self.images[:n], labels)

    def subset(self, indices: Tensor | Sequence[int]) -> ImageDataset:
        rows = self._check_rows(indices).to(self.images.device)
        labels = None if self._labels is None else self._labels[rows]
        return TensorImageDataset(self.images[rows], labels)


def _idx_file(root: Path, split: str, kind: str) -> Path:
    """The ``split`` ``kind`` ('images' / 'labels') IDX file in ``root``, or FileNotFoundError."""
    prefixes = ("train",) if split == "train" else ("t10k", "test")
    stem = "images-idx3-ubyte" if kind == "images" else "labels-idx1-ubyte"
    candidates = []
    for prefix in prefixes:
        for sep in ("-", "."):  # 'train-images.idx3-ubyte' is how some unpackers name them
            name = f"{prefix}-{stem}" if sep == "-" else f"{prefix}-{stem.replace('-', '.', 1)}"
            candidates += [root / f"{name}.gz", root / name]
    found = next((p for p in candidates if p.is_file()), None)
    if found is None:
        expected = ", ".join(str(p) for p in candidates[:2])
        others = ", ".join(p.name for p in candidates[2:])
        raise FileNotFoundError(
            f"IDX {split} {kind} not found: expected {expected} (also accepted: {others})"
        )
    return found


def load_idx_dataset(root: str | os.PathLike, split: str = "train") -> TensorImageDataset:
    """An MNIST-like IDX set in ``root``: uint8 images ``(N, H, W)`` become ``(N, 1, H, W)``."""
    if split not in ("train", "test"):
        raise ValueError(f"idx split must be 'train' or 'test', got {split!r}")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"IDX data folder {root} does not exist")
    images_path = _idx_file(root, split, "images")
    labels_path = _idx_file(root, split, "labels")
    images, labels = read_idx(images_path), read_idx(labels_path)
    check_images_and_labels(images, labels, images_path, labels_path)
    return TensorImageDataset(torch.from_numpy(images)[:, None], torch.from_numpy(labels).long())


class CelebADataset(ImageDataset):
    """CelebA aligned faces, loaded lazily: centre crop ``crop`` then bilinear resize.

    ``root`` must hold ``img_align_celeba/`` (the 202,599 ``NNNNNN.jpg`` files of
    "Align&Cropped Images") and the official ``list_eval_partition.txt`` (lines
    ``000001.jpg 0``; 0 train, 1 valid, 2 test), both from the CelebA site; every
    image the split lists must be there (checked when the dataset is built).
    Labels are all ``-1``: CelebA's attribute and identity files are not read, so
    metrics that need labels (the classifier FD) do not apply; use FID.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        image_size: int = 64,
        crop: int | None = 140,
    ) -> None:
        if split not in CELEBA_SPLITS:
            raise ValueError(
                f"celeba split must be one of {', '.join(CELEBA_SPLITS)}, got {split!r}"
            )
        self.root = Path(root)
        self.split = split
        self.image_size = int(image_size)
        self.crop = None if crop is None else int(crop)
        if self.image_size < 1 or (self.crop is not None and self.crop < 1):
            raise ValueError(f"image_size and crop must be positive, got {image_size}, {crop}")
        self.image_dir = self.root / "img_align_celeba"
        partition = self.root / "list_eval_partition.txt"
        fetch = (
            f"download 'Align&Cropped Images' (img_align_celeba.zip) and the evaluation "
            f"partition list_eval_partition.txt from the official CelebA site ({CELEBA_URL}) "
            f"and unpack them into {self.root} (otae never downloads)"
        )
        if not partition.is_file():
            raise FileNotFoundError(f"CelebA split file {partition} not found: {fetch}")
        if not self.image_dir.is_dir():
            raise FileNotFoundError(f"CelebA image folder {self.image_dir} not found: {fetch}")
        self.files = self._read_partition(partition, CELEBA_SPLITS[split])
        if not self.files:
            raise ValueError(f"{partition} lists no image of the {split!r} split")
        # One listing of the folder (202,599 names: well under a second), so that a
        # partly unpacked zip fails here, not hours into training.
        present = set(os.listdir(self.image_dir))
        missing = [name for name in self.files if name not in present]
        if missing:
            raise FileNotFoundError(
                f"CelebA image {self.image_dir / missing[0]} (listed in {partition}) not found"
                f" ({len(missing)} of the {len(self.files)} {split} images are missing): {fetch}"
            )

    @staticmethod
    def _read_partition(path: Path, wanted: int) -> list[str]:
        names = []
        try:
            text = path.read_text(encoding="utf-8-sig")  # a BOM is not a file name
        except UnicodeDecodeError as err:
            raise ValueError(f"{path} is not a text file (not UTF-8: {err.reason})") from None
        for number, line in enumerate(text.splitlines(), start=1):
            fields = line.replace(",", " ").split()
            if not fields:
                continue
            if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
                if number == 1 and len(fields) == 2 and not fields[1].isdigit():
                    # a header such as 'image_id,partition' (the CSV variant of the file)
                    continue
                raise ValueError(
                    f"{path}, line {number}: expected '<file name> <0|1|2>', "
                    f"got {line.strip()!r}"
                )
            if int(fields[1]) == wanted:
                names.append(fields[0])
        return names

    def __len__(self) -> int:
        return len(self.files)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (3, self.image_size, self.image_size)

    def load_image(self, path: str | os.PathLike) -> Tensor:
        """One file through the preprocessing: centre crop, resize, float (3, S, S)."""
        image = _load_image(Path(path), "RGB")
        if self.crop is not None:
            width, height = image.size
            if width < self.crop or height < self.crop:
                raise ValueError(
                    f"{path} is {width}x{height}, smaller than the {self.crop}x{self.crop} crop"
                )
            left = int(round((width - self.crop) / 2))
            top = int(round((height - self.crop) / 2))
            image = image.crop((left, top, left + self.crop, top + self.crop))
        if image.size != (self.image_size, self.image_size):
            image = image.resize((self.image_size, self.image_size), Image.Resampling.BILINEAR)
        return _pil_to_tensor(image)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        path = self.image_dir / self.files[self._check_index(index)]
        if not path.is_file():
            raise FileNotFoundError(f"CelebA image {path} is listed in the split file but missing")
        return self.load_image(path), torch.tensor(-1)


class ImageFolderDataset(ImageDataset):
    """Every png/jpg/jpeg/bmp file under ``root`` (recursively, sorted by relative path).

    If every image sits in a sub-folder of ``root`` (none directly in it), the
    label is the index of its top-level sub-folder among the sorted sub-folder
    names (:attr:`classes`); otherwise all labels are ``-1``. Images are converted
    to ``channels`` (3: RGB, 1: grey) and resized (bilinear) to ``image_size`` if
    given; without ``image_size`` all images must have the same size.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        image_size: int | Sequence[int] | None = None,
        channels: int = 3,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder {self.root} does not exist")
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 (grey) or 3 (RGB), got {channels}")
        self.channels = int(channels)
        self.size = _size_pair(image_size)  # (height, width) or None
        files = sorted(
            (
                p
                for p in self.root.rglob("*")
                if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
            ),
            key=lambda p: p.relative_to(self.root).as_posix(),
        )
        if not files:
            raise FileNotFoundError(
                f"no image files ({', '.join(IMAGE_EXTENSIONS)}) found under {self.root}"
            )
        self.files = files
        relative = [p.relative_to(self.root).parts for p in files]
        if all(len(parts) > 1 for parts in relative):
            self.classes: list[str] | None = sorted({parts[0] for parts in relative})
            index = {name: i for i, name in enumerate(self.classes)}
            self._labels: Tensor | None = torch.tensor(
                [index[parts[0]] for parts in relative], dtype=torch.long
            )
        else:
            self.classes, self._labels = None, None
        if self.size is None:
            sizes: dict[tuple[int, int], Path] = {}
            for path in files:
                sizes.setdefault(_image_size(path), path)
                if len(sizes) > 1:
                    (s1, p1), (s2, p2) = list(sizes.items())[:2]
                    raise ValueError(
                        f"images under {self.root} differ in size ({p1} is {s1[0]}x{s1[1]}, "
                        f"{p2} is {s2[0]}x{s2[1]}); set image_size (data.image_size) to resize them"
                    )
            width, height = next(iter(sizes))
            self._shape = (self.channels, height, width)
        else:
            self._shape = (self.channels, *self.size)

    def __len__(self) -> int:
        return len(self.files)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self._shape  # type: ignore[return-value]

    @property
    def labels(self) -> Tensor | None:
        return self._labels

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        index = self._check_index(index)
        path = self.files[index]
        image = _load_image(path, "RGB" if self.channels == 3 else "L")
        height, width = self._shape[1:]
        if image.size != (width, height):
            if self.size is None:
                raise ValueError(f"{path} changed size since the dataset was built")
            image = image.resize((width, height), Image.Resampling.BILINEAR)
        label = self._labels[index] if self._labels is not None else torch.tensor(-1)
        return _pil_to_tensor(image), label.clone()


__all__ = [
    "CelebADataset",
    "FirstN",
    "ImageDataset",
    "ImageFolderDataset",
    "Rows",
    "TensorImageDataset",
    "as_index_tensor",
    "load_idx_dataset",
]
