"""Multi-view data: embedded UCI Multiple Features, .mat / .npz / CSV readers, splits, scaling."""

import csv
import gzip
import io
import shutil

import numpy as np
import pytest
import scipy.io as sio

from otae.data import (
    HANDWRITTEN_VIEWS,
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

EXPECTED_DIMS = {"fou": 76, "fac": 216, "kar": 64, "pix": 240, "zer": 47, "mor": 6}


def _raw_rows(view):
    """All rows of the shipped mfeat-<view>.csv.gz, read with gzip + csv (header included)."""
    path = default_handwritten_dir() / f"mfeat-{view}.csv.gz"
    with gzip.open(path, "rt", newline="") as f:
        return list(csv.reader(f))


@pytest.fixture(scope="module")
def handwritten():
    return load_handwritten()


# --- embedded UCI Multiple Features ----------------------------------------------------------


def test_handwritten_dims_and_class_counts(handwritten):
    assert HANDWRITTEN_VIEWS == EXPECTED_DIMS
    assert handwritten.dims == EXPECTED_DIMS
    assert list(handwritten.views) == ["fou", "fac", "kar", "pix", "zer", "mor"]
    assert len(handwritten) == 2000 and handwritten.n_classes == 10
    assert handwritten.labels.dtype == np.int64
    assert np.bincount(handwritten.labels).tolist() == [200] * 10
    # Original UCI order: class blocks of 200, digits 0..9.
    np.testing.assert_array_equal(handwritten.labels, np.repeat(np.arange(10), 200))
    assert all(v.dtype == np.float32 for v in handwritten.views.values())


def test_handwritten_rows_equal_the_raw_csv(handwritten):
    for view, dim in EXPECTED_DIMS.items():
        rows = _raw_rows(view)
        assert rows[0] == [str(i) for i in range(dim)] + ["0"]  # the header line
        for data_row in (0, 1, 1234, 1999):
            raw = rows[1 + data_row]
            expected = np.array([float(x) for x in raw[:-1]], dtype=np.float32)
            np.testing.assert_array_equal(handwritten.views[view][data_row], expected)
            assert handwritten.labels[data_row] == int(float(raw[-1]))
    # Values of mor row 0 as printed in the file.
    np.testing.assert_array_equal(
        handwritten.views["mor"][0], np.array([1, 0, 0, 133.15, 1.3117, 1620.2], np.float32)
    )


def test_handwritten_labels_agree_across_views(handwritten):
    columns = {v: [int(float(r[-1])) for r in _raw_rows(v)[1:]] for v in EXPECTED_DIMS}
    for view, column in columns.items():
        assert column == handwritten.labels.tolist(), view


def test_handwritten_label_disagreement_is_an_error(tmp_path):
    source = default_handwritten_dir()
    shutil.copy(source / "mfeat-fou.csv.gz", tmp_path / "mfeat-fou.csv.gz")
    rows = _raw_rows("mor")
    rows[1 + 5][-1] = "7"  # data row 5 is a 0 in the original
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(rows)
    with gzip.open(tmp_path / "mfeat-mor.csv.gz", "wt") as f:
        f.write(text.getvalue())
    with pytest.raises(ValueError, match=r"labels disagree .*mfeat-mor.*row 5: 0 vs 7"):
        load_handwritten(["fou", "mor"], root=tmp_path)
    with pytest.raises(FileNotFoundError, match="mfeat-pix.csv.gz"):
        load_handwritten(["pix"], root=tmp_path)


def test_select_subset_and_load_multiview(handwritten):
    two = load_multiview("handwritten", views=["pix", "fou"])
    assert list(two.views) == ["pix", "fou"] and two.dims == {"pix": 240, "fou": 76}
    np.testing.assert_array_equal(two.views["pix"], handwritten.views["pix"])
    assert handwritten.select("mor").dims == {"mor": 6}
    with pytest.raises(ValueError, match="available views: fou, fac, kar, pix, zer, mor"):
        handwritten.select(["pix", "gabor"])
    with pytest.raises(ValueError, match="'gabor'.*available views"):
        load_handwritten(["gabor"])
    idx = np.array([1999, 0, 400])
    sub = handwritten.subset(idx)
    assert sub.labels.tolist() == [9, 0, 2] and len(sub) == 3
    np.testing.assert_array_equal(sub.views["zer"], handwritten.views["zer"][idx])
    mask = handwritten.labels == 3
    assert handwritten.subset(mask).labels.tolist() == [3] * 200
    with pytest.raises(IndexError):
        handwritten.subset([2000])


def test_dataset_rejects_mismatched_views():
    with pytest.raises(ValueError, match="differ in sample count"):
        MultiViewDataset({"a": np.zeros((3, 2)), "b": np.zeros((4, 2))}, [0, 1, 2])
    with pytest.raises(ValueError, match=r"labels .* shape \(3,\)"):
        MultiViewDataset({"a": np.zeros((3, 2))}, [0, 1])


# --- .mat -------------------------------------------------------------------------------------


def _cell(arrays, column=False):
    cell = np.empty((len(arrays), 1) if column else (1, len(arrays)), dtype=object)
    for i, a in enumerate(arrays):
        cell.flat[i] = a
    return cell


def _views(n=30, seed=0):
    rng = np.random.default_rng(seed)
    return [
        rng.normal(size=(n, 5)).astype(np.float32),
        rng.normal(size=(n, 8)).astype(np.float32),
        rng.integers(0, 255, size=(n, n)).astype(np.float64),  # square: taken as N x d
    ]


@pytest.mark.parametrize("column_cell", [False, True])
def test_mat_round_trip_both_orientations_and_one_based_labels(tmp_path, column_cell):
    a, b, c = _views()
    labels0 = np.random.default_rng(1).integers(0, 4, size=30)
    path = tmp_path / "caltech.mat"
    sio.savemat(
        path,
        {
            "X": _cell([a, b.T, c], column=column_cell),  # second view stored d x N
            "Y": (labels0 + 1)[:, None] if column_cell else (labels0 + 1)[None, :],
            "view_names": np.array(["gabor", "wavelet", "square"], dtype=object),
        },
    )
    data = load_mat_multiview(path)
    assert data.name == "caltech"
    assert list(data.views) == ["gabor", "wavelet", "square"]
    assert data.dims == {"gabor": 5, "wavelet": 8, "square": 30}
    np.testing.assert_array_equal(data.views["gabor"], a)
    np.testing.assert_array_equal(data.views["wavelet"], b)
    np.testing.assert_array_equal(data.views["square"], c.astype(np.float32))
    np.testing.assert_array_equal(data.labels, labels0)
    assert data.n_classes == 4


def test_mat_default_names_and_gapped_labels(tmp_path):
    a, b, _ = _views(n=6)
    path = tmp_path / "x.mat"
    sio.savemat(path, {"X": _cell([b.T, a]), "Y": np.array([[9], [2], [5], [2], [9], [5]])})
    data = load_multiview(path)
    assert list(data.views) == ["view0", "view1"]
    np.testing.assert_array_equal(data.views["view0"], b)
    assert data.labels.tolist() == [2, 0, 1, 0, 2, 1]
    assert list(load_multiview(str(path), views=["view1"]).views) == ["view1"]


def _bad_mat_cases():
    a, b, _ = _views(n=7)
    y = np.arange(1, 8)[:, None]
    nan_view = a.copy()
    nan_view[3, 2] = np.nan
    nan_y = y.astype(float)
    nan_y[4] = np.nan
    return {
        "missing X": ({"Y": y}, r"no variable 'X'.*variables found: Y"),
        "missing Y": ({"X": _cell([a])}, r"no variable 'Y'"),
        "X not a cell": ({"X": a, "Y": y}, r"X must be a cell array"),
        "X a matrix of cells": (
            {"X": _cell([a, b, a, b]).reshape(2, 2), "Y": y},
            r"1xV or Vx1 cell array",
        ),
        "views differ in N": ({"X": _cell([a, b[:5]]), "Y": y}, r"different numbers of samples"),
        "N differs from Y": ({"X": _cell([a, b]), "Y": y[:6]}, r"Y has 6 labels but"),
        "string view": ({"X": _cell([a, "text"]), "Y": y}, r"'view1'.*not numeric"),
        "nested cell view": ({"X": _cell([a, _cell([b])]), "Y": y}, r"'view1'.*not numeric"),
        "NaN in a view": ({"X": _cell([a, nan_view]), "Y": y}, r"'view1' contains NaN.*row 3"),
        "NaN in Y": ({"X": _cell([a]), "Y": nan_y}, r"Y: labels contain NaN"),
        "Y a matrix": ({"X": _cell([a]), "Y": np.ones((7, 2))}, r"N x 1 or 1 x N"),
        "Y text": ({"X": _cell([a]), "Y": "abc"}, r"Y must be a numeric label vector"),
        "fractional Y": ({"X": _cell([a]), "Y": y + 0.5}, r"integer class numbers"),
        "view_names wrong length": (
            {"X": _cell([a, b]), "Y": y, "view_names": np.array(["a"], dtype=object)},
            r"view_names must hold 2 distinct",
        ),
    }


@pytest.mark.parametrize("case", list(_bad_mat_cases()))
def test_malformed_mat_files_are_rejected(tmp_path, case):
    contents, message = _bad_mat_cases()[case]
    path = tmp_path / "bad_file.mat"
    sio.savemat(path, contents)
    with pytest.raises(ValueError, match=message) as info:
        load_mat_multiview(path)
    assert "bad_file.mat" in str(info.value)


def test_v73_and_non_mat_files_give_clear_errors(tmp_path):
    v73 = tmp_path / "big.mat"
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, HDF5 schema 1.00 .".ljust(512, b" ")
    v73.write_bytes(header + b"\x89HDF\r\n\x1a\n" + bytes(64))
    with pytest.raises(ValueError, match=r"big\.mat is a MATLAB v7\.3 \(HDF5\).*'-v7'"):
        load_mat_multiview(v73)
    bare = tmp_path / "bare.mat"  # signature only, no text header
    bare.write_bytes(bytes(512) + b"\x89HDF\r\n\x1a\n" + bytes(64))
    with pytest.raises(ValueError, match="v7.3"):
        load_multiview(bare)
    text = tmp_path / "notes.mat"
    text.write_text("these are not the views you are looking for\n" * 5)
    with pytest.raises(ValueError, match=r"notes\.mat is not a readable MATLAB \.mat file"):
        load_mat_multiview(text)


def test_load_multiview_missing_and_unsupported_paths(tmp_path):
    missing = tmp_path / "nowhere" / "caltech101-7.mat"
    with pytest.raises(FileNotFoundError, match=r"nowhere/caltech101-7\.mat not found"):
        load_multiview(missing)
    with pytest.raises(FileNotFoundError, match="caltech101-7.mat"):
        load_mat_multiview(missing)
    other = tmp_path / "views.h5"
    other.write_bytes(b"x")
    with pytest.raises(ValueError, match=r"\.mat or \.npz"):
        load_multiview(other)


# --- .npz and CSV -----------------------------------------------------------------------------


def test_npz_round_trip(tmp_path):
    a, b, _ = _views(n=12)
    y = np.arange(12) % 3 + 1
    named = tmp_path / "named.npz"
    np.savez(named, view_pix=b, view_fou=a, y=y)
    data = load_npz_multiview(named)
    assert list(data.views) == ["pix", "fou"] and data.name == "named"
    np.testing.assert_array_equal(data.views["pix"], b)
    np.testing.assert_array_equal(data.views["fou"], a)
    np.testing.assert_array_equal(data.labels, y - 1)
    numbered = tmp_path / "numbered.npz"
    np.savez(numbered, X10=a[:, :1], X2=b, X0=a, Y=y)
    data = load_multiview(numbered, views=["view0", "view10"])
    assert data.dims == {"view0": 5, "view10": 1}
    assert list(load_multiview(numbered).views) == ["view0", "view2", "view10"]


def test_npz_malformed(tmp_path):
    a, b, _ = _views(n=4)
    cases = {
        "nolabels": ({"view_a": a}, "no labels"),
        "mixed": ({"view_a": a, "X0": a, "y": [0, 1, 2, 3]}, "mixes view_<name> and X<i>"),
        "short": ({"view_a": a, "y": [0, 1, 2]}, "'view_a' has 4 rows but there are 3 labels"),
        "noviews": ({"y": [0, 1]}, "has no views"),
        "nan": ({"view_a": np.full((4, 2), np.nan), "y": [0, 1, 2, 3]}, "NaN"),
    }
    for stem, (arrays, message) in cases.items():
        path = tmp_path / f"{stem}.npz"
        np.savez(path, **arrays)
        with pytest.raises(ValueError, match=message):
            load_npz_multiview(path)


def test_csv_views_with_label_column_or_label_file(tmp_path):
    a, b, _ = _views(n=5)
    y = np.array([3, 1, 2, 3, 1])
    with open(tmp_path / "a.csv", "w") as f:
        f.write("f0,f1,f2,f3,f4,label\n")  # header, label last
        for row, label in zip(a, y, strict=True):
            f.write(",".join(repr(float(x)) for x in row) + f",{label}\n")
    with gzip.open(tmp_path / "b.csv.gz", "wt") as f:  # no header, label last
        for row, label in zip(b, y, strict=True):
            f.write(",".join(repr(float(x)) for x in row) + f",{label}\n")
    data = load_csv_multiview(
        {"a": tmp_path / "a.csv", "b": tmp_path / "b.csv.gz"}, label_column=-1, name="toy"
    )
    assert data.name == "toy" and data.dims == {"a": 5, "b": 8}
    np.testing.assert_array_equal(data.views["a"], a)
    np.testing.assert_array_equal(data.views["b"], b)
    assert data.labels.tolist() == [2, 0, 1, 2, 0]

    with open(tmp_path / "c.csv", "w") as f:  # labels shifted by one row
        for row, label in zip(a, np.roll(y, 1), strict=True):
            f.write(",".join(repr(float(x)) for x in row) + f",{label}\n")
    with pytest.raises(ValueError, match=r"disagree between .*a\.csv and .*c\.csv"):
        load_csv_multiview({"a": tmp_path / "a.csv", "c": tmp_path / "c.csv"}, label_column=-1)

    np.savetxt(tmp_path / "labels.txt", y, fmt="%d")
    np.savetxt(tmp_path / "a_only.csv", a, delimiter=",")
    np.savetxt(tmp_path / "b_only.csv", b, delimiter=",")
    data = load_csv_multiview(
        {"b": tmp_path / "b_only.csv", "a": tmp_path / "a_only.csv"},
        labels_path=tmp_path / "labels.txt",
    )
    assert list(data.views) == ["b", "a"]
    np.testing.assert_array_equal(data.views["a"], a)
    np.testing.assert_array_equal(data.views["b"], b)
    assert data.labels.tolist() == [2, 0, 1, 2, 0]
    with pytest.raises(ValueError, match="exactly one of labels_path or label_column"):
        load_csv_multiview({"a": tmp_path / "a_only.csv"})
    np.savetxt(tmp_path / "short.txt", y[:4], fmt="%d")
    with pytest.raises(ValueError, match="has 5 rows but there are 4 labels"):
        load_csv_multiview({"a": tmp_path / "a_only.csv"}, labels_path=tmp_path / "short.txt")


# --- splits and standardisation --------------------------------------------------------------


def _check_partition(n, parts):
    joined = np.concatenate(parts)
    assert len(joined) == n and np.array_equal(np.sort(joined), np.arange(n))


def test_split_indices_on_handwritten_is_exactly_80_10_10_per_class(handwritten):
    train, val, test = split_indices(len(handwritten), handwritten.labels, seed=0)
    _check_partition(2000, (train, val, test))
    for part, per_class in ((train, 160), (val, 20), (test, 20)):
        assert np.bincount(handwritten.labels[part], minlength=10).tolist() == [per_class] * 10


def test_split_indices_stratified_within_one_sample_per_class():
    labels = np.repeat(np.arange(7), [5, 3, 11, 2, 1, 9, 37])
    rng = np.random.default_rng(5)
    labels = rng.permutation(labels)
    fractions = (0.7, 0.2, 0.1)
    parts = split_indices(len(labels), labels, seed=3, fractions=fractions)
    _check_partition(len(labels), parts)
    sizes = np.bincount(labels)
    for part, fraction in zip(parts, fractions, strict=True):
        counts = np.bincount(labels[part], minlength=7)
        assert np.all(np.abs(counts - sizes * fraction) < 1), (counts, sizes * fraction)
        assert abs(len(part) - len(labels) * fraction) < 2


def test_split_indices_deterministic_per_seed_and_different_across_seeds():
    labels = np.arange(300) % 4
    first = split_indices(300, labels, seed=11)
    again = split_indices(300, labels, seed=11)
    other = split_indices(300, labels, seed=12)
    for x, y in zip(first, again, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(first[0], other[0])
    assert not np.array_equal(first[2], other[2])
    plain = split_indices(300, None, seed=0, stratified=False)
    _check_partition(300, plain)
    assert [len(p) for p in plain] == [240, 30, 30]
    with pytest.raises(ValueError, match="summing to 1"):
        split_indices(300, labels, seed=0, fractions=(0.8, 0.3, 0.1))
    with pytest.raises(ValueError, match="needs labels"):
        split_indices(300, None, seed=0)


def test_standardise_uses_only_training_statistics():
    rng = np.random.default_rng(0)
    train = rng.normal(3.0, 2.0, size=(50, 3))
    train[:, 1] = 4.0  # constant column
    val = rng.normal(-10.0, 7.0, size=(20, 3))
    test = rng.normal(100.0, 0.1, size=(9, 3))
    z_train, z_val, z_test = standardise(train, val, test)
    mean, std = train.mean(axis=0), train.std(axis=0)
    std[1] = 1.0
    np.testing.assert_allclose(z_val, (val - mean) / std, rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(z_test, (test - mean) / std, rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(z_train.mean(axis=0), 0, atol=1e-6)
    np.testing.assert_allclose(z_train.std(axis=0)[[0, 2]], 1, atol=1e-6)
    assert np.all(z_train[:, 1] == 0)
    np.testing.assert_allclose(z_val[:, 1], val[:, 1] - 4.0, rtol=1e-6)
    # Other sets never leak into the statistics.
    z_alone = standardise(train)
    assert isinstance(z_alone, tuple) and len(z_alone) == 1
    np.testing.assert_array_equal(z_alone[0], z_train)
    assert z_val.dtype == np.float32
    with pytest.raises(ValueError, match="3 columns"):
        standardise(train, val[:, :2])
