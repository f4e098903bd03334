"""``shapes``: a dSprites-like dataset with known generative factors, rendered by otae.

dSprites (Matthey et al. 2017, https://github.com/deepmind/dsprites-dataset) shows a
white shape on black, generated from the full product of five independent factors;
it is the standard test bed of disentanglement metrics. ``shapes`` follows its
recipe at a CPU size and is rendered here with numpy (nothing is downloaded or
cached; the 6144 images at 64x64 take about a second).

Factors (:data:`SHAPES_FACTORS`), all indices into the values below:

====================  =====  ===============================================================
factor                size   values
====================  =====  ===============================================================
``shape``             3      square, ellipse (axes 2:1.2), heart
``scale``             4      0.5, 2/3, 5/6, 1 (times :data:`SHAPES_RADIUS`)
``orientation``       8      ``k / 8`` of the shape's symmetry period: square 90 deg,
                             ellipse 180 deg, heart 360 deg (counter-clockwise on screen)
``position_x``        8      column of the centre, 0.2 .. 0.8 of the width, evenly spaced
``position_y``        8      row of the centre (0 = top), 0.2 .. 0.8 of the height
====================  =====  ===============================================================

The grid is the full product, 3 x 4 x 8 x 8 x 8 = 6144 images, so the factors are
independent and uniform and every combination appears once; an image's index in the
grid is ``np.ravel_multi_index(factors, SHAPES_FACTOR_SIZES)``. Every shape fits in
a disc of radius ``scale * SHAPES_RADIUS`` (0.18 of the side) around its position
(the heart's centroid, the others' centre), so none is cropped.

Rendering: anti-aliased, not binary. A pixel's value is the fraction of its
``4 x 4`` sub-pixel sample points inside the shape (17 grey levels, stored as
uint8), so small shapes at 32x32 still move and turn smoothly. ``image_size`` renders
at that size directly (same geometry in fractions of the side), never by resizing.

Symmetries: a square turned by 90 deg, or an ellipse by 180 deg, is the same image.
dSprites uses the same 40 angles in [0, 2 pi) for every shape, so its square and
ellipse orientations are only identifiable modulo those symmetries, which caps any
metric below 1. Here each shape's 8 angles cover exactly one symmetry period, so all
6144 images differ and the factors are a function of the image. Orientation is still
circular: index 7 is as close to index 0 as to index 6. The heart is mirror
symmetric about its vertical axis, the square and ellipse about both axes.

Split: a fixed permutation of the grid (seed :data:`SHAPES_SPLIT_SEED`) puts its first
614 images (10 %) in ``test`` and the other 5530 in ``train``, each in that permuted
order, so that a first-``n`` subset (``data.train_subset``) is a uniform sample of the
grid, not only squares; ``all`` is the whole grid in grid order.

Fine grid (dataset ``shapes_fine``, ``grid="fine"``): the same shapes and rendering on
3 x 7 x 16 x 15 x 15 = 75,600 combinations, each continuous factor refined by inserting
the midpoint between neighbouring values (scales 0.5, 7/12, .., 1; 16 orientations per
symmetry period; 15 positions per axis, 0.2 .. 0.8). Every ``shapes`` combination is
one of them (even indices of the refined factors, same values bit for bit), and renders
to the same pixels. No factor has more than 20 values, so MIG's 20 equal-width bins
still give every value of a perfectly encoded factor its own bin (dSprites' 32
positions and 40 angles cap it near 0.89). Split: seed :data:`SHAPES_FINE_SPLIT_SEED`,
7560 ``test`` images (10 %), 68,040 ``train``. Memory: one byte a pixel, 77 MB at
32x32 and 310 MB at 64x64 for ``all`` (rendered in 2 s and 6 s of CPU), rendered
:data:`RENDER_CHUNK` images at a time so that the float32 working set stays small.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .datasets import ImageDataset, TensorImageDataset, as_index_tensor

SHAPE_NAMES = ("square", "ellipse", "heart")
SHAPES_FACTORS = ("shape", "scale", "orientation", "position_x", "position_y")
SHAPES_FACTOR_SIZES = (3, 4, 8, 8, 8)
#: Radius, as a fraction of the image side, of the disc holding a shape of scale 1.
SHAPES_RADIUS = 0.18
SHAPES_SCALES = (0.5, 2 / 3, 5 / 6, 1.0)
#: Rotational symmetry period of each shape (radians); orientations cover one period.
SHAPES_PERIODS = (np.pi / 2, np.pi, 2 * np.pi)
#: Offsets of the 8 positions from the image centre, fractions of the side (0.2 .. 0.8).
SHAPES_OFFSETS = tuple((k - 3.5) * (0.6 / 7) for k in range(8))
SHAPES_SPLIT_SEED = 16
SHAPES_TEST_FRACTION = 0.1
SHAPES_SPLITS = ("train", "test", "all")
SUPERSAMPLE = 4
SHAPES_FINE_SPLIT_SEED = 17
#: Images rendered at once by :func:`shapes_images` (float32 working set, 64 MB at 64x64).
RENDER_CHUNK = 4096


def _with_midpoints(values: Sequence[float]) -> tuple[float, ...]:
    """``values`` with the midpoint of each neighbouring pair inserted (2n - 1 values);
    the given values are kept bit for bit, so both grids render them identically."""
    out = [values[0]]
    for a, b in zip(values[:-1], values[1:], strict=True):
        out += [(a + b) / 2, b]
    return tuple(out)


@dataclass(frozen=True)
class ShapesGrid:
    """A factor grid of the shapes: values of the continuous factors and the split."""

    name: str  #: dataset name (:data:`otae.data.DATASETS`)
    scales: tuple[float, ...]
    orientations: int  #: angles per symmetry period, ``k / orientations`` of it
    offsets: tuple[float, ...]  #: positions on both axes, fractions of the side from the centre
    split_seed: int
    test_fraction: float = 0.1

    @property
    def factor_sizes(self) -> tuple[int, int, int, int, int]:
        return (
            len(SHAPE_NAMES), len(self.scales), self.orientations,
            len(self.offsets), len(self.offsets),
        )

    @property
    def size(self) -> int:
        return int(np.prod(self.factor_sizes))


#: ``coarse``: the ``shapes`` dataset; ``fine``: ``shapes_fine``, each continuous factor
#: with midpoints inserted (3 x 7 x 16 x 15 x 15), a superset of ``coarse``.
SHAPES_GRIDS = {
    "coarse": ShapesGrid("shapes", SHAPES_SCALES, 8, SHAPES_OFFSETS, SHAPES_SPLIT_SEED,
                         SHAPES_TEST_FRACTION),
    "fine": ShapesGrid("shapes_fine", _with_midpoints(SHAPES_SCALES), 16,
                       _with_midpoints(SHAPES_OFFSETS), SHAPES_FINE_SPLIT_SEED),
}
SHAPES_FINE_FACTOR_SIZES = SHAPES_GRIDS["fine"].factor_sizes


def shapes_grid_spec(grid: str | ShapesGrid = "coarse") -> ShapesGrid:
    """The :class:`ShapesGrid` named ``grid`` ('coarse' or 'fine')."""
    if isinstance(grid, ShapesGrid):
        return grid
    try:
        return SHAPES_GRIDS[grid]
    except (KeyError, TypeError):
        raise ValueError(
            f"shapes grid must be one of {', '.join(SHAPES_GRIDS)}, got {grid!r}"
        ) from None

# The heart curve (x^2 + y^2 - 1)^3 <= x^2 y^3 (y up) is shifted so that its area
# centroid (y = 0.29348, measured on a 4001^2 grid) is the origin, and shrunk by its
# largest distance from that centroid (1.2932) so that it fits the unit disc.
_HEART_CENTROID_Y = 0.29348
_HEART_RADIUS = 1.2933
_SQUARE_HALF_SIDE = 1 / np.sqrt(2)  # corners on the unit circle
_ELLIPSE_AXES = (1.0, 0.6)


def _inside(shape: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Whether local points ``(a, b)`` (``a`` right, ``b`` down, unit disc) are in ``shape``."""
    if shape == 0:
        return np.maximum(np.abs(a), np.abs(b)) <= _SQUARE_HALF_SIDE
    if shape == 1:
        return (a / _ELLIPSE_AXES[0]) ** 2 + (b / _ELLIPSE_AXES[1]) ** 2 <= 1
    x = a * _HEART_RADIUS
    y = _HEART_CENTROID_Y - b * _HEART_RADIUS
    x2 = x * x
    t = x2 + y * y - 1
    return t * t * t <= x2 * y * y * y  # products, not **: pow is 3x slower


def render_shapes(
    shape: Sequence[int] | np.ndarray,
    scale: Sequence[float] | np.ndarray,
    angle: Sequence[float] | np.ndarray,
    offset_x: Sequence[float] | np.ndarray,
    offset_y: Sequence[float] | np.ndarray,
    image_size: int = 64,
) -> np.ndarray:
    """Anti-aliased images ``(N, S, S)`` float32 in ``[0, 1]``, one per row of the arguments.

    Image ``n`` shows shape ``shape[n]`` (0 square, 1 ellipse, 2 heart) of radius
    ``scale[n] * SHAPES_RADIUS``, turned ``angle[n]`` radians counter-clockwise on
    screen, centred ``offset_x[n]`` right and ``offset_y[n]`` down of the image centre
    (fractions of the side). A pixel's value is the fraction of its ``4 x 4`` sample
    points (at ``(j + 1/2) / 4`` of the pixel) inside the shape.
    """
    size = int(image_size)
    shape, scale, angle, offset_x, offset_y = (
        v.reshape(-1)
        for v in np.broadcast_arrays(
            np.asarray(shape, dtype=np.int64),
            *(np.asarray(v, dtype=np.float64) for v in (scale, angle, offset_x, offset_y)),
        )
    )
    if size < 1:
        raise ValueError(f"image_size must be a positive int, got {image_size!r}")
    if not np.isin(shape, (0, 1, 2)).all():
        raise ValueError(f"shape must hold 0 (square), 1 (ellipse) or 2 (heart), got {shape}")
    if not (scale > 0).all():
        raise ValueError(f"scale must be positive, got {scale}")
    n = len(shape)
    images = np.zeros((n, size, size), dtype=np.float32)
    sub = (np.arange(SUPERSAMPLE) + 0.5) / SUPERSAMPLE
    for s, sc in sorted({(int(a), float(b)) for a, b in zip(shape, scale, strict=True)}):
        members = np.flatnonzero((shape == s) & (scale == sc))
        # Each shape is evaluated only in a window of whole pixels around it.
        radius = sc * SHAPES_RADIUS * size
        window = min(size, int(np.ceil(2 * radius)) + 2)
        grid = (np.arange(window)[:, None] + sub[None, :]).reshape(-1)  # (window * 4,)
        for idx in np.array_split(members, max(1, len(members) // 64)):
            # Coordinates relative to the centre are formed as (pixel - S/2) - S * offset
            # so that mirrored offsets give exactly negated coordinates (exact flips).
            cx, cy = size * offset_x[idx], size * offset_y[idx]
            x0 = np.clip(np.floor(size / 2 + cx - radius) - 1, 0, size - window).astype(np.int64)
            y0 = np.clip(np.floor(size / 2 + cy - radius) - 1, 0, size - window).astype(np.int64)
            # float32 from here (2x faster); negation, hence mirror symmetry, stays exact.
            u = (((x0[:, None] + grid) - size / 2) - cx[:, None]) / radius  # (m, W4) right
            v = (((y0[:, None] + grid) - size / 2) - cy[:, None]) / radius  # (m, W4) down
            u = u.astype(np.float32)[:, None, :]  # columns
            v = v.astype(np.float32)[:, :, None]  # rows
            c = np.cos(angle[idx]).astype(np.float32)[:, None, None]
            si = np.sin(angle[idx]).astype(np.float32)[:, None, None]
            # Screen (u, v) -> shape frame: rotate back by the angle (CCW on screen, v down).
            inside = _inside(s, c * u - si * v, si * u + c * v)
            cover = inside.reshape(len(idx), window, SUPERSAMPLE, window, SUPERSAMPLE).mean(
                axis=(2, 4), dtype=np.float32
            )
            for k, i in enumerate(idx):
                images[i, y0[k] : y0[k] + window, x0[k] : x0[k] + window] = cover[k]
    return images


def shapes_factor_values(
    factors: np.ndarray, grid: str | ShapesGrid = "coarse"
) -> np.ndarray:
    """Factor indices ``(N, 5)`` of ``grid`` -> values ``(N, 5)`` float: shape index, scale,
    angle (radians), position x and y (fractions of the side, from the top-left corner)."""
    g = shapes_grid_spec(grid)
    factors = np.asarray(factors, dtype=np.int64)
    values = np.empty(factors.shape, dtype=np.float64)
    values[:, 0] = factors[:, 0]
    values[:, 1] = np.asarray(g.scales)[factors[:, 1]]
    values[:, 2] = factors[:, 2] / g.orientations * np.asarray(SHAPES_PERIODS)[factors[:, 0]]
    values[:, 3] = 0.5 + np.asarray(g.offsets)[factors[:, 3]]
    values[:, 4] = 0.5 + np.asarray(g.offsets)[factors[:, 4]]
    return values


def shapes_grid(grid: str | ShapesGrid = "coarse") -> np.ndarray:
    """All factor combinations of ``grid`` ``(N, 5)`` int64 (6144 for 'coarse', 75,600 for
    'fine'), in C order (position_y fastest)."""
    sizes = shapes_grid_spec(grid).factor_sizes
    mesh = np.meshgrid(*(np.arange(k) for k in sizes), indexing="ij")
    return np.stack([m.reshape(-1) for m in mesh], axis=1)


def shapes_split_indices(split: str, grid: str | ShapesGrid = "coarse") -> np.ndarray:
    """Grid indices of ``split`` ('train', 'test' or 'all'); the first two in a fixed
    random order (the grid's split seed), ``all`` in grid order."""
    g = shapes_grid_spec(grid)
    if split not in SHAPES_SPLITS:
        raise ValueError(f"{g.name} split must be one of {', '.join(SHAPES_SPLITS)}, got {split!r}")
    total = g.size
    if split == "all":
        return np.arange(total)
    order = np.random.default_rng(g.split_seed).permutation(total)
    n_test = int(total * g.test_fraction)
    return order[:n_test] if split == "test" else order[n_test:]


def shapes_images(
    factors: np.ndarray, image_size: int = 64, grid: str | ShapesGrid = "coarse"
) -> np.ndarray:
    """The images ``(N, 1, S, S)`` uint8 of factor indices ``(N, 5)`` of ``grid``, rendered
    :data:`RENDER_CHUNK` at a time (the float32 images of a whole fine grid: 1.2 GB)."""
    g = shapes_grid_spec(grid)
    factors = np.asarray(factors, dtype=np.int64).reshape(-1, 5)
    offsets = np.asarray(g.offsets)
    size = int(image_size)
    pixels = np.empty((len(factors), 1, size, size), dtype=np.uint8)
    for start in range(0, len(factors), RENDER_CHUNK):
        f = factors[start : start + RENDER_CHUNK]
        values = shapes_factor_values(f, g)
        images = render_shapes(
            f[:, 0], values[:, 1], values[:, 2], offsets[f[:, 3]], offsets[f[:, 4]],
            image_size=size,
        )
        # 16 sub-pixel samples: value j/16 -> round(255 j / 16), exact levels, no drift.
        pixels[start : start + len(f), 0] = np.rint(images * 255).astype(np.uint8)
    return pixels


class FactorImageDataset(TensorImageDataset):
    """In-memory images with their generative factors.

    ``factors`` is ``(N, K)`` int64 factor indices, ``factor_names`` and
    ``factor_sizes`` name and size the ``K`` factors, ``factor_values`` ``(N, K)``
    float64 holds what the indices stand for; ``labels`` is factor ``label_factor``
    (so label-based code keeps working). Subsets and device copies keep the factors.
    """

    def __init__(
        self,
        images: Tensor | np.ndarray,
        factors: Tensor | np.ndarray,
        factor_names: Sequence[str],
        factor_sizes: Sequence[int],
        factor_values: np.ndarray | None = None,
        label_factor: int = 0,
    ) -> None:
        factors = torch.as_tensor(factors).long()
        names, sizes = tuple(factor_names), tuple(int(s) for s in factor_sizes)
        if factors.dim() != 2 or factors.shape[1] != len(names) or len(sizes) != len(names):
            raise ValueError(
                f"factors must have shape (N, {len(names)}) to match factor_names and "
                f"factor_sizes, got {tuple(factors.shape)} and {len(sizes)} sizes"
            )
        if len(factors) and (
            factors.min() < 0 or (factors >= torch.tensor(sizes, device=factors.device)).any()
        ):
            raise ValueError("factors must be indices in [0, factor_sizes[k]) for column k")
        if not 0 <= label_factor < len(names):
            raise ValueError(f"label_factor must be in [0, {len(names)}), got {label_factor}")
        super().__init__(images, factors[:, label_factor])
        self.factors = factors
        self.factor_names = names
        self.factor_sizes = sizes
        self.factor_values = factor_values
        self.label_factor = int(label_factor)

    def _take(self, index: Tensor | slice) -> FactorImageDataset:
        rows = index if isinstance(index, slice) else index.numpy()
        return FactorImageDataset(
            self.images[index], self.factors[index], self.factor_names, self.factor_sizes,
            None if self.factor_values is None else self.factor_values[rows],
            self.label_factor,
        )

    def first(self, n: int) -> ImageDataset:
        return self._take(slice(0, self._check_subset(n)))

    def subset(self, indices: Tensor | Sequence[int]) -> FactorImageDataset:
        """The examples at ``indices`` (in that order), factors included."""
        return self._take(as_index_tensor(indices))

    def on_device(self, device: torch.device) -> FactorImageDataset:
        return FactorImageDataset(
            self.images.to(device), self.factors.to(device), self.factor_names,
            self.factor_sizes, self.factor_values, self.label_factor,
        )


def load_shapes(
    split: str = "train", image_size: int = 64, grid: str | ShapesGrid = "coarse"
) -> FactorImageDataset:
    """The shapes of ``split`` ('train', 'test', 'all') of ``grid`` rendered at ``image_size``.

    ``grid`` 'coarse' is the ``shapes`` dataset (6144 images), 'fine' is ``shapes_fine``
    (75,600). ``image_size`` is 64 (the default) or 32 (quick CPU runs). Labels are the
    shape.
    """
    g = shapes_grid_spec(grid)
    if image_size not in (32, 64):
        raise ValueError(f"{g.name} image_size must be 64 or 32, got {image_size!r}")
    factors = shapes_grid(g)[shapes_split_indices(split, g)]
    pixels = shapes_images(factors, image_size, g)
    return FactorImageDataset(
        pixels, factors, SHAPES_FACTORS, g.factor_sizes, shapes_factor_values(factors, g)
    )


__all__ = [
    "SHAPES_FACTORS",
    "SHAPES_FACTOR_SIZES",
    "SHAPES_FINE_FACTOR_SIZES",
    "SHAPES_GRIDS",
    "SHAPES_OFFSETS",
    "SHAPES_PERIODS",
    "SHAPES_RADIUS",
    "SHAPES_SCALES",
    "SHAPES_SPLITS",
    "SHAPE_NAMES",
    "FactorImageDataset",
    "ShapesGrid",
    "load_shapes",
    "render_shapes",
    "shapes_factor_values",
    "shapes_grid",
    "shapes_grid_spec",
    "shapes_images",
    "shapes_split_indices",
]
