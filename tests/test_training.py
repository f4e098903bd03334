"""Configs, checkpoints and the trainer: round trips, strict errors, exact resume."""

from __future__ import annotations

import dataclasses
import math
import os
from importlib import resources
from pathlib import Path

import pytest
import torch
import yaml

from otae.training import (
    CheckpointError,
    ExperimentConfig,
    config_from_dict,
    config_to_dict,
    load_checkpoint,
    load_config,
    save_checkpoint,
    save_config,
    shipped_configs,
)

from .helpers import Killed, kill_in_epoch, make_trainer, tiny_config


# ---------------------------------------------------------------------- configs
def test_config_round_trip_through_yaml(tmp_path):
    config = tiny_config("drae", beta=0.25)
    save_config(config, tmp_path / "c.yaml")
    loaded = load_config(tmp_path / "c.yaml")
    assert config_to_dict(loaded) == config_to_dict(config)
    assert type(loaded.model).__name__ == type(config.model).__name__
    assert loaded.model.beta == 0.25


def test_overrides_are_typed_and_nested(tmp_path):
    save_config(tiny_config("vae"), tmp_path / "c.yaml")
    config = load_config(
        tmp_path / "c.yaml",
        ["training.epochs=7", "training.optimizer.lr=3e-4", "network.options.hidden=[8,4]"],
    )
    assert config.training.epochs == 7 and isinstance(config.training.epochs, int)
    assert config.training.optimizer.lr == pytest.approx(3e-4)
    assert config.network.options["hidden"] == [8, 4]


def test_base_inheritance_merges_recursively(tmp_path):
    save_config(tiny_config("vae"), tmp_path / "base.yaml")
    (tmp_path / "child.yaml").write_text(
        "base: base.yaml\nmodel: {gamma: 2.5}\ntraining: {epochs: 9}\n"
    )
    config = load_config(tmp_path / "child.yaml")
    assert config.model.name == "vae" and config.model.gamma == 2.5
    assert config.training.epochs == 9 and config.training.batch_size == 12


@pytest.mark.parametrize(
    "values, message",
    [
        ({"model": {"name": "vae"}, "trainig": {}}, "trainig"),
        ({"model": {"name": "vae", "betta": 0.1}}, "betta"),
        ({"model": {"name": "nosuchmodel"}}, "unknown model 'nosuchmodel'"),
        ({"model": {"name": "vae"}, "training": {"epochs": "many"}}, "training.epochs"),
        ({"model": {"name": "vae"}, "training": {"epochs": 0}}, "training.epochs"),
        ({"model": {"name": "vae"}, "training": {"optimizer": {"name": "sgdd"}}}, "sgdd"),
        ({"training": {}}, "model"),
    ],
)
def test_bad_configs_name_the_problem(values, message):
    with pytest.raises(ValueError, match=message):
        config_from_dict(values)


def _merged_yaml(path: Path) -> dict:
    """A config file's raw mapping with its ``base`` chain merged in by hand: the base's
    mapping first (a path next to the file, or a shipped config's name), then this file's
    keys over it, recursively into sections."""
    values = yaml.safe_load(path.read_text()) or {}
    base = values.pop("base", None)
    if base is None:
        return values
    base_path = path.parent / base
    if not base_path.is_file():
        base_path = SHIPPED / f"{base.removesuffix('.yaml')}.yaml"
    return _merged_over(_merged_yaml(base_path), values)


def _merged_over(base: dict, update: dict) -> dict:
    merged = dict(base)
    for key, value in update.items():
        both = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = _merged_over(merged[key], value) if both else value
    return merged


SHIPPED = Path(str(resources.files("otae") / "configs"))


def test_every_shipped_config_loads():
    """Each shipped config loads to exactly what its files say: every key of the YAML
    (its base chain merged by hand) has its value in the loaded config, and every key the
    files leave out has the default of an otherwise empty config of that model."""
    names = shipped_configs()
    assert any(n.endswith("drae-quick") for n in names)
    files = (p.relative_to(SHIPPED) for p in SHIPPED.rglob("*.yaml"))
    assert names == sorted(
        str(f.with_suffix("")) for f in files if f.parts[0] != "bench" and f.name[0] != "_"
    )
    for name in names:
        raw = _merged_yaml(SHIPPED / f"{name}.yaml")
        raw.setdefault("name", Path(name).name)
        defaults = config_to_dict(config_from_dict({"model": {"name": raw["model"]["name"]}}))
        assert config_to_dict(load_config(name)) == _merged_over(defaults, raw), name


# ---------------------------------------------------------------------- checkpoints
def test_checkpoint_round_trip_and_atomic_write(tmp_path):
    state = {"model": {"w": torch.arange(5.0)}, "epoch": 2, "history": [{"a": 1.0}]}
    path = save_checkpoint(state, tmp_path / "ck.pt")
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]  # no temp file left
    loaded = load_checkpoint(path)
    assert torch.equal(loaded["model"]["w"], state["model"]["w"]) and loaded["epoch"] == 2


def test_corrupted_checkpoint_gives_clear_error(tmp_path):
    path = save_checkpoint({"epoch": 1, "x": torch.ones(100)}, tmp_path / "ck.pt")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupted"):
        load_checkpoint(path)
    (tmp_path / "other.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="corrupted"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_checkpoint_refuses_pickled_objects(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("executed",))

    torch.save({"otae_checkpoint": 1, "evil": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "evil.pt")


# ---------------------------------------------------------------------- trainer
def test_training_decreases_the_test_loss(tmp_path):
    config = tiny_config("vae", epochs=4)
    config.training.optimizer.lr = 3e-3
    trainer = make_trainer(config, tmp_path / "run")
    before = trainer.evaluate()["test_rec_loss"]
    history = trainer.fit()
    assert len(history) == 4 and all(math.isfinite(v) for v in history[-1].values())
    assert history[-1]["test_rec_loss"] < before
    assert (tmp_path / "run" / "history.csv").read_text().count("\n") == 5
    assert (tmp_path / "run" / "checkpoints" / "last.pt").exists()
    assert (tmp_path / "run" / "checkpoints" / "best.pt").exists()


@pytest.mark.parametrize("model", ["vae", "drae", "gwae", "ssfg"])
def test_resume_after_kill_is_bit_identical(tmp_path, model):
    torch.use_deterministic_algorithms(True)
    try:
        full = make_trainer(tiny_config(model), tmp_path / "full")
        full.fit()

        killed = kill_in_epoch(make_trainer(tiny_config(model), tmp_path / "killed"), 3)
        with pytest.raises(Killed):
            killed.fit()
        resumed = make_trainer(tiny_config(model), tmp_path / "killed")
        resumed.fit(resume=True)
    finally:
        torch.use_deterministic_algorithms(False)
    assert resumed.epoch == full.epoch == 3
    full_state, resumed_state = full.model.state_dict(), resumed.model.state_dict()
    assert full_state.keys() == resumed_state.keys()
    for key in full_state:
        assert torch.equal(full_state[key], resumed_state[key]), key
    assert [r["test_total"] for r in resumed.history] == [r["test_total"] for r in full.history]


def test_resume_rejects_a_checkpoint_of_another_model(tmp_path):
    make_trainer(tiny_config("vae", epochs=1), tmp_path / "run").fit()
    other = make_trainer(tiny_config("drae", epochs=2), tmp_path / "run")
    with pytest.raises(CheckpointError, match="'vae' model"):
        other.fit(resume=True)


def test_nan_loss_stops_with_a_clear_error(tmp_path):
    trainer = make_trainer(tiny_config("vae", epochs=1), tmp_path / "run")
    with torch.no_grad():
        trainer.model.decoder.net[0].weight.fill_(float("nan"))
    from otae.training import NonFiniteLossError

    with pytest.raises(NonFiniteLossError, match="not finite"):
        trainer.fit()


def test_same_seed_same_run_different_seed_different_run(tmp_path):
    a = make_trainer(tiny_config("drae", epochs=1), tmp_path / "a")
    a.fit()
    b = make_trainer(tiny_config("drae", epochs=1), tmp_path / "b")
    b.fit()
    c_config = tiny_config("drae", epochs=1)
    c_config.training.seed = 4
    c = make_trainer(c_config, tmp_path / "c")
    c.fit()
    wa, wb, wc = (t.model.decoder.net[0].weight for t in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_dataclass_fields_have_defaults(tmp_path):
    """Every field of every section (nested ones too) has a default, so partial YAML files
    work: a file that sets two keys gets exactly the defaults everywhere else (the nested
    optimizer section merged, not replaced), and no mutable default is shared."""

    def fields_without_default(cls, prefix):
        missing = []
        for f in dataclasses.fields(cls):
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                missing.append(f"{prefix}.{f.name}")
            elif f.default_factory is not dataclasses.MISSING:
                value = f.default_factory()
                if dataclasses.is_dataclass(value):
                    missing += fields_without_default(type(value), f"{prefix}.{f.name}")
        return missing

    empty = ExperimentConfig()
    for section in ("network", "data", "training", "evaluation"):
        assert fields_without_default(type(getattr(empty, section)), section) == []
    (tmp_path / "partial.yaml").write_text(
        "model: {name: vae}\ntraining: {epochs: 2, optimizer: {lr: 0.01}}\n"
    )
    config = load_config(tmp_path / "partial.yaml")
    expected = ExperimentConfig().training
    expected.epochs, expected.optimizer.lr = 2, 0.01
    assert config.training == expected
    assert (config.network, config.data, config.evaluation, config.output_dir) == (
        empty.network, empty.data, empty.evaluation, empty.output_dir
    )
    config.training.loggers.append("wandb")
    config.network.options["hidden"] = [4]
    assert ExperimentConfig().training.loggers == [] and ExperimentConfig().network.options == {}


# ---------------------------------------------------------------------- loaders and determinism
def _timeless(history):
    return [{k: v for k, v in row.items() if "time" not in k} for row in history]


def test_dataloader_workers_give_the_same_batches_and_run(tmp_path):
    """training.num_workers=2 (a DataLoader over the same batch lists): every batch equals
    the in-process batch, and two epochs give the same history and weights, bit for bit."""
    runs = {}
    for workers in (0, 2):
        config = tiny_config("drae", epochs=2)
        config.training.num_workers = workers
        trainer = make_trainer(config, tmp_path / f"w{workers}")
        batches = trainer.epoch_batches(0)
        got = list(trainer._iterate(trainer.train_data, batches))
        assert len(got) == len(batches) == 4
        for (images, labels), indices in zip(got, batches, strict=True):
            want_images, want_labels = trainer.train_data.get_batch(indices)
            assert torch.equal(images, want_images) and torch.equal(labels, want_labels)
        history = trainer.fit()
        runs[workers] = (_timeless(history), trainer.model.state_dict())
    assert runs[2][0] == runs[0][0] and len(runs[0][0]) == 2
    assert all(torch.equal(v, runs[0][1][k]) for k, v in runs[2][1].items())


def test_deterministic_mode_sets_torch_flags_and_repeats_bit_for_bit(tmp_path, monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    previous = torch.are_deterministic_algorithms_enabled()
    assert not previous  # the default, which the flag check below relies on
    runs = []
    try:
        for i in range(2):
            config = tiny_config("drae", epochs=2)
            config.training.deterministic = True
            trainer = make_trainer(config, tmp_path / f"run{i}")
            assert torch.are_deterministic_algorithms_enabled()
            assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
            runs.append((_timeless(trainer.fit()), trainer.model.state_dict()))
    finally:
        torch.use_deterministic_algorithms(previous)
    assert runs[0][0] == runs[1][0] and len(runs[0][0]) == 2
    assert all(torch.equal(v, runs[0][1][k]) for k, v in runs[1][1].items())


def test_fit_holds_the_run_directory_against_other_processes_until_teardown(tmp_path):
    from otae.training import Callback

    from .test_io import acquirable_from_another_process

    seen = []

    class Probe(Callback):
        def on_epoch_end(self, trainer, epoch, row):
            seen.append(acquirable_from_another_process(trainer.run_dir))

    trainer = make_trainer(tiny_config("vae", epochs=1), tmp_path / "run", callbacks=[Probe()])
    trainer.fit()
    assert seen == [False]
    assert acquirable_from_another_process(tmp_path / "run")
