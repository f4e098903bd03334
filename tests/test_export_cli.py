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
    _, original, _ = load_run(run, "best")  # the default of otae export
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
        # the same codes to float32 rounding: oneDNN's kernels may block a batch of 7
        # differently from one of 4096 (bit-identical on one CPU, not on another)
        np.testing.assert_allclose(a["codes"][:7], model.embed(images).numpy(), rtol=1e-5, atol=1e-6)
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


def test_eval_of_an_export_folder_measures_it_on_its_dataset(run, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["export", str(run), str(out)]) == 0
    capsys.readouterr()
    # the run was evaluated on the first 100 test images: the same numbers from the folder
    assert main(["eval", str(out), "--subset", "100"]) == 0
    printed = capsys.readouterr().out
    assert f"metrics: {out / 'eval' / 'metrics.json'}" in printed
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    original = json.loads((run / "metrics.json").read_text())
    assert metrics["dataset"] == "mnist" and metrics["split"] == "test"
    assert metrics["test_images"] == 100 and metrics["model"] == original["model"]
    assert metrics["test_rec_loss"] == pytest.approx(original["test_rec_loss"], rel=1e-6)
    assert metrics["parameters"] == original["parameters"]
    assert 0 <= metrics["cluster_acc_kmeans"] <= 1 and metrics["cluster_classes"] == 10
    assert metrics["mean_image_baseline_rec_loss"] > 0
    assert (out / "eval" / "test_codes.npz").is_file()


def test_eval_of_an_export_folder_refuses_options_of_a_run_and_back(run, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["export", str(run), str(out)]) == 0
    capsys.readouterr()
    assert main(["eval", str(out), "--checkpoint", "best", "--fid", "10"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--checkpoint, --fid: for a run directory" in err
    assert main(["eval", str(run), "--data", "mnist", "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--data, --out: for an export folder" in err
    assert main(["eval", str(out), "--data", "shapes", "--subset", "5"]) == 2
    err = capsys.readouterr().err
    assert "shapes test images are (1, 64, 64), the model takes (1, 28, 28)" in err


def test_eval_of_an_export_folder_scores_disentanglement_where_the_data_has_factors(tmp_path):
    from otae.models import build_model, model_config_from_dict

    torch.manual_seed(0)
    config = model_config_from_dict({"name": "vae", "latent_dim": 4})
    model = build_model(config, (1, 32, 32), "mlp", {"hidden": [32]})
    folder = model.save_pretrained(tmp_path / "m", data={"dataset": "shapes", "image_size": 32})
    assert main(["eval", str(folder), "--subset", "300", "--out", str(tmp_path / "ev")]) == 0
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    for key in ("mig", "dci_disentanglement", "factorvae_score", "cluster_acc_kmeans",
                "test_rec_loss"):  # fmt: skip
        assert isinstance(metrics[key], float), key
    assert metrics["disentanglement_factors"][0] == "shape"
    codes = np.load(tmp_path / "ev" / "test_codes.npz")
    assert codes["codes"].shape == (300, 4) and codes["factors"].shape == (300, 5)
    with pytest.raises(ValueError, match=r"mnist test images are \(1, 28, 28\), the model takes"):
        from otae.export import evaluate_export

        evaluate_export(folder, data="mnist", subset=5)
    # a folder that names no dataset needs --data
    model.save_pretrained(tmp_path / "bare")
    with pytest.raises(ValueError, match=r"names no dataset \(data.dataset\): pass --data"):
        evaluate_export(tmp_path / "bare")
