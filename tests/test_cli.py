"""The `otae` command end to end on a tiny MNIST subset, and its error messages."""

from __future__ import annotations

import json

import pytest
import yaml

from otae.cli import main

TINY = [
    "data.train_subset=200",
    "data.test_subset=100",
    "training.epochs=2",
    "training.batch_size=50",
    "training.progress=false",
    "network.architecture=mlp",
    "network.options={hidden: [32]}",
    "evaluation.latent_points=100",
]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "drae"
    assert main(["train", "mnist/drae-quick", "--run-dir", str(run_dir), *TINY]) == 0
    return run_dir


def test_train_writes_a_complete_run_directory(trained_run, capsys):
    for name in ("config.yaml", "history.csv", "metrics.json", "report.html"):
        assert (trained_run / name).is_file(), name
    assert (trained_run / "checkpoints" / "last.pt").is_file()
    assert any((trained_run / "tensorboard").iterdir())
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert metrics["model"] == "drae" and metrics["epochs"] == 2 and metrics["test_images"] == 100
    import csv

    rows = list(csv.DictReader((trained_run / "history.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert float(rows[1]["test_rec_loss"]) < float(rows[0]["test_rec_loss"])  # it learns
    assert metrics["test_rec_loss"] == pytest.approx(float(rows[1]["test_rec_loss"]))
    assert metrics["mean_image_baseline_rec_loss"] > 0
    config = yaml.safe_load((trained_run / "config.yaml").read_text())
    assert config["training"]["epochs"] == 2 and config["model"]["name"] == "drae"
    figures = list((trained_run / "figures").glob("*.png"))
    assert len(figures) >= 4


def test_eval_and_sample(trained_run, tmp_path, capsys):
    assert main(["eval", str(trained_run), "--no-report"]) == 0
    assert "test_rec_loss" in capsys.readouterr().out
    out = tmp_path / "s.png"
    assert main(["sample", str(trained_run), "-n", "9", "--component", "2", "--out", str(out)]) == 0
    assert out.is_file()
    assert (
        main(["sample", str(trained_run), "-n", "4", "--component", "10", "--out", str(out)]) == 2
    )
    assert "component index k=10" in capsys.readouterr().err


def test_existing_run_is_not_overwritten_and_resume_extends_it(trained_run, capsys):
    assert main(["train", "mnist/drae-quick", "--run-dir", str(trained_run), *TINY]) == 2
    assert "already holds a run" in capsys.readouterr().err
    # resume the run directory with one more epoch
    assert main(["train", str(trained_run), "training.epochs=3"]) == 0
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert metrics["epochs"] == 3


def test_list_shows_models_and_configs(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in (
        "vae",
        "drae",
        "prae",
        "gwae",
        "sae",
        "mnist/drae-quick",
        "paper_mnist",
        "celeba",
        "mnist-quick",
    ):
        assert name in out, name


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "mnist/drae-quick", "training.epocs=1"], "epocs"),
        (["train", "mnist/drae-quick", "model.name=nomodel"], "unknown model 'nomodel'"),
        (["train", "no/such-config"], "not found"),
        (["train", "mnist/drae-quick", "data.name=idx", "data.root=/no/such/dir"], "/no/such/dir"),
        (
            [
                "train",
                "mnist/drae-quick",
                "network.architecture=paper_celeba",
                "network.options={}",
            ],
            "3x64x64",
        ),
        (["train", "mnist/drae-quick", "network.options={width: 3}"], "width"),
        (["eval", "/no/such/run"], "no checkpoint"),
    ],
)
def test_bad_input_is_one_clear_line(args, message, capsys, tmp_path):
    assert main([*args, *(["--run-dir", str(tmp_path / "r")] if args[0] == "train" else [])]) == 2
    err = capsys.readouterr().err
    assert err.startswith("otae: error:") and message in err and "Traceback" not in err


def test_corrupted_checkpoint_is_reported(trained_run, tmp_path, capsys):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(trained_run, copy)
    ck = copy / "checkpoints" / "last.pt"
    ck.write_bytes(ck.read_bytes()[:1000])
    assert main(["eval", str(copy)]) == 2
    assert "corrupted" in capsys.readouterr().err


def test_multiview_command_on_a_synthetic_npz(tmp_path, capsys):
    import numpy as np

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 40)
    centres_a, centres_b = rng.normal(size=(3, 6)) * 3, rng.normal(size=(3, 4)) * 3
    np.savez(
        tmp_path / "toy.npz",
        view_a=(centres_a[labels] + rng.normal(size=(120, 6))).astype(np.float32),
        view_b=(centres_b[labels] + rng.normal(size=(120, 4))).astype(np.float32),
        y=labels,
    )
    out = tmp_path / "out"
    args = ["multiview", "--data", str(tmp_path / "toy.npz"), "--methods", "independent,aes_gw",
            "--seeds", "2", "--epochs", "2", "--latent-dim", "3", "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    table = (out / "table.md").read_text()
    assert "| Independent AEs | unpaired |" in table and "| AEs+GW | unpaired |" in table
    rows = (out / "table.csv").read_text().splitlines()
    assert len(rows) == 3 and all(row.split(",")[4] == "2" for row in rows[1:])  # 2 seeds
    assert main(["multiview", "--data", str(tmp_path / "missing.mat")]) == 2
    assert "missing.mat" in capsys.readouterr().err
    assert main(["multiview", "--data", str(tmp_path / "toy.npz"), "--methods", "pca"]) == 2
    assert "unknown method" in capsys.readouterr().err
