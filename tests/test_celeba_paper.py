"""The ``celeba-paper`` bench set end to end on a synthetic CelebA folder.

CelebA itself is on none of our machines, so a module fixture writes a small
``img_align_celeba/`` (32 JPEGs of CelebA's 178x218, seeded random content) with
a ``list_eval_partition.txt`` in the official format, and the tests run the real
entry points on it: the dataset API, and ``otae bench celeba-paper`` through
``otae.cli.main`` with the set's own overrides plus tiny ones (1 epoch, narrow
paper_celeba channels). Every expected value is computed here independently: the
images decoded with PIL and cropped/resized as ``CelebADataset`` documents, the
reconstruction loss and mean-image baseline from those images, the FID from the
features of those images and of the model's samples.

The bench set asks for FID on 10,000 images, which ``otae bench`` has no flag to
change; the fast test runs the shipped set with that count made small and a cheap
stand-in for Inception-v3 (a 4-d feature), the slow test with the real Inception.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from otae import bench as bench_lib
from otae.cli import main
from otae.data import CelebADataset, build_dataset
from otae.evaluation import fid as fid_lib
from otae.training import build_split, derived_seed, load_config, load_run

# A seeded shuffle of 20 train / 6 valid / 6 test: interleaved, unlike real CelebA's
# three contiguous blocks, so that selecting a split by its number is really tested.
PARTITION = np.random.default_rng(13).permutation([0] * 20 + [1] * 6 + [2] * 6).tolist()
SPLITS = {"train": 0, "valid": 1, "test": 2}
WIDTH, HEIGHT = 178, 218  # CelebA's aligned images
MODELS = ("RAE (D)",)  # one model: each run's report (matplotlib) costs ~5 s on CPU
FID_SAMPLES = 8
# tiny runs of the set's nets: 1 epoch, narrow paper_celeba channels, no t-SNE or timing
TINY = [
    "training.epochs=1",
    "training.batch_size=10",
    "training.num_workers=0",
    "network.options={channels: [4, 4, 4, 4], decoder_channels: [4, 4, 4, 4]}",
    "evaluation.timing_steps=0",
    "evaluation.latent_method=pca",
]


def write_celeba(root):
    """The synthetic CelebA folder in ``root``: smooth colour fields plus noise, as JPEG."""
    rng = np.random.default_rng(0)
    folder = root / "img_align_celeba"
    folder.mkdir(parents=True)
    for i in range(len(PARTITION)):
        coarse = rng.integers(0, 256, size=(6, 5, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((WIDTH, HEIGHT), Image.Resampling.BICUBIC)
        noise = rng.integers(-20, 21, size=(HEIGHT, WIDTH, 3))
        array = np.clip(np.asarray(image, dtype=np.int64) + noise, 0, 255).astype(np.uint8)
        Image.fromarray(array).save(folder / f"{i + 1:06d}.jpg", format="JPEG", quality=90)
    lines = [f"{i + 1:06d}.jpg {p}" for i, p in enumerate(PARTITION)]
    (root / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")
    return root


def names_of(split):
    return [f"{i + 1:06d}.jpg" for i, p in enumerate(PARTITION) if p == SPLITS[split]]


def reference_image(path):
    """The documented preprocessing, done here: the central 140x140 (CelebA's
    (178 - 140) / 2 = 19 and (218 - 140) / 2 = 39 px margins), bilinear to 64x64."""
    with Image.open(path) as image:
        rgb = image.convert("RGB")
    assert rgb.size == (WIDTH, HEIGHT)
    face = rgb.crop((19, 39, 19 + 140, 39 + 140)).resize((64, 64), Image.Resampling.BILINEAR)
    return torch.from_numpy(np.asarray(face).astype(np.float32).transpose(2, 0, 1) / 255)


def reference_split(root, split):
    return torch.stack([reference_image(root / "img_align_celeba" / n) for n in names_of(split)])


class SmallFeatures:
    """A cheap stand-in for Inception-v3: per-channel means and the overall std (4-d)."""

    name = "test-small-features"
    dim = 4

    def __init__(self, device="cpu", **_):
        self.device = device

    def __call__(self, images):
        x = torch.as_tensor(images).double().clamp(0, 1)
        return torch.cat([x.mean((2, 3)), x.flatten(1).std(1, keepdim=True)], 1).cpu().numpy()


def frechet_reference(real, fake):
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)), the trace from the eigenvalues
    of S1 S2 (real and >= 0 for covariance matrices)."""
    mu1, mu2 = real.mean(0), fake.mean(0)
    s1, s2 = np.cov(real, rowvar=False), np.cov(fake, rowvar=False)
    eigenvalues = np.linalg.eigvals(s1 @ s2).real.clip(min=0)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2) - 2 * np.sqrt(eigenvalues).sum())


def small_fid_set(monkeypatch, n):
    """``otae bench`` loads the shipped set, with FID on ``n`` samples instead of 10,000."""
    real = bench_lib.load_bench

    def load_bench(name):
        loaded = real(name)
        assert loaded.name == "celeba-paper" and loaded.fid_samples == 10_000
        return dataclasses.replace(loaded, fid_samples=n)

    monkeypatch.setattr(bench_lib, "load_bench", load_bench)


def read_csv(path):
    with path.open() as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def celeba(tmp_path_factory):
    return write_celeba(tmp_path_factory.mktemp("celeba"))


@pytest.fixture(scope="module")
def bench_out(celeba, tmp_path_factory):
    """``otae bench celeba-paper --models "RAE (D)"`` once, FID by :class:`SmallFeatures`."""
    out = tmp_path_factory.mktemp("bench") / "out"
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("OTAE_CACHE_DIR", str(out.parent / "cache"))
        monkeypatch.setattr(fid_lib, "InceptionFeatureExtractor", SmallFeatures)
        small_fid_set(monkeypatch, FID_SAMPLES)
        args = ["bench", "celeba-paper", "--models", ",".join(MODELS), "--out", str(out)]
        assert main([*args, f"data.root={celeba}", *TINY]) == 0
    return out


def test_celeba_splits_and_images_are_the_partition_file_and_the_documented_crop(celeba):
    for split in SPLITS:
        data = build_dataset("celeba", split, root=celeba)
        assert data.files == names_of(split)
        assert len(data) == PARTITION.count(SPLITS[split])
    assert [len(names_of(s)) for s in SPLITS] == [20, 6, 6]

    test = build_dataset("celeba", "test", root=celeba)
    expected = reference_split(celeba, "test")
    images, labels = test.get_batch(torch.arange(len(test)))
    assert torch.equal(images, expected)
    assert torch.equal(labels, torch.full((6,), -1)) and test.labels is None
    image, label = test[-1]
    assert torch.equal(image, expected[-1]) and label.item() == -1
    # the content is not flat: a wrong crop box or resize would not go unnoticed
    assert images.std() > 0.1

    # the data the bench set's runs see: the set's overrides give the same 3x64x64 images
    bench = bench_lib.load_bench("celeba-paper")
    config = load_config(bench.runs[0].config, [*bench.overrides, f"data.root={celeba}"])
    assert config.network.architecture == "paper_celeba" and config.model.latent_dim == 64
    assert torch.equal(build_split(config.data, "test").get_batch(torch.arange(6))[0], expected)
    assert len(build_split(config.data, "train")) == 20


def test_celeba_paper_bench_end_to_end(bench_out, celeba):
    table = {row["method"]: row for row in read_csv(bench_out / "table.csv")}
    assert list(table) == list(MODELS)
    for row in table.values():
        for key in ("test_rec_loss_mean", "fid_mean", "seconds_per_epoch"):
            assert math.isfinite(float(row[key])) and float(row[key]) > 0, (row["method"], key)
    markdown = (bench_out / "table.md").read_text()
    assert "| RAE (D) | D | 1 |" in markdown and "| 64.49 | 51.45 |" in markdown  # paper's
    assert "classifier FD" not in markdown.split("| method")[1]  # no such column
    assert (bench_out / "report.html").is_file() and (bench_out / "runtime.md").is_file()
    # the report's figures are of RGB 64x64 faces: 8x8 samples, 2-px borders around tiles
    with Image.open(bench_out / "rae--d" / "seed0" / "figures" / "samples.png") as grid:
        assert grid.mode == "RGB" and grid.size == (8 * 66 + 2, 8 * 66 + 2)

    train, test = reference_split(celeba, "train").double(), reference_split(celeba, "test")
    baseline = float((test.double() - train.mean(0)).pow(2).flatten(1).sum(1).mean())
    runs = read_csv(bench_out / "runs.csv")
    assert [r["run"] for r in runs] == list(MODELS)
    for record in runs:
        run_dir = bench_out / "rae--d" / "seed0"
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert metrics["dataset"] == "celeba" and metrics["architecture"] == "paper_celeba"
        assert metrics["epochs"] == 1 and metrics["test_images"] == 6
        assert metrics["fid_samples"] == FID_SAMPLES and metrics["fid_real_samples"] == 6
        assert metrics["mean_image_baseline_rec_loss"] == pytest.approx(baseline, rel=1e-9)

        _, model, _ = load_run(run_dir, "last")
        with torch.no_grad():
            rec = (model.reconstruct(test).double() - test.double()).pow(2).flatten(1).sum(1)
            generator = torch.Generator().manual_seed(derived_seed(0, 0, 6))
            samples = model.sample(FID_SAMPLES, generator).clamp(0, 1)
        assert metrics["test_rec_loss"] == pytest.approx(float(rec.mean()), rel=1e-5)
        assert float(record["test_rec_loss"]) == pytest.approx(metrics["test_rec_loss"], rel=1e-9)
        fid = frechet_reference(SmallFeatures()(test), SmallFeatures()(samples))
        assert metrics["fid"] == pytest.approx(fid, rel=1e-6, abs=1e-9)


def test_celeba_paper_rerun_reuses_the_finished_runs(bench_out, celeba, monkeypatch, capsys):
    """A second ``otae bench`` with the same settings trains nothing and remeasures nothing."""
    before = (bench_out / "runs.csv").read_text()
    monkeypatch.setenv("OTAE_CACHE_DIR", str(bench_out.parent / "cache"))
    small_fid_set(monkeypatch, FID_SAMPLES)
    args = ["bench", "celeba-paper", "--models", ",".join(MODELS), "--out", str(bench_out)]
    assert main([*args, f"data.root={celeba}", *TINY]) == 0
    assert "training in" not in capsys.readouterr().out
    assert (bench_out / "runs.csv").read_text() == before


@pytest.mark.parametrize(
    "damage, message",
    [
        ("no root", "data.root must be set"),
        ("no partition file", "list_eval_partition.txt not found"),
        ("no image folder", "img_align_celeba not found"),
        ("a missing test image", "1 of the 6 test images are missing"),
        ("classifier FD", "training images are not labelled"),
    ],
)
def test_celeba_paper_without_its_data_is_one_line_and_exit_2(
    damage, message, celeba, tmp_path, capsys
):
    import shutil

    root = tmp_path / "celeba"
    shutil.copytree(celeba, root)
    extra = [f"data.root={root}"]
    if damage == "no root":
        extra = []
    elif damage == "no partition file":
        (root / "list_eval_partition.txt").unlink()
    elif damage == "no image folder":
        shutil.rmtree(root / "img_align_celeba")
    elif damage == "a missing test image":
        (root / "img_align_celeba" / names_of("test")[-1]).unlink()
    else:  # CelebA is unlabelled here: the classifier FD cannot be had, said before training
        extra.append("evaluation.classifier_fd_samples=10")
    args = ["bench", "celeba-paper", "--models", "RAE (D)", "--out", str(tmp_path / "out")]
    assert main([*args, *extra, *TINY]) == 2
    err = capsys.readouterr().err
    assert err.startswith("otae: error:") and message in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not list((tmp_path / "out").rglob("last.pt"))  # refused before any training


def test_celeba_dataset_rejects_a_partly_unpacked_folder_when_built(celeba, tmp_path):
    import shutil

    root = tmp_path / "celeba"
    shutil.copytree(celeba, root)
    for name in names_of("train")[5:]:
        (root / "img_align_celeba" / name).unlink()
    with pytest.raises(FileNotFoundError, match="15 of the 20 train images are missing"):
        CelebADataset(root, "train")
    assert len(CelebADataset(root, "valid")) == 6  # the other splits are whole
    # a byte-order mark before the first name is not part of it
    partition = root / "list_eval_partition.txt"
    partition.write_bytes(b"\xef\xbb\xbf" + partition.read_bytes())
    assert CelebADataset(root, "valid").files == names_of("valid")


@pytest.mark.slow
def test_celeba_paper_bench_with_the_real_inception(celeba, tmp_path, monkeypatch):
    """The set's FID with Inception-v3 itself (1-2 minutes on 2 shared CPU cores: the
    2048-d matrix square root dominates), 10 generated vs the 6 test images."""
    monkeypatch.setenv("OTAE_CACHE_DIR", str(tmp_path / "cache"))
    small_fid_set(monkeypatch, 10)
    out = tmp_path / "out"
    args = ["bench", "celeba-paper", "--models", "RAE (D)", "--out", str(out)]
    assert main([*args, f"data.root={celeba}", *TINY]) == 0
    metrics = json.loads((out / "rae--d" / "seed0" / "metrics.json").read_text())
    assert metrics["fid_samples"] == 10 and metrics["fid_real_samples"] == 6
    assert math.isfinite(metrics["fid"]) and metrics["fid"] > 0
    (row,) = read_csv(out / "table.csv")
    assert float(row["fid_mean"]) == metrics["fid"]
