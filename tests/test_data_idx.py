"""IDX / MNIST reader against the published facts of the shipped files."""

import gzip

import numpy as np
import pytest

from otae.data import load_mnist, read_idx


def test_mnist_test_split_matches_published_counts():
    images, labels = load_mnist("test")
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert labels[:5].tolist() == [7, 2, 1, 0, 4]


def test_mnist_train_first_labels_and_pixel_mean():
    images, labels = load_mnist("train")
    assert labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert images.mean() / 255 == pytest.approx(0.1307, abs=1e-4)


def test_round_trip_of_a_written_idx_file(tmp_path):
    array = np.arange(24, dtype=">i4").reshape(2, 3, 4)
    header = bytes([0, 0, 0x0C, 3]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    path = tmp_path / "a.idx.gz"
    with gzip.open(path, "wb") as f:
        f.write(header + array.tobytes())
    np.testing.assert_array_equal(read_idx(path), np.arange(24).reshape(2, 3, 4))


def test_truncated_and_bad_files_are_rejected(tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x01\x02\x08\x01")
    with pytest.raises(ValueError, match="bad magic"):
        read_idx(bad)
    short = tmp_path / "short"
    short.write_bytes(bytes([0, 0, 0x08, 1]) + (10).to_bytes(4, "big") + b"\x00" * 3)
    with pytest.raises(ValueError, match="announces shape"):
        read_idx(short)


def test_missing_files_say_what_to_put_where(tmp_path):
    with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte.gz.*OTAE_MNIST_DIR"):
        load_mnist("test", root=tmp_path)
    with pytest.raises(ValueError, match="split"):
        load_mnist("validation")
