"""`otae export`, `otae encode` and `otae sample` on an export folder, end to end on a tiny
run; a tampered folder is one line and exit 2."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from otae.cli import main
from otae.export import load_model
from otae.models import from_pretrained
from otae.training import load_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    args = ["train", "mnist/drae-quick", "training.epochs=1", "data.train_subset=200",
            "data.test_subset=100", "training.progress=false", "training.tensorboard=false",
            "evaluation.report=false", "evaluation.timing_steps=0",
            "--run-dir", str(root / "run")]  # fmt: skip
    assert main(args) == 0
    return root / "run"


def test_export_writes_a_folder_that_reloads_bit_identically(run, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["export", str(run), str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md", "config.json", "model.safetensors", "samples.png"
    ]  # fmt: skip
    config = json.loads((out / "config.json").read_text())
    assert config["data"]["dataset"] == "mnist" and config["data"]["value_range"] == [0.0, 1.0]
    assert config["training"]["epochs"] == 1
    card = (out / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: otae\n")
    metrics = json.loads((run / "metrics.json").read_text())
    assert f"| {metrics['test_rec_loss']:.4g} |" in card
    _, original, _ = load_run(run, None)
    loaded = from_pretrained(out)
    x = torch.rand(5, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(original.embed(x), loaded.embed(x))
        g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
        assert torch.equal(original.sample(3, g1), loaded.sample(3, g2))


def test_encode_writes_codes_and_labels_from_a_folder_or_a_run(run, tmp_path):
    out = tmp_path / "out"
    assert main(["export", str(run), str(out)]) == 0
    for source, path in ((out, tmp_path / "a.npz"), (run, tmp_path / "b.npz")):
        assert main(["encode", str(source), "--data", "mnist", "--out", str(path),
                     "--sample", "--batch-size", "4096"]) == 0  # fmt: skip
    a, b = np.load(tmp_path / "a.npz"), np.load(tmp_path / "b.npz")
    assert a["codes"].shape == (10000, 8) and a["labels"].shape == (10000,)
    assert np.array_equal(a["codes"], b["codes"])  # the same model either way
    model = load_model(out)
    from otae.data import build_dataset

    images = build_dataset("mnist", "test", subset=7).get_batch(torch.arange(7))[0].float()
    with torch.no_grad():
        assert np.array_equal(a["codes"][:7], model.embed(images).numpy())
    # a deterministic encoder: its "sample" is the code itself
    assert np.array_equal(a["samples"], a["codes"])


def test_sample_accepts_an_export_folder(run, tmp_path):
    out = tmp_path / "out"
    assert main(["export", str(run), str(out)]) == 0
    assert main(["sample", str(out), "-n", "4", "--out", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").stat().st_size > 0


def test_a_tampered_folder_is_one_line_and_exit_2(run, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["export", str(run), str(out)]) == 0
    capsys.readouterr()
    (out / "model.safetensors").write_bytes(b"\x80\x04not a tensor file")
    code = main(["encode", str(out), "--data", "mnist", "--out", str(tmp_path / "c.npz")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "is not a safetensors file" in err
    assert main(["encode", str(tmp_path), "--data", "mnist", "--out", str(tmp_path / "c.npz")]) == 2
    assert "neither an export folder" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "nope"), str(tmp_path / "o2")]) == 2
    assert "no checkpoint" in capsys.readouterr().err
