"""training.early_stopping: the validation split, the stopping epoch against the recorded
history, best.pt, exact resume, the final metrics, and one-line errors for bad settings."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from otae.bench import load_bench
from otae.cli import main
from otae.training import (
    Callback,
    EarlyStopping,
    Trainer,
    load_checkpoint,
    load_config,
    save_config,
    validation_split,
)
from otae.training.seeding import EpochSampler

from .helpers import (
    TINY,
    TINY_SET,
    Killed,
    brute_force_stop,
    history_rows,
    kill_in_epoch,
    make_trainer,
    one_error_line,
    same_weights,
    tiny_config,
    tiny_data,
    torchrun,
)


def es_config(model="vae", epochs=12, **early_stopping):
    """test_training's tiny config with early stopping on, at a learning rate high enough
    for the validation curve to turn within a few epochs."""
    config = tiny_config(model, epochs=epochs)
    config.training.optimizer.lr = 3e-2
    es = config.training.early_stopping
    es.enabled = True
    for key, value in {"patience": 2, **early_stopping}.items():
        setattr(es, key, value)
    config.validate()
    return config


class KeepWeights(Callback):
    """A copy of the model's weights at the end of every epoch."""

    def __init__(self):
        self.by_epoch = {}

    def on_epoch_end(self, trainer, epoch, row):
        self.by_epoch[epoch] = copy.deepcopy(trainer.model.state_dict())


def train(config, run_dir, callbacks=()):
    trainer = make_trainer(config, run_dir, callbacks=list(callbacks))
    trainer.fit()
    return trainer


# ---------------------------------------------------------------------- stopping
@pytest.mark.parametrize(
    "monitor, mode, patience",
    [("val_total", "min", 2), ("val_rec_loss", "max", 3)],
)
def test_the_run_stops_where_the_recorded_validation_values_say(tmp_path, monitor, mode, patience):
    """The epoch the run stops at, its best epoch and value, and best.pt's weights, all
    checked against the per-epoch validation values in the history."""
    keep = KeepWeights()
    config = es_config(epochs=15, monitor=monitor, mode=mode, patience=patience)
    trainer = train(config, tmp_path / "run", [keep])
    values = [row[monitor] for row in trainer.history]
    best_epoch, stop = brute_force_stop(values, patience, mode)
    assert stop is not None and stop < 15  # the test needs a run that does stop early
    assert [row["epoch"] for row in trainer.history] == list(range(1, stop + 1))
    es = trainer.early_stopping
    assert (es.stopped_epoch, es.best_epoch, es.best_value) == (stop, best_epoch,
                                                                values[best_epoch - 1])
    assert es.bad_epochs == patience
    # best.pt: the best epoch's weights; last.pt: the stopping epoch's, state included
    best = load_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt")
    last = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert best["epoch"] == best_epoch and last["epoch"] == stop
    assert same_weights(best["model"], keep.by_epoch[best_epoch])
    assert same_weights(last["model"], keep.by_epoch[stop])
    assert last["early_stopping"] == es.state_dict()
    assert best["early_stopping"]["best_epoch"] == best_epoch
    # every row has the validation metrics next to the test ones
    assert {"val_total", "val_reconstruction", "val_regulariser", "val_rec_loss",
            "val_mse_per_pixel"} <= set(trainer.history[0])


def test_min_delta_and_patience_on_a_given_sequence():
    """Improvements of min_delta or less do not count; NaN never improves."""
    es = EarlyStopping("val_total", patience=3, mode="min", min_delta=0.5)
    # 10 (the first), 9 (below 10 - 0.5), then 8.6, NaN, 8.55: none below 9 - 0.5
    values = [10.0, 9.0, 8.6, float("nan"), 8.55]
    improved = [es.update(e, {"val_total": v}) for e, v in enumerate(values, start=1)]
    assert improved == [True, True, False, False, False]
    assert es.stopped_epoch == 5 and es.best_epoch == 2 and es.best_value == 9.0
    high = EarlyStopping("val_rec_loss", patience=1, mode="max")
    assert high.update(1, {"val_rec_loss": 1.0}) and high.update(2, {"val_rec_loss": 2.0})
    assert not high.update(3, {"val_rec_loss": 2.0}) and high.stopped_epoch == 3


# ---------------------------------------------------------------------- resume
# (max on a falling loss: a sure stop, after the first epoch)
@pytest.mark.parametrize("model, monitor, mode",
                         [("vae", "val_total", "min"), ("drae", "val_rec_loss", "max")])
def test_a_resumed_run_stops_at_the_same_epoch_with_the_same_weights(tmp_path, model, monitor,
                                                                     mode):
    """Killed in the stopping epoch (last.pt then holds epochs without improvement) and
    resumed, a run stops at the same epoch as the uninterrupted run, bit for bit."""
    settings = {"epochs": 15, "patience": 3, "monitor": monitor, "mode": mode}
    torch.use_deterministic_algorithms(True)
    try:
        full = train(es_config(model, **settings), tmp_path / "full")
        stop = full.early_stopping.stopped_epoch
        assert stop is not None and stop < 15
        killed = kill_in_epoch(make_trainer(es_config(model, **settings), tmp_path / "killed"),
                               stop)  # fmt: skip
        with pytest.raises(Killed):
            killed.fit()
        on_disk = load_checkpoint(tmp_path / "killed" / "checkpoints" / "last.pt")
        assert on_disk["epoch"] == stop - 1 and on_disk["early_stopping"]["bad_epochs"] >= 1
        resumed = make_trainer(es_config(model, **settings), tmp_path / "killed")
        resumed.fit(resume=True)
    finally:
        torch.use_deterministic_algorithms(False)
    assert resumed.epoch == full.epoch == stop
    assert resumed.early_stopping.state_dict() == full.early_stopping.state_dict()
    assert same_weights(resumed.model.state_dict(), full.model.state_dict())
    assert [r["val_total"] for r in resumed.history] == [r["val_total"] for r in full.history]
    for name in ("best.pt", "last.pt"):
        a = load_checkpoint(tmp_path / "full" / "checkpoints" / name)
        b = load_checkpoint(tmp_path / "killed" / "checkpoints" / name)
        assert a["epoch"] == b["epoch"] and same_weights(a["model"], b["model"]), name
    # resuming the stopped run (even with a larger epoch bound) trains nothing more
    longer = es_config(model, **{**settings, "epochs": 20})
    again = make_trainer(longer, tmp_path / "killed")
    again.fit(resume=True)
    assert again.epoch == stop and len(again.history) == stop


def test_checkpoint_every_still_checkpoints_the_stopping_epoch(tmp_path):
    config = es_config(epochs=15, mode="max", monitor="val_rec_loss")
    config.training.checkpoint_every = 100
    trainer = train(config, tmp_path / "run")
    stop = trainer.early_stopping.stopped_epoch
    assert stop is not None
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["epoch"] == stop


def test_resume_refuses_a_change_of_early_stopping(tmp_path):
    train(es_config(epochs=1), tmp_path / "run")
    changed = es_config(epochs=2, patience=5)
    with pytest.raises(ValueError, match=r"training\.early_stopping\.patience \(2 -> 5\)"):
        make_trainer(changed, tmp_path / "run").fit(resume=True)


# ---------------------------------------------------------------------- the split
def test_the_validation_split_is_disjoint_seeded_and_independent_of_the_training_seed(tmp_path):
    train_rows, val_rows = validation_split(48, 0.1, seed=7)
    assert len(val_rows) == 5 and len(train_rows) == 43
    assert set(train_rows.tolist()).isdisjoint(val_rows.tolist())
    assert sorted(train_rows.tolist() + val_rows.tolist()) == list(range(48))
    again = validation_split(48, 0.1, seed=7)
    assert torch.equal(again[0], train_rows) and torch.equal(again[1], val_rows)
    assert not torch.equal(validation_split(48, 0.1, seed=8)[1], val_rows)
    # the trainer's split: the same rows for two training seeds, none of them trained on
    data = tiny_data()
    trainers = []
    for seed in (3, 4):
        config = es_config(validation_seed=7)
        config.training.seed = seed
        trainers.append(make_trainer(config, tmp_path / f"seed{seed}"))
    for trainer in trainers:
        assert torch.equal(trainer.val_data.images, data.images[val_rows])
        assert torch.equal(trainer.train_data.images, data.images[train_rows])
        assert torch.equal(trainer.val_data.labels, data.labels[val_rows])
    # every batch of an epoch comes from the training rows only
    rows = torch.cat(trainers[0].epoch_batches(1))
    assert sorted(rows.tolist()) == list(range(43))
    # under torchrun each rank computes the same split (no rank in it) and its sampler
    # shares out the training rows alone: the ranks together cover them all
    shares = [list(EpochSampler(43, 2, rank, seed=3)) for rank in (0, 1)]
    assert set(shares[0]) | set(shares[1]) == set(range(43))


def test_a_split_of_a_dataset_read_item_by_item(tmp_path):
    """Datasets read from disk are split by index (Rows): items, batches and labels are
    the base's rows; in-memory ones are copied (TensorImageDataset.subset)."""
    from otae.data import FirstN

    data = tiny_data()
    on_disk_like = FirstN(data, 40)  # an ImageDataset read item by item
    rows = on_disk_like.subset([3, 1, 7])
    assert type(rows).__name__ == "Rows" and len(rows) == 3
    assert torch.equal(rows[1][0], data[1][0]) and torch.equal(rows[-1][0], data[7][0])
    images, labels = rows.get_batch(torch.tensor([2, 0]))
    assert torch.equal(images, data.get_batch(torch.tensor([7, 3]))[0])
    assert labels.tolist() == data.labels[[7, 3]].tolist() == rows.labels[[2, 0]].tolist()
    with pytest.raises(IndexError):
        on_disk_like.subset([40])
    with pytest.raises(IndexError):
        rows.get_batch(torch.tensor([3]))
    assert type(data.subset([0, 2])).__name__ == "TensorImageDataset"


def test_disabled_by_default_changes_nothing(tmp_path):
    config = tiny_config("vae", epochs=1)
    assert not config.training.early_stopping.enabled
    trainer = train(config, tmp_path / "run")
    assert trainer.val_data is None and trainer.early_stopping is None
    assert len(trainer.train_data) == 48
    assert not any(k.startswith("val_") for k in trainer.history[0])
    assert "early_stopping" not in load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")


def test_early_stopping_is_set_by_the_config_not_passed_as_a_callback(tmp_path):
    with pytest.raises(ValueError, match="training.early_stopping.enabled"):
        Trainer.from_config(tiny_config("vae", epochs=1), tmp_path / "run", train_data=tiny_data(),
                test_data=tiny_data(16, seed=1), callbacks=[EarlyStopping()])


# ---------------------------------------------------------------------- CLI, YAML, bench
ES = ["training.early_stopping.enabled=true", "training.early_stopping.patience=2",
      "training.early_stopping.mode=max", "training.early_stopping.monitor=val_rec_loss",
      "training.epochs=8"]


def test_otae_train_evaluates_the_best_checkpoint_and_records_the_stop(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "mnist/vae-quick", *TINY, *ES, "--run-dir", str(run)]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    history = load_checkpoint(run / "checkpoints" / "last.pt")["history"]
    best_epoch, stop = brute_force_stop([r["val_rec_loss"] for r in history], 2, "max")
    assert stop is not None and metrics["epochs"] == stop == len(history)
    assert metrics["early_stopping_stopped_epoch"] == stop
    assert metrics["early_stopping_best_epoch"] == best_epoch == metrics["checkpoint_epoch"]
    assert metrics["early_stopping_best_value"] == history[best_epoch - 1]["val_rec_loss"]
    assert metrics["early_stopping_monitor"] == "val_rec_loss"
    assert metrics["checkpoint"] == "best" and metrics["validation_images"] == 6
    # the final test metrics are the best epoch's model, not the last epoch's
    assert metrics["test_rec_loss"] == pytest.approx(history[best_epoch - 1]["test_rec_loss"],
                                                     rel=1e-5)
    assert metrics["last_test_rec_loss"] == history[-1]["test_rec_loss"]
    assert "early stopping: val_rec_loss has not improved for 2 epochs" in capsys.readouterr().err
    # `otae eval` defaults to the same checkpoint and writes the same record
    assert main(["eval", str(run), "--no-report"]) == 0
    again = json.loads((run / "metrics.json").read_text())
    for key in ("epochs", "checkpoint", "checkpoint_epoch", "early_stopping_stopped_epoch",
                "early_stopping_best_epoch", "early_stopping_best_value", "validation_images"):
        assert again[key] == metrics[key], key
    for key in ("test_rec_loss", "mean_image_baseline_rec_loss"):
        assert again[key] == pytest.approx(metrics[key], rel=1e-6), key
    assert main(["eval", str(run), "--no-report", "--checkpoint", "last"]) == 0
    last = json.loads((run / "metrics.json").read_text())
    assert last["checkpoint"] == "last"
    assert last["test_rec_loss"] == pytest.approx(history[-1]["test_rec_loss"], rel=1e-5)


def test_yaml_and_bench_sets_reach_the_settings(tmp_path):
    config_file = tmp_path / "c.yaml"
    config_file.write_text(
        "base: mnist/vae-quick\n"
        "training: {early_stopping: {enabled: true, patience: 5, validation_fraction: 0.2}}\n"
    )
    config = load_config(config_file, ["training.early_stopping.min_delta=0.01"])
    es = config.training.early_stopping
    assert (es.enabled, es.patience, es.validation_fraction, es.min_delta) == (True, 5, 0.2, 0.01)
    save_config(config, tmp_path / "saved.yaml")  # the resolved config keeps the block
    assert load_config(tmp_path / "saved.yaml").training.early_stopping == es
    bench_file = tmp_path / "bench.yaml"
    bench_file.write_text(
        "name: es\n"
        "overrides: [training.early_stopping.enabled=true, training.early_stopping.patience=4]\n"
        "runs:\n"
        "  - {name: VAE, config: mnist/vae-quick,"
        " overrides: [training.early_stopping.monitor=val_rec_loss]}\n"
    )
    bench = load_bench(bench_file)
    run = bench.runs[0]
    es = load_config(run.config, [*bench.overrides, *run.overrides]).training.early_stopping
    assert (es.enabled, es.patience, es.monitor) == (True, 4, "val_rec_loss")


def test_a_bench_set_counts_an_early_stopped_run_as_finished(tmp_path):
    """A run stopped early is complete (no † in the table) and not trained again."""
    import csv

    from otae.bench import run_bench

    bench_file = tmp_path / "es.yaml"
    bench_file.write_text(
        TINY_SET.replace(
            "training.epochs=2,",
            "training.epochs=6, training.early_stopping.enabled=true,"
            " training.early_stopping.patience=1, training.early_stopping.mode=max,"
            " training.early_stopping.monitor=val_rec_loss,",
        ).replace("  - {name: RAE (D), config: mnist/drae-quick}\n", "")
    )
    bench = load_bench(bench_file)
    out, results = tmp_path / "out", tmp_path / "results"
    run_bench(bench, out, log=lambda m: None, results_dir=results)
    rows = list(csv.DictReader((results / "runs.csv").open()))
    assert [(r["run"], r["epochs"], r["early_stopping_stopped_epoch"]) for r in rows] == [
        ("VAE", "2", "2")
    ]
    table = (results / "table.md").read_text()
    assert "| VAE | P | 1 | 2/6 |" in table and "VAE †" not in table
    last = out / "vae" / "seed0" / "checkpoints" / "last.pt"
    written = last.stat().st_mtime_ns
    run_bench(bench, out, log=lambda m: None, results_dir=results)
    assert last.stat().st_mtime_ns == written  # finished: not resumed, not retrained
    assert list(csv.DictReader((results / "runs.csv").open())) == rows


@pytest.mark.parametrize(
    "override, needle",
    [
        ("training.early_stopping.patience=0", "training.early_stopping.patience must be >= 1"),
        ("training.early_stopping.validation_fraction=1.0",
         "training.early_stopping.validation_fraction must lie strictly between 0 and 1"),
        ("training.early_stopping.validation_fraction=0",
         "training.early_stopping.validation_fraction must lie strictly between 0 and 1"),
        ("training.early_stopping.monitor=test_total",
         "training.early_stopping.monitor='test_total' is not a validation metric; "
         "available: val_total, val_reconstruction"),
        ("training.early_stopping.mode=lowest", "training.early_stopping.mode must be"),
        ("training.early_stopping.min_delta=-1", "training.early_stopping.min_delta must be"),
        ("training.early_stopping.patients=3", "unknown config key(s) ['patients']"),
    ],
)
def test_bad_settings_are_one_error_line(override, needle, tmp_path, capsys):
    args = ["train", "mnist/vae-quick", override, "--run-dir", str(tmp_path / "run")]
    assert main(args) == 2
    one_error_line(capsys, needle)


def test_a_monitor_the_model_does_not_produce_is_named_after_the_first_epoch(tmp_path, capsys):
    args = ["train", "mnist/vae-quick", *TINY, "training.early_stopping.enabled=true",
            "training.early_stopping.monitor=val_w_bound", "--run-dir", str(tmp_path / "run")]
    assert main(args) == 2
    line = one_error_line(capsys, "training.early_stopping.monitor='val_w_bound' is not a "
                          "validation metric of this model; available: val_total")
    assert "val_rec_loss" in line
    assert not (tmp_path / "run" / "checkpoints" / "last.pt").exists()


# ---------------------------------------------------------------------- torchrun
@pytest.mark.slow
def test_two_processes_hold_out_the_same_rows_and_stop_with_one_process(tmp_path):
    """Under torchrun (2 gloo processes) the run trains on the same rows, is validated on
    the same split and stops at the same epoch as one process, every rank with it."""
    config = tmp_path / "tiny.yaml"
    config.write_text(
        "base: mnist/drae-quick\n"
        "network: {options: {channels: [4, 8], hidden: 16}}\n"
        "data: {train_subset: 220, test_subset: 50}\n"
        "training: {batch_size: 50, epochs: 6, progress: false, tensorboard: false,"
        " device: cpu, early_stopping: {enabled: true, patience: 2, mode: max,"
        " monitor: val_rec_loss}}\n"
        "evaluation: {report: false, timing_steps: 0, clustering: false}\n"
    )
    two, one = tmp_path / "two", tmp_path / "one"
    torchrun(["-m", "otae", "train", str(config), "--run-dir", str(two)], tmp_path)
    assert main(["train", str(config), "--run-dir", str(one)]) == 0
    rows_two, rows_one = history_rows(two), history_rows(one)
    assert len(rows_two) == len(rows_one) == 3  # best epoch 1, then 2 without improvement
    for row_two, row_one in zip(rows_two, rows_one, strict=True):
        for key in ("train_total", "val_rec_loss", "val_total", "test_rec_loss"):
            assert row_two[key] == pytest.approx(row_one[key], rel=1e-4), key
    metrics = json.loads((two / "metrics.json").read_text())
    assert metrics["processes"] == 2 and metrics["early_stopping_stopped_epoch"] == 3
    assert metrics["validation_images"] == 22
