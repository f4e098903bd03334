"""The CLI's robustness: a full disk while checkpointing, loss settings checked when a
loss is built, help for every option, `--resume` of nothing, `--no-report` on resume,
and no citations of otae's internal notes in what a user reads."""

from __future__ import annotations

import argparse
import errno
import io
import json
import re
import shutil

import numpy as np
import pytest
import torch
import yaml

from otae import losses
from otae.cli import build_parser, main
from otae.training import CheckpointError, load_checkpoint
from otae.training.checkpoint import CheckpointWriteError, save_checkpoint

from .helpers import TINY, one_error_line

_REAL_SAVE = torch.save


class _FullDisk(io.RawIOBase):
    """A stream on a device that fills up after ``room`` bytes (writes raise ENOSPC)."""

    def __init__(self, handle, room: int) -> None:
        super().__init__()
        self.handle, self.room = handle, room

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return self.handle.write(data)


def _enospc(obj, f, *args, **kwargs):
    """torch.save into a file whose write fails with ENOSPC (an OSError)."""
    f.write(b"PK\x03\x04 a partial zip header")
    raise OSError(errno.ENOSPC, "No space left on device")


def _torch_stream_error(obj, f, *args, **kwargs):
    """The real torch.save on a stream that fills up: torch's own RuntimeError."""
    _REAL_SAVE(obj, _FullDisk(f, room=1024), *args, **kwargs)


def _torch_message_only(obj, f, *args, **kwargs):
    """torch's error when its C++ writer fails, with no OSError behind it."""
    raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")


FAILURES = {"enospc": _enospc, "torch-stream": _torch_stream_error,
            "torch-message": _torch_message_only}  # fmt: skip


# ---------------------------------------------------------------------- full disk
@pytest.mark.parametrize("failure", FAILURES)
def test_save_checkpoint_on_a_full_disk_keeps_the_previous_file(failure, tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint({"epoch": 1, "w": torch.ones(1000)}, path)
    before = path.read_bytes()
    monkeypatch.setattr(torch, "save", FAILURES[failure])
    with pytest.raises(CheckpointWriteError) as caught:
        save_checkpoint({"epoch": 2, "w": torch.zeros(250_000)}, path)
    err = caught.value
    assert isinstance(err, CheckpointError)  # a user error for the CLI
    message = str(err)
    assert "\n" not in message and f"could not write checkpoint {path}" in message
    assert err.needed is not None and err.needed >= 1_000_000  # 250k float32
    assert err.free is not None and err.path == path
    assert re.search(r"needs ~1\.0 MB, [\d.]+ MB free", message), message
    if failure != "torch-message":  # an OSError tells what happened
        assert "no space left on device" in message
    assert "previous checkpoint there is intact" in message
    assert path.read_bytes() == before
    assert load_checkpoint(path)["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temporaries


def test_a_quota_and_a_first_write_are_named(tmp_path, monkeypatch):
    def quota(obj, f, *args, **kwargs):
        raise OSError(errno.EDQUOT, "Disk quota exceeded")

    monkeypatch.setattr(torch, "save", quota)
    path = tmp_path / "sub" / "best.pt"
    with pytest.raises(CheckpointWriteError, match="disk quota exceeded") as caught:
        save_checkpoint({"epoch": 1}, path)
    assert "nothing was written" in str(caught.value)
    assert not path.exists() and list(path.parent.iterdir()) == []


def test_other_errors_while_saving_are_not_disguised_as_a_full_disk(tmp_path, monkeypatch):
    def bug(obj, f, *args, **kwargs):
        raise RuntimeError("some bug in otae")

    monkeypatch.setattr(torch, "save", bug)
    with pytest.raises(RuntimeError, match="some bug") as caught:
        save_checkpoint({"epoch": 1}, tmp_path / "last.pt")
    assert not isinstance(caught.value, CheckpointError)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("failure", FAILURES)
def test_a_full_disk_while_training_is_one_line_and_keeps_the_last_checkpoint(
    failure, vae_run, tmp_path, monkeypatch, capsys
):
    run = tmp_path / "run"
    shutil.copytree(vae_run, run)
    checkpoints = run / "checkpoints"
    kept = {p.name: p.read_bytes() for p in checkpoints.iterdir()}
    metrics = (run / "metrics.json").read_bytes()
    capsys.readouterr()
    monkeypatch.setattr(torch, "save", FAILURES[failure])
    assert main(["train", str(run), "training.epochs=2"]) == 2
    line = one_error_line(capsys, "could not write checkpoint", str(checkpoints), "MB free")
    if failure != "torch-message":
        assert "no space left on device" in line
    assert "internal error" not in line
    # nothing is lost: the epoch-1 checkpoints and metrics are as they were, no temporaries
    assert {p.name: p.read_bytes() for p in checkpoints.iterdir()} == kept
    assert (run / "metrics.json").read_bytes() == metrics
    assert load_checkpoint(checkpoints / "last.pt")["epoch"] == 1
    # with room again, the run continues from there
    monkeypatch.setattr(torch, "save", _REAL_SAVE)
    assert main(["train", str(run), "training.epochs=2"]) == 0
    assert load_checkpoint(checkpoints / "last.pt")["epoch"] == 2
    assert json.loads((run / "metrics.json").read_text())["epochs"] == 2


# ---------------------------------------------------------------------- loss settings
INVALID_LOSSES = [
    (losses.SlicedWassersteinLoss, {"n_projections": 0}, "n_projections must be an integer >= 1"),
    (losses.SlicedWassersteinLoss, {"n_projections": 2.5}, "n_projections must be an integer"),
    (losses.SlicedWassersteinLoss, {"seed": "0"}, "seed must be None or an integer"),
    (losses.SlicedWassersteinLoss, {"seed": 1.5}, "seed must be None or an integer"),
    (losses.SlicedFGWLoss, {"beta": -1.0}, "beta must lie in [0, 1], got -1.0"),
    (losses.SlicedFGWLoss, {"beta": 1.5}, "beta must lie in [0, 1]"),
    (losses.SlicedFGWLoss, {"beta": float("nan")}, "beta must lie in [0, 1]"),
    (losses.SlicedFGWLoss, {"beta": "0.1"}, "beta must be a number"),
    (losses.SlicedFGWLoss, {"n_projections": -3}, "n_projections must be an integer >= 1"),
    (losses.SlicedFGWLoss, {"n_projections": True}, "n_projections must be an integer >= 1"),
    (losses.SlicedFGWLoss, {"scale": "sum"}, "scale must be one of 'mean', 'rae_authors'"),
    (losses.SlicedFGWLoss, {"seed": True}, "seed must be None or an integer"),
    (losses.SphericalSlicedFGWLoss, {"dim": 1}, "dim must be an integer >= 2"),
    (losses.SphericalSlicedFGWLoss, {"dim": "8"}, "dim must be an integer >= 2"),
    (losses.SphericalSlicedFGWLoss, {"dim": 8, "beta": 2.0}, "beta must lie in [0, 1]"),
    (losses.SphericalSlicedFGWLoss, {"dim": 8, "kappa": -1.0}, "kappa must be a finite number >= 0"),
    (losses.SphericalSlicedFGWLoss, {"dim": 8, "kappa": float("inf")}, "kappa must be a finite"),
    (losses.SphericalSlicedFGWLoss, {"dim": 8, "n_projections": 0}, "n_projections must be an"),
    (losses.SphericalSlicedFGWLoss, {"dim": 8, "n_iters": -1}, "n_iters must be an integer >= 0"),
    (losses.SphericalSlicedFGWLoss, {"dim": 8, "lr": 0.0}, "lr must be a finite number > 0"),
    (losses.SphericalSlicedFGWLoss, {"dim": 8, "n_locations": 0}, "n_locations must be an"),
    (losses.SphericalSlicedFGWLoss, {"dim": 8, "distribution": "gauss"},
     "distribution must be one of 'vmf', 'power'"),
    (losses.SphericalSlicedFGWLoss, {"dim": 8, "warm_start": "yes"}, "warm_start must be True"),
    (losses.SphericalSlicedFGWLoss, {"dim": 8, "diagnostics": 1}, "diagnostics must be True"),
    (losses.SphericalSlicedFGWLoss, {"dim": 8, "seed": -(2**64)}, "seed must be None or an"),
    (losses.MaxSlicedFGWLoss, {"dim": 0}, "dim must be an integer >= 2"),
    (losses.MaxSlicedFGWLoss, {"dim": 8, "beta": -0.1}, "beta must lie in [0, 1]"),
    (losses.MaxSlicedFGWLoss, {"dim": 8, "n_iters": 1.0}, "n_iters must be an integer >= 0"),
    (losses.MaxSlicedFGWLoss, {"dim": 8, "lr": -1.0}, "lr must be a finite number > 0"),
    (losses.MaxSlicedFGWLoss, {"dim": 8, "n_starts": 0}, "n_starts must be an integer >= 1"),
    (losses.MaxSlicedFGWLoss, {"dim": 8, "warm_start": None}, "warm_start must be True"),
    (losses.HierarchicalFGWLoss, {"beta": 1.01}, "beta must lie in [0, 1]"),
    (losses.HierarchicalFGWLoss, {"n_outer": -1}, "n_outer must be an integer >= 0"),
    (losses.HierarchicalFGWLoss, {"n_inner": 0}, "n_inner must be an integer >= 1"),
    (losses.HierarchicalFGWLoss, {"tau": "centered"},
     "tau must be one of 'centred', 'auto' or a finite number > 0"),
    (losses.HierarchicalFGWLoss, {"tau": 0.0}, "tau must be one of 'centred', 'auto' or a"),
    (losses.HierarchicalFGWLoss, {"tau": None}, "tau must be one of 'centred', 'auto' or a"),
    (losses.HierarchicalFGWLoss, {"diagnostics": "no"}, "diagnostics must be True or False"),
    (losses.SinkhornLoss, {"epsilon": 0.0}, "epsilon must be a finite number > 0"),
    (losses.SinkhornLoss, {"epsilon": -0.1}, "epsilon must be a finite number > 0"),
    (losses.SinkhornLoss, {"n_iters": 0}, "n_iters must be an integer >= 1"),
    (losses.SinkhornLoss, {"p": 3}, "p must be one of 1, 2"),
    (losses.SinkhornLoss, {"p": True}, "p must be one of 1, 2"),
    (losses.SinkhornLoss, {"divergence": "yes"}, "divergence must be True or False"),
    (losses.SinkhornLoss, {"gradient": "autograd"}, "gradient must be one of 'unrolled'"),
    (losses.SinkhornLoss, {"epsilon_start": -1.0}, "epsilon_start must be a finite number > 0"),
    (losses.SinkhornLoss, {"scaling": 1.0}, "scaling must lie in (0, 1)"),
    (losses.SinkhornLoss, {"scaling": 0.0}, "scaling must be a finite number > 0"),
    (losses.SinkhornLoss, {"diameter": 0.0}, "diameter must be a finite number > 0"),
    (losses.SinkhornLoss, {"diagnostics": None}, "diagnostics must be True or False"),
    (losses.SinkhornLoss, {"divergence": True, "diagnostics": True}, "needs divergence=False"),
    (losses.SinkhornLoss, {"epsilon": 0.01, "epsilon_start": 10.0, "n_iters": 3},
     "n_iters=3 leaves no iteration at epsilon=0.01"),
    (losses.MMDLoss, {"kernel": "rbf"}, "kernel must be one of 'imq', 'gaussian'"),
    (losses.MMDLoss, {"scale": 0.0}, "scale must be a finite number > 0"),
    (losses.MMDLoss, {"scale": "1"}, "scale must be a number"),
    (losses.MMDLoss, {"scales": ()}, "scales must be a non-empty sequence"),
    (losses.MMDLoss, {"scales": 1.0}, "scales must be a non-empty sequence"),
    (losses.MMDLoss, {"scales": (1.0, -2.0)}, "scales[1] must be a finite number > 0"),
]


@pytest.mark.parametrize(
    "cls, kwargs, needle",
    INVALID_LOSSES,
    ids=[f"{c.__name__}-{'-'.join(map(str, k))}-{i}" for i, (c, k, _) in enumerate(INVALID_LOSSES)],
)
def test_every_loss_setting_is_checked_at_construction(cls, kwargs, needle):
    with pytest.raises(ValueError) as caught:
        cls(**kwargs)
    message = str(caught.value)
    assert needle in message and "\n" not in message
    assert list(kwargs)[-1] in message  # the argument is named


def test_every_loss_class_is_covered_by_the_construction_checks():
    covered = {cls for cls, _, _ in INVALID_LOSSES}
    assert covered == {getattr(losses, name) for name in losses.__all__}


@pytest.mark.parametrize(
    "cls, kwargs",
    [
        (losses.SlicedWassersteinLoss, {"n_projections": np.int64(5), "seed": 0}),
        (losses.SlicedFGWLoss, {"beta": 0, "scale": "rae_authors"}),
        (losses.SlicedFGWLoss, {"beta": 1.0, "seed": 2**63}),
        (losses.SphericalSlicedFGWLoss, {"dim": 2, "kappa": 0, "n_iters": 0,
                                         "distribution": "power"}),
        (losses.MaxSlicedFGWLoss, {"dim": 3, "n_starts": 1, "warm_start": False}),
        (losses.HierarchicalFGWLoss, {"tau": "auto", "n_outer": 0}),
        (losses.HierarchicalFGWLoss, {"tau": 0.5}),
        (losses.SinkhornLoss, {"epsilon": 1, "p": 1, "epsilon_start": 2.0, "n_iters": 5}),
        (losses.SinkhornLoss, {"divergence": True, "diameter": 4.0}),
        (losses.MMDLoss, {"kernel": "gaussian", "scale": 2, "scales": [0.5, 1]}),
    ],
)
def test_valid_loss_settings_still_build_and_run(cls, kwargs):
    loss = cls(**kwargs)
    x, y = torch.randn(16, kwargs.get("dim", 3)), torch.randn(16, kwargs.get("dim", 3))
    if cls is losses.HierarchicalFGWLoss:
        value = loss(x, torch.ones_like(x), y[:5], torch.ones_like(y[:5]))
    else:
        value = loss(x, y)
    assert torch.isfinite(value)


# ---------------------------------------------------------------------- help
def _subparsers(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield from action.choices.items()


def test_every_argument_of_every_command_has_help():
    parser = build_parser()
    missing = [
        f"otae {action.dest}" for action in parser._actions
        if action.help != argparse.SUPPRESS and not (action.help or "").strip()
    ]  # fmt: skip
    commands = dict(_subparsers(parser))
    assert {"train", "eval", "sample", "bench", "multiview", "list", "fid", "fid-weights"} <= set(
        commands
    )
    for name, sub in commands.items():
        for action in sub._actions:
            if action.help == argparse.SUPPRESS:
                continue
            if not (action.help or "").strip():
                missing.append(f"otae {name} {'/'.join(action.option_strings) or action.dest}")
    assert not missing, f"arguments without help: {missing}"


@pytest.mark.parametrize("command", ["eval", "sample"])
def test_checkpoint_help_says_which_is_the_default(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    options = re.split(r"options:|optional arguments:", text)[-1]
    found = re.search(r"--checkpoint \{last,best\}(.*?)(?= --[a-z]|$)", options)
    assert found, text
    help_text = found.group(1)
    for needle in ("last.pt", "best.pt", "default:", "training.early_stopping", "else last"):
        assert needle in help_text, (needle, help_text)


# ---------------------------------------------------------------------- --resume of nothing
def test_resume_of_a_missing_run_directory_names_the_directory(tmp_path, capsys):
    missing = tmp_path / "no-such-run"
    assert main(["train", str(missing), "--resume"]) == 2
    line = one_error_line(capsys, f"--resume: no run directory at {missing}")
    assert "not found" not in line
    assert not missing.exists()


def test_resume_into_a_missing_run_dir_names_it(tmp_path, capsys):
    missing = tmp_path / "gone"
    args = ["train", "mnist/vae-quick", "--resume", "--run-dir", str(missing), *TINY]
    assert main(args) == 2
    one_error_line(capsys, f"--resume: no run directory at {missing}")
    assert not missing.exists()


def test_resume_of_a_folder_without_a_run_says_so(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("mine")
    assert main(["train", str(empty), "--resume"]) == 2
    one_error_line(capsys, f"--resume: {empty} is a folder without config.yaml", "holds no otae run")
    args = ["train", "mnist/vae-quick", "--resume", "--run-dir", str(empty), *TINY]
    assert main(args) == 2
    one_error_line(capsys, f"--resume: {empty} exists but holds no otae run")
    assert sorted(p.name for p in empty.iterdir()) == ["notes.txt"]


def test_a_config_name_with_resume_still_resumes_its_run(vae_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(vae_run, run)
    args = ["train", "mnist/vae-quick", "--resume", "--run-dir", str(run), *TINY,
            "training.epochs=2"]  # fmt: skip
    assert main(args) == 0
    assert load_checkpoint(run / "checkpoints" / "last.pt")["epoch"] == 2


# ---------------------------------------------------------------------- --no-report on resume
REPORTING = [o for o in TINY if not o.startswith("evaluation.report")] + [
    "evaluation.latent_points=32",
    "evaluation.clustering=false",
]


def test_no_report_is_kept_on_resume_and_eval_still_writes_one(tmp_path, capsys):
    run = tmp_path / "run"
    report = run / "report.html"
    args = ["train", "mnist/vae-quick", "training.epochs=1", *REPORTING, "--run-dir", str(run)]
    assert main([*args, "--no-report"]) == 0
    assert not report.exists()
    # the choice is the run's: a plain resume keeps it ...
    assert main(["train", str(run), "training.epochs=2"]) == 0
    assert not report.exists() and not (run / "figures").exists()
    assert yaml.safe_load((run / "config.yaml").read_text())["evaluation"]["report"] is False
    # ... `otae eval` asks for the report explicitly ...
    assert main(["eval", str(run)]) == 0
    assert report.is_file()
    written = report.read_bytes()
    capsys.readouterr()
    # ... --no-report on the resume command line is honoured (the old report is kept, and
    # said to be old) ...
    assert main(["train", str(run), "training.epochs=3", "--no-report"]) == 0
    assert report.read_bytes() == written
    assert "report.html is from an earlier evaluation" in capsys.readouterr().err
    # ... and evaluation.report=true turns it back on
    assert main(["train", str(run), "training.epochs=4", "evaluation.report=true"]) == 0
    assert report.read_bytes() != written
    assert "report: " in capsys.readouterr().out


def test_a_resume_with_no_report_skips_the_report_of_a_reporting_run(tmp_path):
    run = tmp_path / "run"
    args = ["train", "mnist/vae-quick", "training.epochs=1", *REPORTING, "--run-dir", str(run)]
    assert main(args) == 0
    written = (run / "report.html").read_bytes()
    assert main(["train", str(run), "training.epochs=2", "--no-report"]) == 0
    assert (run / "report.html").read_bytes() == written
    # and the next plain resume keeps the latest choice
    assert main(["train", str(run), "training.epochs=3"]) == 0
    assert (run / "report.html").read_bytes() == written


# ---------------------------------------------------------------------- internal references
INTERNAL = re.compile(r"spec §|METHODS\.md|\bissue #?\d+|shared/spec")


def test_otae_list_and_help_cite_no_internal_notes(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert not INTERNAL.search(out), INTERNAL.findall(out)
    assert "RAE paper §6.1" in out  # the paper's conv nets, cited by the paper's section
    texts = [build_parser().format_help()]
    texts += [sub.format_help() for _, sub in _subparsers(build_parser())]
    for text in texts:
        assert not INTERNAL.search(text), INTERNAL.findall(text)
