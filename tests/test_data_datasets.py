"""Datasets: exact pixel values from synthetic files, split sizes, labels and error messages."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import otae.data
from otae.data import (
    DATASETS,
    CelebADataset,
    ImageFolderDataset,
    TensorImageDataset,
    build_dataset,
    default_mnist_dir,
    load_idx_dataset,
    load_mnist,
)

from .helpers import write_idx


def assert_batch_is_stacked_items(dataset, indices):
    images, labels = dataset.get_batch(torch.tensor(indices))
    items = [dataset[i] for i in indices]
    assert images.dtype == torch.float32 and labels.dtype == torch.int64
    assert torch.equal(images, torch.stack([x for x, _ in items]))
    assert torch.equal(labels, torch.stack([y for _, y in items]))


@pytest.fixture
def idx_root(tmp_path):
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, size=(5, 4, 6), dtype=np.uint8)
    test = rng.integers(0, 256, size=(2, 4, 6), dtype=np.uint8)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", train, compress=True)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.array([3, 1, 4, 1, 5], np.uint8), True)
    write_idx(tmp_path / "test-images-idx3-ubyte", test, compress=False)  # 'test-' prefix, raw
    write_idx(tmp_path / "test-labels-idx1-ubyte", np.array([9, 2], np.uint8), compress=False)
    return tmp_path, train, test


def test_idx_dataset_returns_the_exact_pixels(idx_root):
    root, train, test = idx_root
    ds = load_idx_dataset(root, "train")
    assert len(ds) == 5 and ds.image_shape == (1, 4, 6)
    image, label = ds[2]
    assert image.dtype == torch.float32 and image.shape == (1, 4, 6)
    assert torch.equal(image[0], torch.from_numpy(train[2]).float() / 255)
    assert image[0, 1, 3].item() == pytest.approx(int(train[2, 1, 3]) / 255)
    assert label.dtype == torch.int64 and label.dim() == 0 and label.item() == 4
    assert ds.labels.tolist() == [3, 1, 4, 1, 5]
    assert_batch_is_stacked_items(ds, [4, 0, 2, 2])

    ds = build_dataset("idx", "test", root=root)
    assert len(ds) == 2 and ds.labels.tolist() == [9, 2]
    assert torch.equal(ds.get_batch(torch.tensor([1]))[0][0, 0], torch.from_numpy(test[1]) / 255)


def test_idx_accepts_t10k_and_dotted_names(tmp_path):
    images = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    write_idx(tmp_path / "t10k-images.idx3-ubyte", images, compress=False)
    write_idx(tmp_path / "t10k-labels.idx1-ubyte", np.array([0, 7], np.uint8), compress=False)
    ds = load_idx_dataset(tmp_path, "test")
    assert ds[1][0][0, 2, 2].item() == pytest.approx(17 / 255) and ds[1][1].item() == 7


def test_idx_errors_name_the_expected_files(tmp_path):
    with pytest.raises(ValueError, match="data.root must be set"):
        build_dataset("idx", "train")
    expected = f"{tmp_path / 'train-images-idx3-ubyte.gz'}, {tmp_path / 'train-images-idx3-ubyte'}"
    with pytest.raises(FileNotFoundError, match="train images not found: expected") as err:
        build_dataset("idx", "train", root=tmp_path)
    assert expected in str(err.value)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_idx_dataset(tmp_path / "nowhere", "train")
    with pytest.raises(ValueError, match="idx split must be one of train, test, got 'valid'"):
        build_dataset("idx", "valid", root=tmp_path)
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((3, 2, 2), np.uint8), False)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(2, np.uint8), False)
    with pytest.raises(ValueError, match="expected 3 labels"):
        load_idx_dataset(tmp_path, "train")


# --- CelebA ---------------------------------------------------------------------------------

CELEBA_SPLIT = [0, 0, 1, 0, 2, 1]  # 3 train, 2 valid, 1 test


@pytest.fixture
def celeba_root(tmp_path):
    rng = np.random.default_rng(1)
    folder = tmp_path / "img_align_celeba"
    folder.mkdir()
    arrays = {}
    for i in range(len(CELEBA_SPLIT)):
        name = f"{i + 1:06d}.jpg"
        array = rng.integers(0, 256, size=(218, 178, 3), dtype=np.uint8)  # CelebA's 178x218
        # PNG-encoded content under the .jpg name of the partition file: lossless, and
        # PIL opens files by content, not extension.
        Image.fromarray(array).save(folder / name, format="PNG")
        arrays[name] = array
    lines = [f"{i + 1:06d}.jpg {s}" for i, s in enumerate(CELEBA_SPLIT)]
    (tmp_path / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")
    return tmp_path, arrays


def reference_preprocessing(array):
    """The paper's preprocessing done independently: crop the central 140x140, resize to 64."""
    image = Image.fromarray(array).crop((19, 39, 159, 179))  # (178-140)/2, (218-140)/2
    image = image.resize((64, 64), Image.Resampling.BILINEAR)
    return torch.from_numpy(np.asarray(image).transpose(2, 0, 1).astype(np.float32) / 255)


def test_celeba_split_sizes_and_preprocessing(celeba_root):
    root, arrays = celeba_root
    sizes = {
        split: len(build_dataset("celeba", split, root=root))
        for split in ("train", "valid", "test")
    }
    assert sizes == {"train": 3, "valid": 2, "test": 1}

    valid = build_dataset("celeba", "valid", root=root)
    assert valid.image_shape == (3, 64, 64) and valid.labels is None
    assert valid.files == ["000003.jpg", "000006.jpg"]
    image, label = valid[1]
    assert image.dtype == torch.float32 and image.shape == (3, 64, 64) and label.item() == -1
    expected = reference_preprocessing(arrays["000006.jpg"])
    assert torch.equal(image, expected)
    assert image[2, 10, 50].item() == expected[2, 10, 50].item()
    assert 0.0 <= image.min() and image.max() <= 1.0
    assert_batch_is_stacked_items(build_dataset("celeba", "train", root=root), [2, 0])


def test_celeba_reads_real_jpeg_files(celeba_root):
    root, arrays = celeba_root
    path = root / "img_align_celeba" / "000005.jpg"
    Image.fromarray(arrays["000005.jpg"]).save(path, format="JPEG", quality=95)
    image, _ = build_dataset("celeba", "test", root=root)[0]
    with Image.open(path) as decoded:
        expected = reference_preprocessing(np.asarray(decoded.convert("RGB")))
    assert torch.equal(image, expected)
    # the JPEG is close to the lossless original
    assert (image - reference_preprocessing(arrays["000005.jpg"])).abs().mean() < 0.05


def test_celeba_options_and_subset(celeba_root):
    root, arrays = celeba_root
    small = CelebADataset(root, "train", image_size=32, crop=None)
    image, _ = small[0]
    expected = Image.fromarray(arrays["000001.jpg"]).resize((32, 32), Image.Resampling.BILINEAR)
    assert torch.equal(
        image, torch.from_numpy(np.asarray(expected).transpose(2, 0, 1) / 255).float()
    )
    sub = build_dataset("celeba", "train", root=root, subset=2, image_size=16)
    assert len(sub) == 2 and sub.image_shape == (3, 16, 16)
    assert torch.equal(sub[1][0], CelebADataset(root, "train", image_size=16)[1][0])
    with pytest.raises(IndexError):
        sub[2]
    # the CSV variant of the split file (header, commas) is read too
    csv = ["image_id,partition"] + [f"{i + 1:06d}.jpg,{p}" for i, p in enumerate(CELEBA_SPLIT)]
    (root / "list_eval_partition.txt").write_text("\n".join(csv))
    assert CelebADataset(root, "valid").files == ["000003.jpg", "000006.jpg"]


def test_celeba_missing_files_say_what_to_put_where(tmp_path, celeba_root):
    with pytest.raises(ValueError, match="data.root must be set"):
        build_dataset("celeba", "train")
    with pytest.raises(FileNotFoundError) as err:
        build_dataset("celeba", "train", root=tmp_path / "empty")
    message = str(err.value)
    assert str(tmp_path / "empty" / "list_eval_partition.txt") in message
    assert "img_align_celeba" in message and "official CelebA site" in message
    assert "never downloads" in message

    root, _ = celeba_root
    (root / "img_align_celeba" / "000001.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="000001.jpg"):
        build_dataset("celeba", "train", root=root)
    (root / "img_align_celeba" / "000004.jpg").unlink()
    test_ok = build_dataset("celeba", "test", root=root)
    assert len(test_ok) == 1
    with pytest.raises(ValueError, match="celeba split must be one of train, valid, test"):
        build_dataset("celeba", "validation", root=root)
    (root / "list_eval_partition.txt").write_text("000001.jpg 7\n")
    with pytest.raises(ValueError, match="line 1: expected"):
        build_dataset("celeba", "train", root=root)


# --- image folders --------------------------------------------------------------------------


def save(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_image_folder_with_class_subfolders(tmp_path):
    rng = np.random.default_rng(2)
    arrays = {
        "dog/b.png": rng.integers(0, 256, (6, 5, 3), dtype=np.uint8),
        "cat/z.png": rng.integers(0, 256, (6, 5, 3), dtype=np.uint8),
        "dog/sub/a.bmp": rng.integers(0, 256, (6, 5, 3), dtype=np.uint8),
        "bird/c.PNG": rng.integers(0, 256, (6, 5, 3), dtype=np.uint8),
    }
    for rel, array in arrays.items():
        save(tmp_path / rel, array)
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    ds = build_dataset("image_folder", "test", root=tmp_path)  # split ignored
    order = ["bird/c.PNG", "cat/z.png", "dog/b.png", "dog/sub/a.bmp"]
    assert [p.relative_to(tmp_path).as_posix() for p in ds.files] == order
    assert ds.classes == ["bird", "cat", "dog"]
    assert ds.labels.tolist() == [0, 1, 2, 2]
    assert ds.image_shape == (3, 6, 5)
    image, label = ds[3]
    assert label.item() == 2
    assert torch.equal(
        image, torch.from_numpy(arrays["dog/sub/a.bmp"].transpose(2, 0, 1) / 255).float()
    )
    assert_batch_is_stacked_items(ds, [3, 1, 0])


def test_image_folder_flat_grey_and_resized(tmp_path):
    rng = np.random.default_rng(3)
    a = rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)
    save(tmp_path / "a.png", a)
    save(tmp_path / "b.jpeg", rng.integers(0, 256, (7, 9, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="differ in size .*12x10.*9x7.*image_size"):
        ImageFolderDataset(tmp_path)
    ds = build_dataset("image_folder", "train", root=tmp_path, image_size=8)
    assert ds.labels is None and ds.classes is None and ds.image_shape == (3, 8, 8)
    image, label = ds[0]
    assert label.item() == -1 and image.shape == (3, 8, 8)
    expected = Image.fromarray(a).resize((8, 8), Image.Resampling.BILINEAR)
    assert torch.equal(
        image, torch.from_numpy(np.asarray(expected).transpose(2, 0, 1) / 255).float()
    )
    grey = ImageFolderDataset(tmp_path, image_size=(4, 6), channels=1)
    assert grey.image_shape == (1, 4, 6) and grey[1][0].shape == (1, 4, 6)
    expected = Image.fromarray(a).convert("L").resize((6, 4), Image.Resampling.BILINEAR)
    assert torch.equal(grey[0][0][0], torch.from_numpy(np.asarray(expected) / 255).float())


def test_image_folder_errors(tmp_path):
    with pytest.raises(ValueError, match="data.root must be set"):
        build_dataset("image_folder", "train")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_dataset("image_folder", "train", root=tmp_path / "missing")
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match=r"no image files \(.png, .jpg, .jpeg, .bmp\)"):
        build_dataset("image_folder", "train", root=tmp_path)


# --- in-memory data and the registry ---------------------------------------------------------


def test_tensor_dataset_batches_and_unlabelled_items():
    images = torch.arange(3 * 2 * 2 * 2, dtype=torch.uint8).reshape(3, 2, 2, 2)
    ds = TensorImageDataset(images)
    assert ds.labels is None and ds.image_shape == (2, 2, 2)
    x, y = ds.get_batch(torch.tensor([2, 0]))
    assert torch.equal(x, images[[2, 0]].float() / 255) and y.tolist() == [-1, -1]
    assert_batch_is_stacked_items(ds, [1, 2, 1])
    assert ds[-1][0][1, 1, 1].item() == pytest.approx(23 / 255)
    with pytest.raises(IndexError):
        ds[3]
    loader = torch.utils.data.DataLoader(ds, batch_size=2)
    xb, yb = next(iter(loader))
    assert torch.equal(xb, images[:2].float() / 255) and yb.tolist() == [-1, -1]
    with pytest.raises(ValueError, match="uint8"):
        TensorImageDataset(images.float())
    with pytest.raises(ValueError, match=r"labels must have shape \(3,\)"):
        TensorImageDataset(images, torch.zeros(2))


def test_registry_and_build_errors():
    assert set(DATASETS) == {"mnist", "idx", "celeba", "image_folder", "shapes", "shapes_fine"}
    with pytest.raises(
        ValueError,
        match="unknown dataset 'cifar'; known: celeba, idx, image_folder, mnist, shapes, shapes_fine",
    ):
        build_dataset("cifar", "train")
    with pytest.raises(ValueError, match="mnist split must be one of train, test"):
        build_dataset("mnist", "valid")


@pytest.fixture(scope="module")
def mnist_train():
    return build_dataset("mnist", "train")


def test_mnist_is_embedded_in_the_package(monkeypatch, tmp_path):
    monkeypatch.delenv("OTAE_MNIST_DIR", raising=False)
    folder = default_mnist_dir()
    assert folder == Path(otae.data.__file__).parent / "files" / "mnist"
    assert (folder / "LICENSE.md").is_file() and (folder / "train-images-idx3-ubyte.gz").is_file()
    monkeypatch.setenv("OTAE_MNIST_DIR", str(tmp_path))
    assert default_mnist_dir() == tmp_path
    with pytest.raises(FileNotFoundError, match="OTAE_MNIST_DIR"):
        build_dataset("mnist", "test")


def test_mnist_train(mnist_train):
    ds = mnist_train
    assert len(ds) == 60000 and ds.image_shape == (1, 28, 28)
    assert ds.labels[:5].tolist() == [5, 0, 4, 1, 9]
    images, labels = load_mnist("train")
    x, y = ds[7]
    assert torch.equal(x[0], torch.from_numpy(images[7]).float() / 255) and y.item() == labels[7]
    assert_batch_is_stacked_items(ds, [0, 59999, 7])


def test_mnist_test_split_root_override_and_size_checks(idx_root):
    test = build_dataset("mnist", "test", image_size=28)
    assert len(test) == 10000 and test.labels[:5].tolist() == [7, 2, 1, 0, 4]
    sub = build_dataset("mnist", "test", subset=100)
    assert len(sub) == 100 and torch.equal(sub.labels, test.labels[:100])
    assert torch.equal(sub.get_batch(torch.arange(100))[0], test.get_batch(torch.arange(100))[0])
    with pytest.raises(ValueError, match="stored size 28x28; data.image_size must be unset"):
        build_dataset("mnist", "test", image_size=32)
    with pytest.raises(ValueError, match="subset=10001 asks for more examples than the 10000"):
        build_dataset("mnist", "test", subset=10001)
    root, train, _ = idx_root
    assert len(build_dataset("mnist", "train", root=root)) == 5  # root overrides the embedded copy


def test_first_n_wrapper_on_a_lazy_dataset(celeba_root):
    root, _ = celeba_root
    full = CelebADataset(root, "train", image_size=8)
    sub = full.first(2)
    assert len(sub) == 2 and sub.image_shape == (3, 8, 8) and sub.labels is None
    assert_batch_is_stacked_items(sub, [1, 0, -1])
    with pytest.raises(IndexError):
        sub.get_batch(torch.tensor([2]))
    with pytest.raises(ValueError, match="positive"):
        full.first(0)
