"""Things that used to go silently wrong: resume overrides, a missing run, the classifier
FD of non-MNIST data, stale checkpoint temporaries, a run's name, the refusal of
pickled code, and progress bars in logs."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from otae.cli import main
from otae.data import TensorImageDataset
from otae.evaluation import classifier as classifier_module
from otae.experiment import run_experiment
from otae.training import CheckpointError, Trainer, load_checkpoint, load_config
from otae.training.callbacks import NoProgress, progress_bar

from .helpers import make_trainer, write_idx
from .helpers import tiny_config as _training_config

TINY = [
    "data.train_subset=64",
    "data.test_subset=32",
    "training.epochs=1",
    "training.batch_size=16",
    "training.progress=false",
    "training.tensorboard=false",
    "network.architecture=mlp",
    "network.options={hidden: [16]}",
    "evaluation.latent_points=32",
    "evaluation.timing_steps=2",
]
RUN_FILES = ("config.yaml", "history.csv", "metrics.json", "checkpoints/last.pt")


@pytest.fixture(scope="module")
def one_epoch_run(tmp_path_factory):
    """A finished 1-epoch D-RAE run in a folder whose name is not the config's name."""
    run_dir = tmp_path_factory.mktemp("runs") / "my-folder"
    args = ["train", "mnist/drae-quick", "--run-dir", str(run_dir), "--no-report", *TINY]
    assert main(args) == 0
    return run_dir


@pytest.fixture
def run_copy(one_epoch_run, tmp_path):
    copy = tmp_path / "my-folder"
    shutil.copytree(one_epoch_run, copy)
    return copy


def snapshot(run_dir: Path) -> dict[str, bytes]:
    return {name: (run_dir / name).read_bytes() for name in RUN_FILES}


# ------------------------------------------------------------------ resume overrides
@pytest.mark.parametrize(
    "overrides, keys",
    [
        (["training.seed=5"], ["training.seed"]),
        (["model.beta=0.2", "training.batch_size=8"], ["model.beta", "training.batch_size"]),
        (["data.train_subset=32"], ["data.train_subset"]),
        (["training.optimizer.betas=[0.9, 0.99]"], ["training.optimizer.betas"]),
        (["network.options={hidden: [8]}"], ["network.options.hidden"]),
    ],
)
def test_resume_refuses_overrides_that_change_what_is_trained(run_copy, overrides, keys, capsys):
    before = snapshot(run_copy)
    assert main(["train", str(run_copy), "training.epochs=2", *overrides]) == 2
    err = capsys.readouterr().err
    assert err.startswith("otae: error: cannot resume") and err.count("\n") == 1
    for key in keys:
        assert key in err
    assert "training.epochs" not in err.split(":", 2)[2].split("they change")[0]  # legal
    assert snapshot(run_copy) == before  # the run is untouched, byte for byte


def test_resume_refuses_fewer_epochs_than_done(run_copy, capsys):
    state = load_checkpoint(run_copy / "checkpoints" / "last.pt")
    state["epoch"] = 3  # pretend 3 epochs were done; ask for 2
    torch.save(state, run_copy / "checkpoints" / "last.pt")
    before = snapshot(run_copy)
    assert main(["train", str(run_copy), "training.epochs=2"]) == 2
    assert "already completed 3 epochs" in capsys.readouterr().err
    assert snapshot(run_copy) == before


def test_resume_with_more_epochs_and_a_new_lr_applies_them_and_keeps_the_name(run_copy, capsys):
    args = ["train", str(run_copy), "training.epochs=2", "training.optimizer.lr=1e-4"]
    assert main([*args, "--no-report"]) == 0
    state = load_checkpoint(run_copy / "checkpoints" / "last.pt")
    assert state["epoch"] == 2 and len(state["history"]) == 2
    # the optimiser really runs at the new rate, and the records say so
    assert [g["lr"] for g in state["optimizer"]["param_groups"]] == [1e-4]
    assert state["config"]["training"]["optimizer"]["lr"] == 1e-4
    config = yaml.safe_load((run_copy / "config.yaml").read_text())
    assert config["training"]["optimizer"]["lr"] == 1e-4 and config["training"]["epochs"] == 2
    # the run keeps its name, not the folder's
    assert config["name"] == state["config"]["name"] == "drae-quick"
    metrics = json.loads((run_copy / "metrics.json").read_text())
    assert metrics["epochs"] == 2
    assert metrics["test_rec_loss"] == pytest.approx(state["history"][-1]["test_rec_loss"])
    assert "resuming with training.optimizer.lr (0.001 -> 0.0001)" in capsys.readouterr().err


def test_resume_with_the_config_name_and_resume_flag_is_checked_too(run_copy, capsys):
    before = snapshot(run_copy)
    args = ["train", "mnist/drae-quick", "--resume", "--run-dir", str(run_copy), *TINY]
    assert main([*args, "training.seed=1"]) == 2
    assert "training.seed (0 -> 1)" in capsys.readouterr().err
    assert snapshot(run_copy) == before


def test_a_failing_timing_pass_does_not_crash_the_run(run_copy, monkeypatch, capsys):
    def broken(self, *args, **kwargs):
        raise ValueError("y contains NaN or Inf")

    monkeypatch.setattr(Trainer, "regulariser_share", broken)
    assert main(["train", str(run_copy), "training.epochs=2", "--no-report"]) == 0
    metrics = json.loads((run_copy / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and metrics["timing_error"].startswith("ValueError: y contains")
    assert "step_time_s" not in metrics
    assert "step-timing pass failed" in capsys.readouterr().err


def test_stale_metrics_are_removed_when_resumed_training_fails(run_copy, monkeypatch):
    original = Trainer.train_epoch

    def dies_in_epoch_3(self, epoch):
        if epoch == 3:
            raise RuntimeError("killed in epoch 3")
        return original(self, epoch)

    monkeypatch.setattr(Trainer, "train_epoch", dies_in_epoch_3)
    config = load_config(run_copy / "config.yaml", ["training.epochs=3"])
    with pytest.raises(RuntimeError, match="killed in epoch 3"):
        run_experiment(config, run_copy, resume=True, report=False, log=lambda m: None)
    assert load_checkpoint(run_copy / "checkpoints" / "last.pt")["epoch"] == 2
    # metrics.json said epoch 1: it would no longer describe the run's checkpoint
    assert not (run_copy / "metrics.json").exists()


def tiny_config(epochs=1, lr=1e-3, progress=False):
    """test_training's tiny VAE run, with the learning rate and progress bars chosen."""
    config = _training_config("vae", epochs=epochs)
    config.training.optimizer.lr = lr
    config.training.progress = progress
    return config


def parameters(trainer):
    return {k: p.detach().clone() for k, p in trainer.model.named_parameters()}


def test_a_new_learning_rate_drives_the_resumed_steps(tmp_path):
    make_trainer(tiny_config(epochs=1), tmp_path / "run").fit()
    moves = {}
    for lr in (1e-3, 1e-12):
        shutil.copytree(tmp_path / "run", tmp_path / f"lr{lr}")
        trainer = make_trainer(tiny_config(epochs=2, lr=lr), tmp_path / f"lr{lr}")
        assert trainer.resume() and trainer.epoch == 1
        assert [g["lr"] for g in trainer.optimizer.param_groups] == [lr]
        before = parameters(trainer)
        trainer.fit()
        after = parameters(trainer)
        moves[lr] = max(float((after[k] - before[k]).abs().max()) for k in before)
    # Adam moves each weight by about lr per step: 4 steps at 1e-12 leave it in place
    assert moves[1e-12] < 1e-9 < 1e-4 < moves[1e-3]


# ------------------------------------------------------------------ --resume of nothing
def test_resume_of_a_missing_run_is_refused(tmp_path, capsys):
    missing = tmp_path / "runs" / "missing"
    assert main(["train", "mnist/drae-quick", "--resume", "--run-dir", str(missing), *TINY]) == 2
    err = capsys.readouterr().err
    assert err.startswith("otae: error: --resume:") and str(missing) in err
    assert f"no run directory at {missing}" in err and not missing.exists()


# ------------------------------------------------------------------ stale temporaries
def test_stale_checkpoint_temporaries_are_removed_on_the_next_start(tmp_path):
    run = tmp_path / "run"
    checkpoints = run / "checkpoints"
    checkpoints.mkdir(parents=True)
    stale = [checkpoints / ".last.pt.k3x_9a0q.tmp", checkpoints / ".best.pt.abcdefgh.tmp"]
    kept = [
        checkpoints / "notes.tmp",
        checkpoints / ".last.pt.tmp",
        checkpoints / "last.pt.abcdefgh.tmp",
        run / ".last.pt.abcdefgh.tmp",  # not in the checkpoints folder
    ]
    for path in stale + kept:
        path.write_bytes(b"partial")
    messages = []
    make_trainer(tiny_config(epochs=1), run, log=messages.append).fit()  # a (re)start
    assert not any(p.exists() for p in stale)
    assert all(p.read_bytes() == b"partial" for p in kept)
    assert any(".last.pt.k3x_9a0q.tmp" in m for m in messages)
    # and on resume
    stale[0].write_bytes(b"partial")
    make_trainer(tiny_config(epochs=2), run).fit(resume=True)
    assert not stale[0].exists() and load_checkpoint(checkpoints / "last.pt")["epoch"] == 2


# ------------------------------------------------------------------ pickled code
class Payload:
    """Unpickling this (unsafely) would create ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_checkpoint_with_pickled_objects_is_refused_without_unsafe_advice(tmp_path, capsys):
    # the payload is live: an unsafe load runs it
    live = tmp_path / "live-marker"
    torch.save({"x": Payload(live)}, tmp_path / "live.pt")
    torch.load(tmp_path / "live.pt", weights_only=False)
    assert live.exists()

    marker = tmp_path / "marker"
    torch.save({"otae_checkpoint": 1, "evil": Payload(marker)}, tmp_path / "evil.pt")
    import pickle

    (tmp_path / "plain.pt").write_bytes(pickle.dumps({"evil": Payload(marker)}))
    for name in ("evil.pt", "plain.pt"):
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(tmp_path / name)
        message = str(info.value)
        assert "weights_only" not in message and "trust" not in message
        assert "contains objects other than tensors and plain data" in message
        assert "refuses to load it for safety" in message
    with pytest.raises(CheckpointError, match=r"it references [\w.]*open\)"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not marker.exists()
    # through the command line: one line, exit 2, and the code never ran
    run = tmp_path / "run" / "checkpoints"
    run.mkdir(parents=True)
    shutil.copy(tmp_path / "evil.pt", run / "last.pt")
    assert main(["eval", str(tmp_path / "run"), "--no-report"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("otae: error:") and err.count("\n") == 1 and "weights_only" not in err
    assert not marker.exists()


# ------------------------------------------------------------------ progress bars
def test_progress_bars_stay_out_of_a_log_that_is_not_a_terminal(tmp_path, capsys):
    assert not sys.stderr.isatty()
    make_trainer(tiny_config(epochs=2, progress=True), tmp_path / "run", log=print_err).fit()
    err = capsys.readouterr().err
    # 4 batches per epoch: bars would write carriage-return updates; one line per epoch
    assert "\r" not in err and "it/s" not in err
    assert err.splitlines() == [line for line in err.splitlines() if line.startswith("epoch ")]
    assert len(err.splitlines()) == 2


def test_progress_bars_are_shown_on_a_terminal(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert not isinstance(progress_bar(4, "x", enabled=True), NoProgress)
    assert isinstance(progress_bar(4, "x", enabled=False), NoProgress)
    make_trainer(tiny_config(epochs=1, progress=True), tmp_path / "run").fit()
    err = capsys.readouterr().err
    assert "\r" in err and "epoch 1/1" in err and "/4 [" in err


def print_err(message):
    print(message, file=sys.stderr)


# ------------------------------------------------------------------ classifier FD
def write_toy_idx(root: Path, n_train=96, n_test=48, side=16, seed=0):
    """Three classes of 16x16 images: a bright bar at the top, the middle or the bottom."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 3
        images = rng.integers(0, 60, size=(n, side, side))
        for i, label in enumerate(labels):
            rows = slice(label * side // 3, (label + 1) * side // 3)
            images[i, rows] += 180
        write_idx(root / f"{split}-images-idx3-ubyte", images)
        write_idx(root / f"{split}-labels-idx1-ubyte", labels)


def test_classifier_fd_of_non_mnist_data_uses_a_classifier_of_that_data(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("OTAE_CACHE_DIR", str(tmp_path / "cache"))

    def no_mnist(*args, **kwargs):
        raise AssertionError("the MNIST classifier must not measure non-MNIST data")

    monkeypatch.setattr(classifier_module, "load_or_train_mnist_classifier", no_mnist)
    root = tmp_path / "toy"
    write_toy_idx(root)
    run = tmp_path / "run"
    args = ["train", "mnist/drae-quick", "--run-dir", str(run), "--no-report", *TINY,
            "data.name=idx", f"data.root={root}", "data.train_subset=null",
            "data.test_subset=null", "evaluation.timing_steps=0"]  # fmt: skip
    assert main(args) == 0
    capsys.readouterr()
    assert main(["eval", str(run), "--no-report", "--classifier-fd", "40"]) == 0
    out = capsys.readouterr().out
    metrics = json.loads((run / "metrics.json").read_text())
    name = metrics["classifier_name"]
    assert metrics["classifier_trained_on"] == f"idx at {root} (96 training images)"
    assert not name.startswith("mnist") and name.startswith("idx-at-")
    assert f"trained on idx at {root} (96 training images)" in out
    assert metrics["classifier_fd_samples"] == 40 and metrics["classifier_fd"] > 0
    # the cached classifier is the run's data's: its input is 1x16x16, its head 3 classes
    info = json.loads((tmp_path / "cache" / f"{name}.json").read_text())
    assert info["network"]["image_shape"] == [1, 16, 16] and info["network"]["n_classes"] == 3
    assert info["n_train"] == 96 and info["test_accuracy"] == metrics["classifier_test_accuracy"]
    state = torch.load(tmp_path / "cache" / f"{name}.pt", weights_only=True)
    assert state["head.weight"].shape == (3, 128) and state["features.0.weight"].shape[1] == 1

    # a second evaluation reuses the cached classifier (no training) and agrees
    def no_training(*args, **kwargs):
        raise AssertionError("the cached classifier must be reused")

    monkeypatch.setattr(classifier_module, "train_mnist_classifier", no_training)
    first = metrics["classifier_fd"]
    assert main(["eval", str(run), "--no-report", "--classifier-fd", "40"]) == 0
    again = json.loads((run / "metrics.json").read_text())
    assert again["classifier_name"] == name and again["classifier_fd"] == pytest.approx(first)


def test_classifier_cache_identity_follows_the_data_and_unlabelled_data_is_refused(tmp_path):
    from otae.evaluation.classifier import dataset_identity, load_or_train_data_classifier
    from otae.experiment import uses_mnist_classifier
    from otae.training import DataConfig

    images = (torch.rand(20, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 255).byte()
    labels = torch.arange(20) % 2
    relabelled = labels.clone()
    relabelled[7] = 1 - relabelled[7]
    same = dataset_identity(TensorImageDataset(images, labels))
    assert same == dataset_identity(TensorImageDataset(images.clone(), labels.clone()))
    assert same != dataset_identity(TensorImageDataset(images, relabelled))
    changed = images.clone()
    changed[3, 0, 2, 2] ^= 1
    assert same != dataset_identity(TensorImageDataset(changed, labels))
    with pytest.raises(ValueError, match="not labelled"):
        load_or_train_data_classifier(
            TensorImageDataset(images), None, dataset="folder", cache_dir=tmp_path, log=None
        )
    assert uses_mnist_classifier(DataConfig())
    assert not uses_mnist_classifier(DataConfig(name="idx", root=str(tmp_path)))
    assert not uses_mnist_classifier(DataConfig(name="mnist", root=str(tmp_path)))
    assert not uses_mnist_classifier(DataConfig(name="mnist", image_size=32))
