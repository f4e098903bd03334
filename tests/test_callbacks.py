"""Trainer callbacks: hook order and values, failures vs checkpoints, TensorBoard tags,
W&B (offline) and MLflow (local file store) runs read back, missing-library errors."""

from __future__ import annotations

import csv
import json
import math
import sys
import time
from pathlib import Path

import pytest

from otae.cli import main
from otae.experiment import run_experiment
from otae.training import (
    Callback,
    ConsoleLogger,
    CSVLogger,
    NonFiniteLossError,
    ProgressBar,
    TensorBoardLogger,
    load_checkpoint,
)
from otae.training.callbacks import CallbackList, default_callbacks

from .helpers import make_trainer, tiny_config


class Recorder(Callback):
    """Every hook call, with copies of what it was given (terms read on the host)."""

    def __init__(self) -> None:
        self.events: list[tuple] = []

    def on_fit_start(self, trainer):
        self.events.append(("fit_start", trainer.epoch))

    def on_epoch_start(self, trainer, epoch, n_steps):
        self.events.append(("epoch_start", epoch, n_steps))

    def on_step_end(self, trainer, epoch, step, terms):
        # a test may sync; a logging callback would do so only where syncs_at says
        self.events.append(("step", epoch, step, {k: float(v.detach()) for k, v in terms.items()}))

    def on_train_epoch_end(self, trainer, epoch):
        self.events.append(("train_epoch_end", epoch))

    def on_epoch_end(self, trainer, epoch, row):
        on_disk = load_checkpoint(trainer.checkpoint_dir / "last.pt")["epoch"]
        self.events.append(("epoch_end", epoch, dict(row), on_disk))

    def on_fit_end(self, trainer):
        self.events.append(("fit_end",))

    def on_exception(self, trainer, err):
        self.events.append(("exception", type(err).__name__))

    def on_run_end(self, trainer, metrics, report):
        self.events.append(("run_end", dict(metrics), report))

    def teardown(self, trainer):
        self.events.append(("teardown",))

    def names(self) -> list[str]:
        return [e[0] for e in self.events]


def plant_nan(trainer, at_step: int) -> None:
    """Make the loss terms of training step ``at_step`` (0-based) NaN."""
    loss, calls = trainer.model.loss, []

    def loss_with_nan(x, generator):
        calls.append(1)
        terms = loss(x, generator)
        return {k: v * math.nan for k, v in terms.items()} if len(calls) == at_step + 1 else terms

    trainer.model.loss = loss_with_nan


# ---------------------------------------------------------------------- defaults
def test_default_callbacks_follow_the_config():
    config = tiny_config(epochs=1)
    assert [type(c) for c in default_callbacks(config)] == [CSVLogger, ConsoleLogger]
    config.training.progress = config.training.tensorboard = True
    assert [type(c) for c in default_callbacks(config)] == [
        ProgressBar, CSVLogger, TensorBoardLogger, ConsoleLogger
    ]
    # ranks other than 0 log nothing
    assert list(CallbackList(default_callbacks(config), enabled=False)) == []


@pytest.mark.parametrize(
    "override, message",
    [
        ({"loggers": ["neptune"]}, "unknown logger 'neptune'; choose from wandb, mlflow"),
        ({"loggers": ["wandb", "wandb"]}, "lists a logger twice"),
        ({"wandb_mode": "cloud"}, "wandb_mode must be one of offline, online, disabled"),
        ({"wandb_project": ""}, "wandb_project must not be empty"),
    ],
)
def test_logger_settings_are_validated(override, message):
    config = tiny_config(epochs=1)
    for key, value in override.items():
        setattr(config.training, key, value)
    with pytest.raises(ValueError, match=message):
        config.validate()


# ---------------------------------------------------------------------- hooks
def test_hooks_come_in_order_with_the_epochs_values(tmp_path):
    recorder = Recorder()
    trainer = make_trainer(tiny_config(epochs=2), tmp_path / "run", callbacks=[recorder])
    history = trainer.fit()
    # 48 images in batches of 12: 4 steps per epoch
    epoch_events = ["epoch_start"] + ["step"] * 4 + ["train_epoch_end", "epoch_end"]
    assert recorder.names() == ["fit_start", *epoch_events, *epoch_events, "fit_end", "teardown"]
    assert recorder.events[0] == ("fit_start", 0)
    assert recorder.events[1] == ("epoch_start", 1, 4)
    for epoch in (1, 2):
        steps = [e for e in recorder.events if e[0] == "step" and e[1] == epoch]
        assert [e[2] for e in steps] == [0, 1, 2, 3]
        (end,) = [e for e in recorder.events if e[0] == "epoch_end" and e[1] == epoch]
        row, checkpointed = end[2], end[3]
        assert row == history[epoch - 1] and checkpointed == epoch  # saved before the hook
        # the epoch's means are the per-step terms averaged over its equal batches
        for key in ("total", "reconstruction", "regulariser"):
            mean = sum(e[3][key] for e in steps) / 4
            assert row[f"train_{key}"] == pytest.approx(mean, rel=1e-6)


def test_a_failing_callback_stops_the_run_after_the_epochs_checkpoint(tmp_path):
    class FailsAtEpoch2(Callback):
        def on_epoch_end(self, trainer, epoch, row):
            if epoch == 2:
                raise RuntimeError("callback broke")

    recorder = Recorder()
    run = tmp_path / "run"
    trainer = make_trainer(tiny_config(epochs=3), run, callbacks=[FailsAtEpoch2(), recorder])
    with pytest.raises(RuntimeError, match="callback broke"):
        trainer.fit()
    assert load_checkpoint(run / "checkpoints" / "last.pt")["epoch"] == 2
    # the callbacks before the failing one saw epoch 2; history.csv has both rows
    with open(run / "history.csv") as handle:
        assert [row["epoch"] for row in csv.DictReader(handle)] == ["1", "2"]
    assert recorder.names()[-2:] == ["exception", "teardown"]
    assert recorder.events[-2] == ("exception", "RuntimeError")
    # resuming goes on with epoch 3, as after any stop at an epoch boundary
    resumed = make_trainer(tiny_config(epochs=3), run, callbacks=[])
    assert resumed.resume() and resumed.epoch == 2
    assert [row["epoch"] for row in resumed.fit()] == [1, 2, 3]


def test_divergence_is_checked_before_a_callback_reads_the_terms(tmp_path):
    class ReadsEveryStep(Recorder):
        def syncs_at(self, step):
            return True

    recorder = ReadsEveryStep()
    trainer = make_trainer(tiny_config(epochs=1), tmp_path / "run", callbacks=[recorder])
    plant_nan(trainer, at_step=1)
    with pytest.raises(NonFiniteLossError, match="epoch 1, batch 1"):
        trainer.fit()
    steps = [e for e in recorder.events if e[0] == "step"]
    assert [e[2] for e in steps] == [0] and all(map(math.isfinite, steps[0][3].values()))
    assert recorder.names()[-4:] == ["step", "train_epoch_end", "exception", "teardown"]


def test_tensorboard_logs_each_history_column_under_its_tag(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = tiny_config(epochs=2)
    config.training.tensorboard = True
    history = make_trainer(config, tmp_path / "run").fit()
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    tags = events.Tags()["scalars"]
    expected = {k.replace("_", "/", 1) for k in history[0] if k != "epoch"}
    assert set(tags) == expected and "train/total" in tags and "epoch/time_s" in tags
    for key in ("train_total", "test_rec_loss"):
        scalars = events.Scalars(key.replace("_", "/", 1))
        assert [s.step for s in scalars] == [1, 2]
        assert [s.value for s in scalars] == pytest.approx([row[key] for row in history])


# ---------------------------------------------------------------------- docs example
def test_the_docs_example_callback(tmp_path):
    """docs/callbacks.md, "Writing your own": the same code."""

    class BestEpoch(Callback):
        """Remember the epoch with the lowest held-out loss; print it at the end."""

        def __init__(self):
            self.best = (math.inf, None)

        def on_epoch_end(self, trainer, epoch, row):
            self.best = min(self.best, (row["test_total"], epoch))

        def on_fit_end(self, trainer):
            trainer.log(f"best epoch: {self.best[1]} (test total {self.best[0]:.3f})")

    lines: list[str] = []
    best = BestEpoch()
    trainer = make_trainer(tiny_config(epochs=3), tmp_path / "run", log=lines.append,
                           callbacks=[best])
    history = trainer.fit()
    value, epoch = min((row["test_total"], row["epoch"]) for row in history)
    assert best.best == (value, epoch)
    assert lines[-1] == f"best epoch: {epoch} (test total {value:.3f})"


# ---------------------------------------------------------------------- W&B, MLflow
def mnist_config(tmp_path, **training):
    """A 1-epoch run on 48 embedded MNIST images, through run_experiment."""
    from otae.training import config_from_dict

    return config_from_dict({
        "name": "cb",
        "model": {"name": "drae", "latent_dim": 2, "n_components": 2},
        "network": {"architecture": "mlp", "options": {"hidden": [16]}},
        "data": {"name": "mnist", "train_subset": 48, "test_subset": 16},
        "training": {"epochs": 1, "batch_size": 12, "seed": 1, "device": "cpu",
                     "progress": False, "tensorboard": False, **training},
        "evaluation": {"report": False, "timing_steps": 0},
    })


def wandb_records(path: Path) -> list:
    """The protobuf records of a W&B ``.wandb`` file (a LevelDB-style log: 7-byte
    header, then 32 KiB blocks of chunks ``crc32(4) length(2, LE) type(1) data``,
    type 1 a whole record, 2/3/4 its first/middle/last part)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    block, pos, pending, records = 32768, 7, b"", []
    while pos + 7 <= len(data):
        room = block - pos % block
        if room < 7:  # a block's tail too short for a chunk header is padding
            pos += room
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        if pos + 7 + length > len(data):  # a chunk still being written
            break
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def items(groups) -> dict:
    """W&B's ``{key or nested_key path: value_json}`` items as a dict (later ones win)."""
    return {
        item.key or ".".join(item.nested_key): json.loads(item.value_json)
        for group in groups for item in group
    }


def test_wandb_offline_run_holds_config_rows_and_final_metrics(tmp_path):
    run_dir = tmp_path / "run"
    result = run_experiment(mnist_config(tmp_path, loggers=["wandb"]), run_dir, log=lambda m: None)
    (offline,) = (run_dir / "wandb").glob("offline-run-*/run-*.wandb")
    # finish() can return before W&B's service process has flushed the file (seen on a
    # loaded machine); it is complete once the run's exit record is in it
    deadline = time.monotonic() + 30
    while True:
        records = wandb_records(offline)
        kinds = [r.WhichOneof("record_type") for r in records]
        if "exit" in kinds or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    config = items([r.run.config.update for r in records if r.WhichOneof("record_type") == "run"]
                   + [r.config.update for r in records if r.WhichOneof("record_type") == "config"])
    assert config["model"]["name"] == "drae" and config["training"]["loggers"] == ["wandb"]
    (history,) = [r.history for r in records if r.WhichOneof("record_type") == "history"]
    logged = items([history.item])
    with open(run_dir / "history.csv") as handle:
        (row,) = list(csv.DictReader(handle))
    assert logged["_step"] == 1
    for key in ("train_total", "train_regulariser", "test_rec_loss", "epoch_time_s"):
        assert logged[key] == pytest.approx(float(row[key]), rel=1e-12)
    summary = items([r.summary.update for r in records if r.WhichOneof("record_type") == "summary"])
    for key in ("test_mse_per_pixel", "mean_image_baseline_rec_loss", "parameters"):
        assert summary[f"final_{key}"] == pytest.approx(result.metrics[key], rel=1e-12)
    assert "exit" in kinds and records[kinds.index("exit")].exit.exit_code == 0


def test_mlflow_file_store_holds_config_rows_and_final_metrics(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    run_dir = tmp_path / "run"
    config = mnist_config(tmp_path, loggers=["mlflow"], epochs=2)
    recorder = Recorder()
    result = run_experiment(config, run_dir, log=lambda m: None, callbacks=[recorder])
    # run_experiment's hooks: the final metrics (those of metrics.json) before teardown
    assert recorder.names()[-3:] == ["fit_end", "run_end", "teardown"]
    metrics_json = json.loads((run_dir / "metrics.json").read_text())
    assert recorder.events[-2] == ("run_end", metrics_json, None)
    client = MlflowClient((run_dir / "mlruns").resolve().as_uri())
    (run,) = client.search_runs([client.get_experiment_by_name("cb").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["model.name"] == "drae"
    assert run.data.params["training.batch_size"] == "12"
    history = client.get_metric_history(run.info.run_id, "test_rec_loss")
    with open(run_dir / "history.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted((m.step, m.value) for m in history) == [
        (int(r["epoch"]), pytest.approx(float(r["test_rec_loss"]), rel=1e-12)) for r in rows
    ]
    final = run.data.metrics["final_test_rec_loss"]
    assert final == pytest.approx(result.metrics["test_rec_loss"], rel=1e-12)


def test_mlflow_run_of_a_diverged_training_is_marked_failed(tmp_path):
    from mlflow.tracking import MlflowClient

    config = tiny_config(epochs=1)
    config.training.loggers = ["mlflow"]
    trainer = make_trainer(config, tmp_path / "run")
    plant_nan(trainer, at_step=2)
    with pytest.raises(NonFiniteLossError):
        trainer.fit()
    client = MlflowClient((tmp_path / "run" / "mlruns").resolve().as_uri())
    (run,) = client.search_runs([client.get_experiment_by_name(config.name).experiment_id])
    assert run.info.status == "FAILED"


@pytest.mark.parametrize("logger, module", [("wandb", "wandb"), ("mlflow", "mlflow")])
def test_a_missing_logger_library_is_one_line_naming_the_extra(
    logger, module, tmp_path, monkeypatch, capsys
):
    monkeypatch.setitem(sys.modules, module, None)  # `import module` raises ImportError
    config = tiny_config(epochs=1)
    config.training.loggers = [logger]
    with pytest.raises(ImportError, match=rf"pip install otae\[{logger}\]"):
        make_trainer(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()  # refused before anything was written
    code = main(["train", "mnist/drae-quick", "--run-dir", str(tmp_path / "cli"),
                 f"training.loggers=[{logger}]", "data.train_subset=48", "data.test_subset=16"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"otae: error: training.loggers lists '{logger}'")
    assert f"pip install otae[{logger}]" in err
