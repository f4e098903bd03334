"""A bench's cells: one (run, seed) each, the unit an executor runs and a table row.

A cell is named ``<run-slug>/seed<k>``, its run directory under the bench's output
folder (:func:`~otae.bench.config.run_dir_of`), and fingerprinted by the settings of
its resolved config (the set's overrides, the run's, the command line's and the seed)
that decide what is trained: every setting but those a resumed run may change freely
(``training.epochs``, the device, logging, evaluation: the ``free`` resume policy of
:mod:`otae.training.config`): such a change continues a cell rather than refusing it.
The run directory's ``cell.json`` holds that fingerprint (:data:`CELL_FILE`), so a
cell is idempotent:

* its ``metrics.json`` present, trained to the protocol's epochs and measured as the set
  asks: finished, skipped;
* a ``checkpoints/last.pt`` without it: partial, resumed from that checkpoint;
* a run directory of other settings: refused (:class:`StaleCellError`, one line naming
  the cell and the settings that differ), never reused and never overwritten.

The tables are rebuilt from the run directories (:func:`scan_records`), so cells that
finished on other machines, in any order, give the same table.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._io import atomic_write_text
from ..training import load_config
from ..training.config import flatten_config, normalised_config_dict, resume_policy
from ._common import read_history, slug
from .config import BenchConfig, BenchRun, RunOptions, run_dir_of

#: the file of a run directory that names its cell and holds its config's fingerprint
CELL_FILE = "cell.json"


class StaleCellError(ValueError):
    """A cell's run directory holds a run of other settings than the bench's now."""


@dataclass
class Cell:
    """One (run, seed) of a bench as plain, picklable data: what an executor hands to
    :func:`~otae.bench.executors.run_cell` (in this process, a worker process or a
    Slurm job)."""

    bench: BenchConfig
    run: BenchRun
    seed: int
    #: the bench's output folder (the cell trains in ``run_dir_of(out_dir, run, seed)``)
    out_dir: str
    options: RunOptions = field(default_factory=RunOptions)
    #: torch CPU threads of the cell (None: torch's default)
    threads: int | None = None
    #: the job's time limit in minutes: training stops in time for the evaluation
    time_min: float | None = None

    @property
    def name(self) -> str:
        """How messages name the cell: ``"<run> seed <k>"``."""
        return f"{self.run.name} seed {self.seed}"

    @property
    def run_dir(self) -> Path:
        return run_dir_of(Path(self.out_dir), self.run, self.seed)


@dataclass
class CellFailure:
    """A cell whose job failed, was killed or pre-empted: its name and first error line."""

    cell: str
    error: str
    #: the job's log, where there is one
    log: str | None = None

    def line(self) -> str:
        where = f" (log: {self.log})" if self.log else ""
        return f"cell {self.cell} failed: {self.error}; rerun the same command to retry it{where}"


class BenchCellsFailed(RuntimeError):
    """Some cells of a bench failed; the tables hold those that finished. ``failures``:
    the :class:`CellFailure` of each, in the bench's order."""

    def __init__(self, failures: list[CellFailure]):
        self.failures = list(failures)
        super().__init__("\n".join(f.line() for f in self.failures))


def cell_id(run: BenchRun, seed: int) -> str:
    """``<run-slug>/seed<k>``: the cell's run directory relative to the bench's folder."""
    return f"{slug(run.name)}/seed{seed}"


def cell_overrides(bench: BenchConfig, run: BenchRun, seed: int, overrides=()) -> list[str]:
    """The overrides of one cell's config: the set's, the run's, the command line's, the
    seed and the run's name."""
    return [
        *bench.overrides,
        *run.overrides,
        *overrides,
        f"training.seed={seed}",
        f"name={slug(run.name)}-seed{seed}",
    ]


def cell_config(bench: BenchConfig, run: BenchRun, seed: int, overrides=()):
    """The resolved :class:`~otae.training.ExperimentConfig` of one cell."""
    return load_config(run.config, cell_overrides(bench, run, seed, overrides))


def cell_identity(config) -> dict[str, Any]:
    """The settings of a config (or of the dict a run's ``config.yaml`` holds) that decide
    what a cell trains, flat (``{"section.key": value}``): all but those whose resume
    policy is ``free`` (:func:`otae.training.config.resume_policy`)."""
    flat = flatten_config(normalised_config_dict(config))
    identity = {key: flat[key] for key in sorted(flat) if resume_policy(key) != "free"}
    return json.loads(json.dumps(identity, default=repr))  # as cell.json holds it


def identity_hash(identity: dict[str, Any]) -> str:
    """A short, stable fingerprint of :func:`cell_identity`."""
    text = json.dumps(identity, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def read_cell(run_dir: Path) -> dict[str, Any] | None:
    """A run directory's ``cell.json`` (None where there is none, or it is unreadable)."""
    try:
        value = json.loads((Path(run_dir) / CELL_FILE).read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def recorded_identity(run_dir: Path) -> dict[str, Any] | None:
    """The settings a run directory was trained with: its ``cell.json``'s, else (a run of an
    otae without cells) those of its ``config.yaml``; None where it holds neither.

    A setting that an older otae did not have is missing from ``cell.json``: it takes
    the value ``config.yaml`` gives it when read through today's configs (its default),
    so that adding a setting does not make every earlier cell stale."""
    cell = read_cell(run_dir)
    from_yaml = _yaml_identity(Path(run_dir) / "config.yaml")
    if cell is not None and isinstance(cell.get("settings"), dict):
        return {**(from_yaml or {}), **cell["settings"]}
    return from_yaml


def _yaml_identity(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    import yaml

    try:
        return cell_identity(yaml.safe_load(path.read_text()))
    except (OSError, ValueError, TypeError, AttributeError, yaml.YAMLError):
        return None


def stale_cell_message(run: BenchRun, seed: int, run_dir: Path, config) -> str | None:
    """One line naming the cell and the settings that differ when ``run_dir`` holds a run
    of other settings than ``config``'s; None when it matches or holds no run yet."""
    recorded = recorded_identity(run_dir)
    if recorded is None:
        return None
    current = cell_identity(config)
    if identity_hash(recorded) == identity_hash(current):
        return None
    changed = [
        f"{key} ({recorded.get(key)!r} -> {current.get(key)!r})"
        for key in sorted(set(recorded) | set(current))
        if recorded.get(key) != current.get(key)
    ]
    shown = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
    return (
        f"cell {run.name} seed {seed}: {run_dir} holds a run of other settings ({shown}); "
        "rerun with the settings it was trained with, pass another --out, or delete that "
        "folder to train the cell again"
    )


def check_cell(run: BenchRun, seed: int, run_dir: Path, config) -> None:
    """Refuse (:class:`StaleCellError`) a run directory that holds another config's run."""
    message = stale_cell_message(run, seed, run_dir, config)
    if message is not None:
        raise StaleCellError(message)


def write_cell(bench: BenchConfig, run: BenchRun, seed: int, run_dir: Path, config) -> None:
    """Write the cell's ``cell.json``: its name, fingerprint and settings, and this attempt
    at it (host, process, Slurm or submitit job, start time)."""
    import datetime
    import platform

    identity = cell_identity(config)
    job = next(
        (os.environ[k] for k in ("SLURM_ARRAY_JOB_ID", "SLURM_JOB_ID", "SUBMITIT_LOCAL_JOB_ID")
         if os.environ.get(k)),
        None,
    )  # fmt: skip
    if job is not None and os.environ.get("SLURM_ARRAY_TASK_ID"):
        job = f"{job}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    values = {
        "cell": cell_id(run, seed),
        "bench": bench.name,
        "run": run.name,
        "seed": seed,
        "config": run.config,
        "config_hash": identity_hash(identity),
        "last_attempt": {
            "host": platform.node(),
            "pid": os.getpid(),
            "job": job,
            "started": datetime.datetime.now().isoformat(timespec="seconds"),
        },
        "settings": identity,
    }
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(run_dir) / CELL_FILE, json.dumps(values, indent=2, default=repr) + "\n")


def read_metrics(run_dir: Path) -> dict[str, Any] | None:
    try:
        value = json.loads((Path(run_dir) / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def trained_to_protocol(metrics: dict[str, Any] | None, config) -> bool:
    """Whether a cell's metrics are those of its whole protocol: ``training.epochs``
    trained, or stopped early by early stopping (a time limit leaves it short)."""
    return metrics is not None and (
        metrics.get("epochs") == config.training.epochs
        or metrics.get("early_stopping_stopped_epoch") is not None
    )


def encoder_kind(config) -> str:
    """``"P"`` (probabilistic) or ``"D"`` (deterministic): the tables' encoder column."""
    from ..models import get_model_class

    return "P" if get_model_class(config.model.name).probabilistic else "D"


def record_of(run: BenchRun, seed: int, run_dir: Path, config, metrics=None):
    """A cell's table record from its run directory (None where it has no metrics)."""
    metrics = read_metrics(run_dir) if metrics is None else metrics
    if metrics is None:
        return None
    return {
        "run": run.name,
        "seed": seed,
        "run_dir": str(run_dir),
        "encoder": encoder_kind(config),
        "protocol_epochs": config.training.epochs,
        **metrics,
        "_history": read_history(Path(run_dir) / "history.csv"),
    }


def scan_records(bench: BenchConfig, out_dir: Path, overrides=()) -> list[dict[str, Any]]:
    """The records of every cell of ``bench`` with metrics under ``out_dir`` (whichever
    machine, invocation or seed list trained it) whose settings are those of the bench
    with ``overrides`` now, in the bench's order."""
    records = []
    for run in bench.runs:
        folder = Path(out_dir) / slug(run.name)
        seeds = sorted(
            int(p.name[4:]) for p in folder.glob("seed*") if p.name[4:].isdigit() and p.is_dir()
        ) if folder.is_dir() else []  # fmt: skip
        for seed in seeds:
            run_dir = run_dir_of(out_dir, run, seed)
            metrics = read_metrics(run_dir)
            if metrics is None:
                continue
            config = cell_config(bench, run, seed, overrides)
            if stale_cell_message(run, seed, run_dir, config) is not None:
                continue
            records.append(record_of(run, seed, run_dir, config, metrics))
    return records
