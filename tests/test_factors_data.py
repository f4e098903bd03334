"""The ``shapes`` datasets: pixels against independent rules, symmetries, grids and splits."""

import numpy as np
import pytest
import torch

from otae.data import DATASETS, build_dataset
from otae.data.factors import (
    SHAPES_FACTOR_SIZES,
    SHAPES_FACTORS,
    SHAPES_FINE_FACTOR_SIZES,
    SHAPES_GRIDS,
    SHAPES_OFFSETS,
    SHAPES_PERIODS,
    SHAPES_RADIUS,
    SHAPES_SCALES,
    FactorImageDataset,
    load_shapes,
    render_shapes,
    shapes_factor_values,
    shapes_grid,
    shapes_images,
    shapes_split_indices,
)

HALF_SIDE = 1 / np.sqrt(2)  # the square's corners lie on the unit circle


@pytest.fixture(scope="module")
def all32():
    return load_shapes("all", image_size=32)


def image_of(dataset, factors):
    """The image of the grid dataset ``dataset`` with these factor indices, (S, S) numpy."""
    index = np.ravel_multi_index(tuple(factors), SHAPES_FACTOR_SIZES)
    assert dataset.factors[index].tolist() == list(factors)
    return dataset.images[index, 0].numpy()


def samples_inside(lo, hi, size):
    """Per pixel, how many of its 4 sample points ``i + (j + 1/2) / 4`` lie in ``[lo, hi]``."""
    points = np.arange(size)[:, None] + (np.arange(4) + 0.5) / 4
    return ((points >= lo) & (points <= hi)).sum(axis=1)


@pytest.mark.parametrize("size", [64, 32])
def test_axis_aligned_square_pixels_are_the_sample_counts(size):
    # Independent rule: an axis-aligned square is a product of two intervals, so a
    # pixel's coverage is (samples inside in x) * (samples inside in y) / 16, exactly.
    for scale, ox, oy in [(1.0, 0.0, 0.0), (0.5, 0.1, -0.2), (5 / 6, -0.257, 0.3)]:
        image = render_shapes([0], [scale], [0.0], [ox], [oy], size)[0]
        half = HALF_SIDE * scale * SHAPES_RADIUS * size
        cx, cy = size / 2 + ox * size, size / 2 + oy * size
        nx = samples_inside(cx - half, cx + half, size)
        ny = samples_inside(cy - half, cy + half, size)
        expected = np.outer(ny, nx) / 16
        np.testing.assert_array_equal(image, expected.astype(np.float32))
        # area: the side in pixels squared, within a quarter-pixel band per edge
        side = 2 * half
        assert abs(image.sum() - side**2) <= side / 2 + 1 / 16


@pytest.mark.parametrize("shape,area", [(0, 2.0), (1, np.pi * 1.0 * 0.6), (2, 2.1885)])
def test_shape_area_and_centroid_equal_the_geometry(shape, area):
    # Area in units of the disc radius squared: square 2 (side sqrt 2), ellipse pi a b,
    # heart 2.1885 (the curve's area, 6.9865 x 4001^2-grid estimate / 1.2933^2).
    size = 64
    radius = SHAPES_RADIUS * size
    yy, xx = np.mgrid[:size, :size] + 0.5  # pixel centres
    for scale, angle, ox, oy in [(1, 0.3, 0.0, 0.0), (0.5, 2.0, 0.1, -0.2), (1, 4.0, -0.3, 0.3)]:
        image = render_shapes([shape], [scale], [angle], [ox], [oy], size)[0].astype(np.float64)
        r = scale * radius
        perimeter_band = 8 * r * 0.25  # < perimeter x 1/4 pixel
        assert abs(image.sum() - area * r**2) <= perimeter_band
        # the position factor is the centroid (for the heart, of its area)
        cx = (image * xx).sum() / image.sum()
        cy = (image * yy).sum() / image.sum()
        assert abs(cx - (size / 2 + ox * size)) < 0.1
        assert abs(cy - (size / 2 + oy * size)) < 0.1
        # nothing outside the disc of radius scale * SHAPES_RADIUS (+ one pixel diagonal)
        far = np.hypot(xx - size / 2 - ox * size, yy - size / 2 - oy * size) > r + 0.75
        assert image[far].max() == 0


def test_rotations_are_counter_clockwise_and_squares_repeat_every_90_degrees():
    size = 64
    for shape in range(3):
        for angle in (0.0, 0.3, 1.1):
            # centred at the image centre, the 4x4 sample lattice is invariant under a
            # quarter turn, so np.rot90 (counter-clockwise) must match exactly
            a = render_shapes([shape], [1], [angle], [0], [0], size)[0]
            b = render_shapes([shape], [1], [angle + np.pi / 2], [0], [0], size)[0]
            np.testing.assert_array_equal(np.rot90(a), b)
    for angle in (0.0, 0.4):
        a, b = render_shapes([0, 0], [1, 1], [angle, angle + np.pi / 2], [0.1] * 2, [-0.2] * 2)
        np.testing.assert_array_equal(a, b)
        a, b = render_shapes([1, 1], [1, 1], [angle, angle + np.pi], [0.1] * 2, [-0.2] * 2)
        np.testing.assert_array_equal(a, b)
    # the heart has no rotational symmetry; its tip points down at angle 0
    a, b = render_shapes([2, 2], [1, 1], [0.0, np.pi], [0, 0], [0, 0])
    assert np.abs(a - b).sum() > 50
    heart = a > 0
    rows = np.flatnonzero(heart.any(axis=1))
    assert heart[rows[-1]].sum() < heart[rows[0]].sum()  # narrow bottom row: the tip


def test_mirror_images_are_the_mirrored_factors(all32):
    # left-right flip: x index k -> 7 - k (positions are symmetric about the centre);
    # every shape is mirror symmetric about its vertical axis at orientation 0
    for shape in range(3):
        for scale, x, y in [(0, 0, 3), (3, 2, 7), (1, 5, 0)]:
            image = image_of(all32, (shape, scale, 0, x, y))
            np.testing.assert_array_equal(image[:, ::-1], image_of(all32, (shape, scale, 0, 7 - x, y)))
            if shape < 2:  # square and ellipse are symmetric top-bottom too, the heart is not
                np.testing.assert_array_equal(image[::-1], image_of(all32, (shape, scale, 0, x, 7 - y)))
    heart = image_of(all32, (2, 3, 0, 3, 3))
    assert not np.array_equal(heart[::-1], image_of(all32, (2, 3, 0, 3, 4)))
    # a flip reverses the rotation: angle -> -angle
    for shape in range(3):
        a = render_shapes([shape], [1], [0.7], [0.1], [0.05])[0]
        b = render_shapes([shape], [1], [-0.7], [-0.1], [0.05])[0]
        np.testing.assert_array_equal(a[:, ::-1], b)


def test_grid_is_the_complete_factorial_product(all32):
    grid = shapes_grid()
    assert grid.shape == (6144, 5) and grid.dtype == np.int64
    assert len({tuple(row) for row in grid.tolist()}) == 6144 == np.prod(SHAPES_FACTOR_SIZES)
    np.testing.assert_array_equal(np.ravel_multi_index(grid.T, SHAPES_FACTOR_SIZES), np.arange(6144))
    assert torch.equal(all32.factors, torch.from_numpy(grid))
    assert all32.factor_names == SHAPES_FACTORS and all32.factor_sizes == SHAPES_FACTOR_SIZES
    assert torch.equal(all32.labels, all32.factors[:, 0])
    # factor values
    values = all32.factor_values
    np.testing.assert_allclose(values[:, 1], np.asarray(SHAPES_SCALES)[grid[:, 1]])
    np.testing.assert_allclose(
        values[:, 2], grid[:, 2] * np.asarray(SHAPES_PERIODS)[grid[:, 0]] / 8
    )
    np.testing.assert_allclose(np.unique(values[:, 3]), np.linspace(0.2, 0.8, 8))
    np.testing.assert_allclose(np.asarray(SHAPES_OFFSETS), np.linspace(-0.3, 0.3, 8))
    # with one symmetry period of orientations per shape, no two images coincide
    flat = all32.images.reshape(6144, -1).numpy()
    assert len({row.tobytes() for row in flat}) == 6144
    # shapes differ: same scale, orientation and position, another shape -> another image
    for rest in [(3, 0, 3, 3), (0, 0, 0, 7), (2, 5, 6, 1)]:
        a, b, c = (image_of(all32, (s, *rest)).astype(int) for s in range(3))
        assert min(np.abs(a - b).sum(), np.abs(a - c).sum(), np.abs(b - c).sum()) > 255 * 3


def test_split_sizes_disjoint_deterministic_and_consistent(all32):
    train, test = shapes_split_indices("train"), shapes_split_indices("test")
    assert (len(train), len(test)) == (5530, 614)
    assert len(np.intersect1d(train, test)) == 0
    np.testing.assert_array_equal(np.union1d(train, test), np.arange(6144))
    np.testing.assert_array_equal(test, shapes_split_indices("test"))
    ds = build_dataset("shapes", "test", image_size=32)
    again = load_shapes("test", image_size=32)
    assert isinstance(ds, FactorImageDataset) and len(ds) == 614
    assert torch.equal(ds.images, again.images) and torch.equal(ds.factors, again.factors)
    assert torch.equal(ds.images, all32.images[test]) and torch.equal(ds.factors, all32.factors[test])
    # random order: the first 100 test images already cover every shape and scale
    assert set(ds.factors[:100, 0].tolist()) == {0, 1, 2}
    assert set(ds.factors[:100, 1].tolist()) == {0, 1, 2, 3}
    # every factor value appears in the test split, roughly as often as the others
    for k, size in enumerate(SHAPES_FACTOR_SIZES):
        counts = np.bincount(ds.factors[:, k].numpy(), minlength=size)
        assert counts.min() > 0.6 * 614 / size
    images, labels = ds.get_batch([0, 5])
    assert images.dtype == torch.float32 and torch.equal(labels, ds.factors[[0, 5], 0])
    # image values: 17 exact levels j / 16
    levels = torch.unique(ds.images)
    assert torch.equal(levels, torch.round(torch.arange(17) * 255 / 16).to(torch.uint8))


def test_64_and_32_render_the_same_geometry():
    # at 64 each pixel holds 2x2 pixels of 32 (same fractions of the side): the
    # box-downsampled 64 image has the same area and centroid as the 32 image
    big = build_dataset("shapes", "test").first(50)  # 64x64 by default
    small = load_shapes("test", image_size=32).first(50)
    assert big.image_shape == (1, 64, 64) and small.image_shape == (1, 32, 32)
    down = big.images.double().reshape(50, 1, 32, 2, 32, 2).mean(dim=(3, 5))
    sums = small.images.double().sum(dim=(1, 2, 3))
    # the 32 image's area moves by up to a quarter of its pixel per edge (its samples)
    radius = torch.from_numpy(small.factor_values[:, 1]) * SHAPES_RADIUS * 32
    assert ((down.sum(dim=(1, 2, 3)) - sums).abs() <= 255 * 2 * radius).all()
    coords = torch.arange(32, dtype=torch.float64) + 0.5
    a, b = down[:, 0], small.images[:, 0].double()
    for other in (2, 1):  # row centroid, then column centroid
        ca = (a.sum(dim=other) * coords).sum(dim=1) / a.sum(dim=(1, 2))
        cb = (b.sum(dim=other) * coords).sum(dim=1) / b.sum(dim=(1, 2))
        np.testing.assert_allclose(ca, cb, atol=0.1)


def test_subsets_and_device_copies_keep_the_factors(all32):
    first = all32.first(10)
    assert isinstance(first, FactorImageDataset) and torch.equal(first.factors, all32.factors[:10])
    assert first.factor_values.shape == (10, 5)
    picked = all32.subset([7, 3])
    assert torch.equal(picked.factors, all32.factors[[7, 3]])
    assert torch.equal(picked.images, all32.images[[7, 3]])
    moved = first.on_device(torch.device("cpu"))
    assert torch.equal(moved.factors, first.factors) and torch.equal(moved.labels, first.labels)


def test_bad_arguments_raise_one_clear_error():
    assert "shapes" in DATASETS
    with pytest.raises(ValueError, match="shapes split must be one of train, test, all"):
        build_dataset("shapes", "valid")
    with pytest.raises(ValueError, match="shapes image_size must be 64 or 32, got 48"):
        build_dataset("shapes", "train", image_size=48)
    with pytest.raises(ValueError, match="data.root must be unset"):
        build_dataset("shapes", "train", root="/data")
    with pytest.raises(ValueError, match="shape must hold 0"):
        render_shapes([3], [1], [0], [0], [0])
    with pytest.raises(ValueError, match="scale must be positive"):
        render_shapes([0], [0], [0], [0], [0])
    with pytest.raises(ValueError, match=r"factors must have shape \(N, 2\)"):
        FactorImageDataset(torch.zeros(3, 1, 2, 2, dtype=torch.uint8), torch.zeros(3, 3), "ab", (2, 2))
    with pytest.raises(ValueError, match=r"label_factor must be in \[0, 2\), got 2"):
        FactorImageDataset(torch.zeros(1, 1, 2, 2, dtype=torch.uint8), [[0, 1]], "ab", (2, 2), None, 2)
    with pytest.raises(ValueError, match="factors must be indices"):
        FactorImageDataset(torch.zeros(1, 1, 2, 2, dtype=torch.uint8), [[0, 2]], "ab", (2, 2))


# --- the fine grid (shapes_fine) ------------------------------------------------------------

FINE_SIZES = (3, 7, 16, 15, 15)


def test_fine_grid_has_its_factor_counts_and_every_combination_once():
    assert SHAPES_FINE_FACTOR_SIZES == FINE_SIZES == SHAPES_GRIDS["fine"].factor_sizes
    grid = shapes_grid("fine")
    assert grid.shape == (75600, 5) == (np.prod(FINE_SIZES), 5) and grid.dtype == np.int64
    # C order over the full product: each combination exactly once
    np.testing.assert_array_equal(np.ravel_multi_index(grid.T, FINE_SIZES), np.arange(75600))
    assert [len(np.unique(col)) for col in grid.T] == list(FINE_SIZES)
    # no factor has more values than MIG's 20 bins
    assert max(FINE_SIZES) <= 20
    fine = SHAPES_GRIDS["fine"]
    np.testing.assert_allclose(fine.scales, 0.5 + np.arange(7) / 12)
    np.testing.assert_allclose(fine.offsets, np.linspace(-0.3, 0.3, 15))
    # mirror-symmetric positions, exactly (a left-right flip maps index k to 14 - k)
    assert fine.offsets == tuple(-o for o in fine.offsets[::-1])
    values = shapes_factor_values(grid, "fine")
    np.testing.assert_allclose(values[:, 2], grid[:, 2] * np.asarray(SHAPES_PERIODS)[grid[:, 0]] / 16)


def test_coarse_grid_is_the_even_indices_of_the_fine_one_pixel_for_pixel():
    coarse = shapes_grid()
    as_fine = coarse * np.array([1, 2, 2, 2, 2])
    # the same factor values, bit for bit
    np.testing.assert_array_equal(
        shapes_factor_values(coarse), shapes_factor_values(as_fine, "fine")
    )
    rows = np.random.default_rng(0).choice(len(coarse), 48, replace=False)
    for size in (32, 64):
        a = shapes_images(coarse[rows], size)
        b = shapes_images(as_fine[rows], size, grid="fine")
        assert a.shape == (48, 1, size, size) and a.dtype == np.uint8
        np.testing.assert_array_equal(a, b)
    # a fine-only value lies between its coarse neighbours and is a different image
    mid = shapes_images([[2, 3, 3, 5, 8]], 32, "fine")[0, 0].astype(int)
    for x in (4, 6):
        assert np.abs(mid - shapes_images([[2, 3, 3, x, 8]], 32, "fine")[0, 0]).sum() > 0


def test_fine_splits_are_disjoint_deterministic_and_cover_every_value():
    train, test = shapes_split_indices("train", "fine"), shapes_split_indices("test", "fine")
    assert (len(train), len(test)) == (68040, 7560)
    assert len(np.intersect1d(train, test)) == 0
    np.testing.assert_array_equal(np.union1d(train, test), np.arange(75600))
    np.testing.assert_array_equal(test, shapes_split_indices("test", "fine"))
    np.testing.assert_array_equal(shapes_split_indices("all", "fine"), np.arange(75600))
    # not the coarse split's permutation: its own seed, its own order
    assert not np.array_equal(test[:614], shapes_split_indices("test"))
    factors = shapes_grid("fine")[test]
    for k, size in enumerate(FINE_SIZES):
        counts = np.bincount(factors[:, k], minlength=size)
        assert counts.min() > 0.8 * 7560 / size


def test_fine_test_split_dataset():
    ds = build_dataset("shapes_fine", "test", image_size=32)  # 7560 images, ~0.3 s
    assert isinstance(ds, FactorImageDataset) and len(ds) == 7560
    assert ds.factor_sizes == FINE_SIZES and ds.factor_names == SHAPES_FACTORS
    assert ds.image_shape == (1, 32, 32)
    test = shapes_split_indices("test", "fine")
    assert torch.equal(ds.factors, torch.from_numpy(shapes_grid("fine")[test]))
    np.testing.assert_array_equal(ds.images[:20].numpy(), shapes_images(ds.factors[:20].numpy(), 32, "fine"))
    np.testing.assert_array_equal(ds.factor_values, shapes_factor_values(ds.factors.numpy(), "fine"))
    assert torch.equal(ds.labels, ds.factors[:, 0])
    with pytest.raises(ValueError, match="shapes_fine image_size must be 64 or 32, got 48"):
        build_dataset("shapes_fine", "test", image_size=48)
    with pytest.raises(ValueError, match="dataset 'shapes_fine' is generated, not read"):
        build_dataset("shapes_fine", "test", root="/data")
    with pytest.raises(ValueError, match="shapes_fine split must be one of train, test, all"):
        build_dataset("shapes_fine", "valid")
    with pytest.raises(ValueError, match="shapes grid must be one of coarse, fine, got 'huge'"):
        shapes_grid("huge")
