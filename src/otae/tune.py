"""Hyper-parameter search with Optuna: what ``otae tune`` runs (needs ``otae[tune]``).

A search is a config (a file or a shipped name, with ``key=value`` overrides), a search
space (one :class:`Dimension` per config key), an objective (a number of the trials'
``metrics.json``, minimised or maximised) and a budget (``n_trials``, the total number of
trials of the study). Each trial trains the config with its sampled values into
``OUT/trial-NNNN`` (NNNN: the trial's number) through
:func:`otae.experiment.run_experiment`, with the config's ``training.seed``: rerunning
the best trial's config reproduces its metric (bit for bit on a CPU with the same number
of threads).

Search spaces, in ``key=SPEC`` items (the command line) or a ``search:`` mapping of a
YAML file (:func:`load_space`)::

    model.gamma=loguniform:1e-2:10      a float, uniform in log scale
    model.beta=uniform:0.01:0.5         a float
    model.latent_dim=int:2:16           an integer, bounds included
    training.optimizer.name=choice:adam,rmsprop   one of the values (read as YAML)

Several workers, on one machine or many, share one study through its storage: an Optuna
journal file (the default, ``OUT/study.journal``; on a shared file system for several
machines) or a database URL (``postgresql://...``, ``sqlite:///...``). The budget is
shared: workers claim trials one at a time under a lock beside the journal file, counting
the trials that finished (complete, pruned or failed) and those running, so together they
run exactly ``n_trials`` and never one trial twice. A killed worker's trial stays RUNNING
in the study (it counts as one of the trials, once; Optuna's journal has no heartbeat to
tell a dead worker from a slow one) and its run directory holds the checkpoints of its
last finished epoch. With a database URL there is no file lock: a worker that finds,
after creating its trial, that the budget was already taken marks it FAIL with the user
attribute ``otae_surplus`` and it is not counted.

Pruning: an Optuna pruner (median, successive halving) reads a per-epoch column of the
trials' history (by default the objective's metric when the history has it:
``test_rec_loss``; ``val_*`` columns with ``training.early_stopping.enabled=true``) and
stops unpromising trials at an epoch boundary, after that epoch's checkpoints.

Outputs, rebuilt from the study by every worker (so any worker, on any machine, can write
them), atomically: ``OUT/trials.csv`` (one row per trial), ``OUT/best.yaml`` (the best
trial's complete config, ready for ``otae train OUT/best.yaml``) and ``OUT/report.html``
(the table, the optimisation history and the parameter importances, with matplotlib).
"""

from __future__ import annotations

import base64
import copy
import datetime as _dt
import html
import json
import math
import os
import socket
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ._io import atomic_write_text, write_csv_rows
from ._optional import require
from .training.callbacks import Callback
from .training.config import (
    ExperimentConfig,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    flatten_config,
    load_config,
)

__all__ = [
    "DISTRIBUTIONS",
    "MACHINE_KEYS",
    "Dimension",
    "OptunaPruning",
    "TuneResult",
    "check_space",
    "is_search_item",
    "load_space",
    "make_pruner",
    "open_storage",
    "parse_dimension",
    "parse_space",
    "require_optuna",
    "split_arguments",
    "tune",
    "write_outputs",
]

#: the distributions of a search dimension, as ``KEY=KIND:...`` writes them
DISTRIBUTIONS = ("loguniform", "uniform", "int", "choice")
_FORMS = "loguniform:LOW:HIGH, uniform:LOW:HIGH, int:LOW:HIGH or choice:A,B,C"
#: the trial states a study's budget counts (Optuna's names); WAITING trials do not count
_COUNTED = ("RUNNING", "COMPLETE", "PRUNED", "FAIL")
#: settings a worker may set for its own machine: they may differ between the workers
#: of one study (each machine's device, data folder, loader workers)
MACHINE_KEYS = (
    "training.device",
    "training.num_workers",
    "training.pin_memory",
    "training.progress",
    "training.data_on_device",
    "data.root",
    "output_dir",
)
#: metrics.json keys that only the step-timing pass writes: a trial keeps that pass if
#: the objective is one of them (it is skipped otherwise, to save time)
_TIMING_METRICS = (
    "step_time_s",
    "step_time_without_regulariser_s",
    "regulariser_share",
    "regulariser_share_min",
)


def require_optuna():
    """The ``optuna`` module, or :class:`~otae._optional.MissingDependencyError` (an
    ImportError) saying to ``pip install 'otae[tune]'``."""
    return require("optuna", feature="otae tune", install="otae[tune]")


_optuna = require_optuna


# ---------------------------------------------------------------------- search space
@dataclass(frozen=True)
class Dimension:
    """One config key of a search space and its distribution (:data:`DISTRIBUTIONS`).

    ``low`` / ``high`` bound ``loguniform``, ``uniform`` and ``int`` (both included);
    ``choices`` lists the values of ``choice``. ``spec`` is the text it was parsed from.
    """

    key: str
    kind: str
    low: float | int | None = None
    high: float | int | None = None
    choices: tuple[Any, ...] = ()
    spec: str = ""

    def suggest(self, trial) -> Any:
        """The value of this dimension for an Optuna ``trial`` (its parameter: ``key``)."""
        if self.kind == "choice":
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high))
        return trial.suggest_float(
            self.key, float(self.low), float(self.high), log=self.kind == "loguniform"
        )

    @property
    def canonical(self) -> str:
        """The dimension in one normal form (``loguniform:0.001:10.0``): what a study
        records, so that workers that write a bound differently still agree."""
        if self.kind == "choice":
            return "choice:" + ",".join(json.dumps(c) for c in self.choices)
        return f"{self.kind}:{self.low!r}:{self.high!r}"

    def extremes(self) -> list[Any]:
        """The values that bound the dimension (each choice for ``choice``): checked
        against the config before any trial runs."""
        return list(self.choices) if self.kind == "choice" else [self.low, self.high]


def _number(text: str, kind: str, where: str) -> float | int:
    try:
        value: float | int = int(text) if kind == "int" else float(text)
    except ValueError:
        what = "an integer" if kind == "int" else "a number"
        raise ValueError(f"{where}: {text!r} is not {what}") from None
    if not math.isfinite(value):
        raise ValueError(f"{where}: bounds must be finite, got {text!r}")
    return value


def parse_dimension(key: str, spec: str) -> Dimension:
    """The :class:`Dimension` of ``key`` written ``spec`` (``loguniform:1e-3:10``...);
    ``ValueError`` (one line) for a malformed spec."""
    key = key.strip()
    where = f"search space: {key}={spec}"
    if not key or not all(key.split(".")):
        raise ValueError(f"{where}: the key must be a dotted config key (model.gamma)")
    if not isinstance(spec, str):
        raise ValueError(f"{where}: expected one of {_FORMS}")
    kind, sep, rest = spec.strip().partition(":")
    if not sep or kind not in DISTRIBUTIONS:
        raise ValueError(f"{where}: unknown distribution {kind!r}; write {_FORMS}")
    if kind == "choice":
        items = [item.strip() for item in rest.split(",")]
        if len(items) < 2 or not all(items):
            raise ValueError(
                f"{where}: a choice needs two values or more, comma-separated "
                "(one value is a fixed override: KEY=VALUE)"
            )
        choices = []
        for item in items:
            try:
                value = yaml.safe_load(item)
            except yaml.YAMLError:
                value = item
            if value is not None and not isinstance(value, (bool, int, float, str)):
                raise ValueError(f"{where}: choice {item!r} is not a single value")
            choices.append(value)
        if len({json.dumps(c) for c in choices}) != len(choices):
            raise ValueError(f"{where}: a choice lists a value twice")
        return Dimension(key, kind, choices=tuple(choices), spec=spec)
    bounds = rest.split(":")
    if len(bounds) != 2:
        raise ValueError(f"{where}: expected {kind}:LOW:HIGH")
    low, high = (_number(b.strip(), kind, where) for b in bounds)
    if not low < high:
        raise ValueError(f"{where}: LOW must be below HIGH, got {low} and {high}")
    if kind == "loguniform" and low <= 0:
        raise ValueError(f"{where}: a loguniform range must be positive, got LOW={low}")
    return Dimension(key, kind, low, high, spec=spec)


def is_search_item(text: str) -> bool:
    """Whether ``KEY=VALUE`` on the command line is a search dimension (its value starts
    with a distribution and a colon) rather than a fixed override."""
    _, sep, value = text.partition("=")
    kind = value.strip().partition(":")[0]
    return bool(sep) and kind in DISTRIBUTIONS and ":" in value


def parse_space(items: Iterable[str] | Mapping[str, Any]) -> dict[str, Dimension]:
    """A search space from ``KEY=SPEC`` strings, or a ``{key: spec}`` mapping (a spec may
    also be a :class:`Dimension`)."""
    space: dict[str, Dimension] = {}
    pairs: list[tuple[str, Any]]
    if isinstance(items, Mapping):
        pairs = list(items.items())
    else:
        pairs = []
        for text in items:
            key, sep, spec = str(text).partition("=")
            if not sep:
                raise ValueError(f"search space: {text!r} must look like KEY=SPEC ({_FORMS})")
            pairs.append((key, spec))
    for key, spec in pairs:
        dim = spec if isinstance(spec, Dimension) else parse_dimension(str(key), spec)
        if dim.key in space:
            raise ValueError(f"search space: {dim.key} is given twice")
        space[dim.key] = dim
    return space


def load_space(path: str | os.PathLike) -> dict[str, Dimension]:
    """The ``search:`` mapping (``key: SPEC``) of the YAML file ``path``."""
    from .training.config import read_yaml_mapping

    path = Path(path)
    values = read_yaml_mapping(path, "a mapping with a search: section")
    unknown = [k for k in values if k != "search"]
    if unknown or not isinstance(values.get("search"), dict) or not values["search"]:
        raise ValueError(
            f"{path}: expected a `search:` mapping of config keys to {_FORMS} "
            f"(and nothing else){'; unknown: ' + ', '.join(map(str, unknown)) if unknown else ''}"
        )
    return parse_space({str(k): v for k, v in values["search"].items()})


def split_arguments(items: Iterable[str]) -> tuple[list[str], dict[str, Dimension]]:
    """The command line's ``KEY=VALUE`` items split into fixed overrides and a search space
    (:func:`is_search_item`)."""
    items = list(items)
    overrides = [t for t in items if not is_search_item(t)]
    return overrides, parse_space([t for t in items if is_search_item(t)])


def _set_key(values: dict[str, Any], key: str, value: Any) -> None:
    node = values
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ValueError(f"search space: {key}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def _with_params(base: dict[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    values = copy.deepcopy(base)
    for key, value in params.items():
        _set_key(values, key, value)
    return values


def check_space(base: dict[str, Any], space: Mapping[str, Dimension]) -> None:
    """Refuse, before any trial runs, a dimension that is no config key or whose bounds
    (each choice) the config refuses (``ValueError`` naming it)."""
    if not space:
        raise ValueError(
            f"the search space is empty: give KEY=SPEC items ({_FORMS}) or --space FILE.yaml"
        )
    reference = {k: d.extremes()[0] for k, d in space.items()}
    for key, dim in space.items():
        for value in dim.extremes():
            try:
                config_from_dict(_with_params(base, {**reference, key: value}))
            except ValueError as err:
                raise ValueError(f"search space: {key}={dim.spec}: at {value!r}: {err}") from None


# ---------------------------------------------------------------------- storage, pruners
def open_storage(storage: str | os.PathLike | None, out: Path):
    """``(optuna storage, claim lock or None, description)``: a journal file (default
    ``out/study.journal``; a path) with a lock file beside it, or a database URL
    (anything with ``://``) without one."""
    optuna = _optuna()
    try:  # Optuna >= 4.0
        from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock
    except ImportError:  # Optuna 3.x: the same classes under their earlier names
        from optuna.storages import JournalFileStorage as JournalFileBackend
        from optuna.storages import JournalFileSymlinkLock

    text = None if storage is None else str(storage)
    if text is not None and "://" in text:
        for attempt in range(5):
            try:
                return optuna.storages.RDBStorage(text), None, text
            except Exception as err:  # SQLAlchemy's own errors: a bad URL or driver
                # workers that start together race to create a new database's tables:
                # the loser finds them made, and connects on a second try
                if attempt < 4 and "already exists" in str(err):
                    time.sleep(0.5 + attempt)
                    continue
                raise ValueError(f"--storage {text}: {type(err).__name__}: {err}") from None
    path = Path(text) if text is not None else out / "study.journal"
    if path.is_dir():
        raise ValueError(f"--storage {path} is a folder: give a journal file or a database URL")
    path.parent.mkdir(parents=True, exist_ok=True)
    backend = JournalFileBackend(str(path))
    # a lock of its own (the journal's lock guards each append): held while a worker
    # counts the trials and creates one; a killed holder's lock goes after 30 s
    lock = JournalFileSymlinkLock(f"{path}.claim")
    return optuna.storages.JournalStorage(backend), lock, str(path)


def make_pruner(spec: Any = "median"):
    """An Optuna pruner from ``spec``: ``none``, ``median[:STARTUP[:WARMUP]]`` (median of
    the other trials at the same epoch, after STARTUP finished trials (default 5) and
    from epoch WARMUP + 1 (default 1)), ``halving[:MIN_EPOCHS[:FACTOR]]`` (successive
    halving, default 1 and 3), or an Optuna pruner object itself."""
    optuna = _optuna()
    if isinstance(spec, optuna.pruners.BasePruner):
        return spec
    text = str(spec or "none").strip()
    kind, *args = text.split(":")
    try:
        numbers = [int(a) for a in args]
    except ValueError:
        numbers = [-1]
    limits = {"none": 0, "median": 2, "halving": 2}
    if kind not in limits or len(numbers) > limits[kind] or any(n < 0 for n in numbers):
        raise ValueError(
            f"--pruner {text!r}: expected none, median[:STARTUP[:WARMUP]] or "
            "halving[:MIN_EPOCHS[:FACTOR]] with integers >= 0"
        )
    if kind == "none":
        return optuna.pruners.NopPruner()
    if kind == "median":
        startup, warmup = (numbers + [5, 1][len(numbers):])[:2]
        return optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=warmup)
    min_resource, factor = (numbers + [1, 3][len(numbers):])[:2]
    if min_resource < 1 or factor < 2:
        raise ValueError(f"--pruner {text!r}: MIN_EPOCHS must be >= 1 and FACTOR >= 2")
    return optuna.pruners.SuccessiveHalvingPruner(
        min_resource=min_resource, reduction_factor=factor
    )


class OptunaPruning(Callback):
    """Reports a column of each epoch's history row to an Optuna trial and raises
    ``optuna.TrialPruned`` when the pruner says so (after the epoch's checkpoints).

    ``required``: a row without the column is an error (ValueError); otherwise the
    callback logs once that pruning is off for the run.
    """

    def __init__(self, trial, column: str, required: bool = False) -> None:
        self.trial, self.column, self.required = trial, column, required
        self.pruned_epoch: int | None = None
        self._warned = False

    def on_epoch_end(self, trainer, epoch, row):
        if self.column not in row:
            columns = ", ".join(k for k in row if k.startswith(("val_", "test_")))
            if self.required:
                raise ValueError(
                    f"--prune-metric {self.column} is not a column of the history; "
                    f"available: {columns}"
                )
            if not self._warned:
                trainer.log(f"pruning off: {self.column} is not in the history ({columns})")
                self._warned = True
            return
        value = float(row[self.column])
        self.trial.report(value, epoch)
        if self.trial.should_prune():
            self.pruned_epoch = epoch
            raise _optuna().TrialPruned(
                f"pruned after epoch {epoch} of {trainer.config.training.epochs} "
                f"({self.column}={value:.6g})"
            )


# ---------------------------------------------------------------------- the search
@dataclass
class TuneResult:
    """What a worker did and where the study's outputs are."""

    out: Path
    study_name: str
    storage: str
    #: trial numbers this worker ran
    ran: list[int]
    #: the study's trials by state (``COMPLETE``, ``PRUNED``, ``FAIL``, ``RUNNING``...)
    states: dict[str, int]
    best_value: float | None
    best_params: dict[str, Any]
    best_number: int | None
    files: dict[str, Path] = field(default_factory=dict)


def _state(trial) -> str:
    return trial.state.name


def _counted(trial) -> bool:
    return _state(trial) in _COUNTED and not trial.user_attrs.get("otae_surplus")


def _claim(study, n_trials: int, lock) -> Any:
    """A new trial of ``study`` (RUNNING), or None if the budget is taken (see the
    module doc: exact under the journal's lock, checked after creation otherwise)."""
    optuna = _optuna()
    if lock is not None:
        lock.acquire()
    try:
        if sum(map(_counted, study.get_trials(deepcopy=False))) >= n_trials:
            return None
        trial = study.ask()
        trial.set_user_attr("otae_worker", f"{socket.gethostname()}:{os.getpid()}")
    finally:
        if lock is not None:
            lock.release()
    if lock is None:  # no lock: the trials numbered before this one decide
        before = [t for t in study.get_trials(deepcopy=False) if t.number < trial.number]
        if sum(map(_counted, before)) >= n_trials:
            trial.set_user_attr("otae_surplus", True)
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            return None
    return trial


def _metric_value(metrics: Mapping[str, Any], metric: str, run_dir: Path) -> float:
    if metric not in metrics:
        numeric = [k for k, v in metrics.items() if isinstance(v, (int, float))
                   and not isinstance(v, bool)]  # fmt: skip
        raise _MissingMetric(
            f"metric {metric!r} is not in {run_dir / 'metrics.json'}; its numbers: "
            f"{', '.join(numeric)}"
        )
    value = metrics[metric]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"metric {metric!r} of {run_dir} is {value!r}, not a finite number")
    return float(value)


class _MissingMetric(ValueError):
    pass


def _study_attrs(config: dict[str, Any], space: Mapping[str, Dimension], metric: str) -> dict:
    return {
        "otae_config": json.loads(json.dumps(config)),
        "otae_space": {k: d.canonical for k, d in space.items()},
        "otae_metric": metric,
    }


def _check_same_search(study, attrs: dict[str, Any], storage: str) -> None:
    """Refuse to join a study created for another search (config, space or metric)."""
    known = study.user_attrs
    missing = [k for k in attrs if k not in known]
    for key in missing:
        study.set_user_attr(key, attrs[key])
    known = {**known, **{k: attrs[k] for k in missing}}
    where = f"study {study.study_name!r} in {storage}"
    if known["otae_metric"] != attrs["otae_metric"]:
        raise ValueError(
            f"{where} optimises {known['otae_metric']}, not {attrs['otae_metric']}: use the "
            "same --metric, or another --study / --out"
        )
    if known["otae_space"] != attrs["otae_space"]:
        raise ValueError(
            f"{where} searches {known['otae_space']}, not {attrs['otae_space']}: use the "
            "same search space, or another --study / --out"
        )
    ours, theirs = flatten_config(attrs["otae_config"]), flatten_config(known["otae_config"])
    differ = sorted(k for k in set(ours) | set(theirs)
                    if ours.get(k) != theirs.get(k) and k not in MACHINE_KEYS)  # fmt: skip
    if differ:
        shown = "; ".join(f"{k}: {theirs.get(k)!r} there, {ours.get(k)!r} here" for k in differ[:5])
        raise ValueError(
            f"{where} trains another config ({shown}): use the same config and overrides, "
            "or another --study / --out"
        )


def _trial_settings(metric: str, trial_reports: bool) -> dict[str, Any]:
    """What each trial changes for speed (not in best.yaml: none changes the metric)."""
    settings: dict[str, Any] = {
        "training.progress": False,
        "training.tensorboard": False,
        "evaluation.report": bool(trial_reports),
    }
    if metric not in _TIMING_METRICS:
        settings["evaluation.timing_steps"] = 0
    return settings


def tune(
    config: str | os.PathLike | ExperimentConfig,
    space: Mapping[str, Any] | Iterable[str],
    *,
    overrides: Iterable[str] = (),
    out: str | os.PathLike | None = None,
    metric: str = "test_rec_loss",
    direction: str = "minimize",
    n_trials: int = 20,
    timeout: float | None = None,
    storage: str | os.PathLike | None = None,
    study_name: str | None = None,
    pruner: Any = "median",
    prune_metric: str | None = None,
    sampler_seed: int | None = None,
    startup_trials: int | None = None,
    trial_reports: bool = False,
    log: Callable[[str], None] | None = None,
) -> TuneResult:
    """Run one worker of a search (see the module doc); several may run at once.

    Args:
        config: a config file, a shipped config name or an :class:`ExperimentConfig`.
        space: the search space (:func:`parse_space`'s input, or its output).
        overrides: ``section.key=value`` overrides of ``config`` (fixed in every trial).
        out: the folder of the trials and outputs (default ``output_dir/tune-NAME``).
        metric: the objective, a key of the trials' ``metrics.json``.
        direction: ``minimize`` or ``maximize``.
        n_trials: the study's total number of trials (all workers together).
        timeout: seconds after which this worker starts no new trial (None: no limit).
        storage: a journal file (default ``out/study.journal``) or a database URL.
        study_name: the study in the storage (default: the config's name).
        pruner: :func:`make_pruner`'s spec or an Optuna pruner.
        prune_metric: the history column the pruner reads (default: ``metric`` when the
            history has it; pruning is then off if it has not).
        sampler_seed: seeds the TPE sampler (None: random; give each worker its own).
        startup_trials: random trials before TPE models the results (default: a third of
            ``n_trials``, at most 10).
        trial_reports: write each trial's figures and report.html too.
        log: where the progress lines go (default: stderr).
    """
    optuna = _optuna()
    from .experiment import run_experiment

    log = log or (lambda message: print(message, file=sys.stderr, flush=True))
    if direction not in ("minimize", "maximize"):
        raise ValueError(f"--direction must be minimize or maximize, got {direction!r}")
    if n_trials < 0:
        raise ValueError(f"--trials must be >= 0, got {n_trials}")
    if timeout is not None and not timeout > 0:
        raise ValueError(f"--timeout must be > 0 seconds, got {timeout}")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError(
            "otae tune runs its trials in one process: start one worker per GPU "
            "(CUDA_VISIBLE_DEVICES=i otae tune ...) instead of torchrun"
        )
    if isinstance(config, ExperimentConfig):
        base_config = config_from_dict(apply_overrides(config_to_dict(config), list(overrides)))
    else:
        base_config = load_config(config, list(overrides))
    base = config_to_dict(base_config)
    space = parse_space(space)
    check_space(base, space)
    if out is None:
        out = Path(base_config.output_dir) / f"tune-{base_config.name}"
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    built_pruner = make_pruner(pruner)
    pruning_on = not isinstance(built_pruner, optuna.pruners.NopPruner)
    study_storage, lock, where = open_storage(storage, out)
    study_name = study_name or base_config.name
    if startup_trials is None:
        startup_trials = min(10, max(1, n_trials // 3))
    sampler = optuna.samplers.TPESampler(
        seed=sampler_seed, n_startup_trials=startup_trials, constant_liar=True
    )
    study = optuna.create_study(
        storage=study_storage, study_name=study_name, direction=direction,
        sampler=sampler, pruner=built_pruner, load_if_exists=True,
    )  # fmt: skip
    if study.direction.name.lower() != direction:
        raise ValueError(
            f"study {study_name!r} in {where} is to {study.direction.name.lower()} its "
            f"metric, not {direction}: use the same --direction, or another --study / --out"
        )
    _check_same_search(study, _study_attrs(base, space, metric), where)
    if not study.get_trials(deepcopy=False) and any(out.glob("trial-[0-9]*")):
        raise ValueError(
            f"{out} holds trial folders of another study (study {study_name!r} in {where} "
            "has no trials yet): choose another --out, or remove them"
        )
    settings = _trial_settings(metric, trial_reports)
    deadline = None if timeout is None else time.monotonic() + timeout
    ran: list[int] = []
    log(f"study {study_name!r} in {where}: {n_trials} trials in all, {metric} to {direction}")
    while True:
        if deadline is not None and time.monotonic() >= deadline:
            log(f"--timeout: {timeout:g} s passed, no new trial")
            break
        trial = _claim(study, n_trials, lock)
        if trial is None:
            break
        ran.append(trial.number)
        stop = _run_trial(study, trial, base, space, settings, metric, out, run_experiment,
                          pruning_on, prune_metric, log)  # fmt: skip
        _write_tables(study, out)
        if stop is not None:
            write_outputs(study, out)
            raise stop
    files = write_outputs(study, out)
    return _result(study, out, where, ran, files)


def _run_trial(study, trial, base, space, settings, metric, out, run_experiment,
               pruning_on, prune_metric, log) -> BaseException | None:  # fmt: skip
    """Train and tell one trial; an error that should stop the worker (returned), or None."""
    optuna = _optuna()
    TrialState = optuna.trial.TrialState  # noqa: N806
    run_dir = out / f"trial-{trial.number:04d}"
    trial.set_user_attr("run_dir", str(run_dir))
    prefix = f"[trial {trial.number}]"
    callback: OptunaPruning | None = None
    start = time.perf_counter()
    try:
        params = {key: dim.suggest(trial) for key, dim in space.items()}
        log(f"{prefix} {', '.join(f'{k}={v!r}' for k, v in params.items())} -> {run_dir}")
        values = _with_params(base, {**params, **settings})
        values["name"] = f"{base['name']}-trial-{trial.number:04d}"
        config = config_from_dict(values)
        callbacks = []
        if pruning_on:
            callback = OptunaPruning(trial, prune_metric or metric, required=bool(prune_metric))
            callbacks.append(callback)
        result = run_experiment(
            config, run_dir, report=config.evaluation.report,
            log=lambda m: log(f"{prefix} {m}"), callbacks=callbacks,
        )  # fmt: skip
        value = _metric_value(result.metrics, metric, run_dir)
        trial.set_user_attr("epochs", result.metrics.get("epochs"))
    except optuna.TrialPruned as pruned:
        trial.set_user_attr("epochs", callback.pruned_epoch if callback else None)
        trial.set_user_attr("note", str(pruned))
        study.tell(trial, state=TrialState.PRUNED)
        log(f"{prefix} {pruned} in {time.perf_counter() - start:.1f} s")
        return None
    except (Exception, KeyboardInterrupt) as err:
        reason = f"{type(err).__name__}: {_one_line(str(err))}"
        trial.set_user_attr("note", reason)
        study.tell(trial, state=TrialState.FAIL)
        log(f"{prefix} failed: {reason}")
        if isinstance(err, KeyboardInterrupt):
            return err
        if isinstance(err, _MissingMetric) and not any(
            _state(t) == "COMPLETE" for t in study.get_trials(deepcopy=False)
        ):
            return ValueError(f"{err}; no trial of the study has it: stopping (check --metric)")
        return None if _is_user_error(err) else err
    study.tell(trial, value)
    log(f"{prefix} {metric}={value:.6g} in {time.perf_counter() - start:.1f} s")
    return None


def _is_user_error(err: BaseException) -> bool:
    """A failure of the trial's settings or data (the trial fails, the worker goes on),
    not of otae (the worker stops: `otae` reports it as an internal error)."""
    from .training import CheckpointError, NonFiniteLossError

    return isinstance(err, (ValueError, OSError, ImportError, CheckpointError, NonFiniteLossError))


def _one_line(text: str) -> str:
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def _result(study, out: Path, where: str, ran: list[int], files: dict[str, Path]) -> TuneResult:
    trials = [t for t in study.get_trials(deepcopy=False) if not t.user_attrs.get("otae_surplus")]
    states: dict[str, int] = {}
    for t in trials:
        states[_state(t)] = states.get(_state(t), 0) + 1
    best = _best(study, trials)
    return TuneResult(
        out=out, study_name=study.study_name, storage=where, ran=ran, states=states,
        best_value=None if best is None else best.value,
        best_params={} if best is None else dict(best.params),
        best_number=None if best is None else best.number, files=files,
    )  # fmt: skip


def _best(study, trials):
    complete = [t for t in trials if _state(t) == "COMPLETE" and t.value is not None]
    if not complete:
        return None
    sign = 1.0 if study.direction.name == "MINIMIZE" else -1.0
    return min(complete, key=lambda t: (sign * t.value, t.number))  # ties: the first


# ---------------------------------------------------------------------- outputs
def _trial_rows(study) -> list[dict[str, Any]]:
    trials = [t for t in study.get_trials(deepcopy=False) if not t.user_attrs.get("otae_surplus")]
    keys = list(study.user_attrs.get("otae_space", {}))
    for t in trials:
        keys += [k for k in t.params if k not in keys]
    rows = []
    for t in sorted(trials, key=lambda t: t.number):
        duration = t.duration.total_seconds() if t.duration is not None else None
        rows.append({
            "number": t.number,
            "state": _state(t),
            "value": t.value,
            "duration_s": None if duration is None else round(duration, 3),
            **{k: t.params.get(k) for k in keys},
            "epochs": t.user_attrs.get("epochs"),
            "worker": t.user_attrs.get("otae_worker"),
            "run_dir": t.user_attrs.get("run_dir"),
            "note": t.user_attrs.get("note"),
        })  # fmt: skip
    return rows


def _best_yaml(study, trials) -> str | None:
    best = _best(study, trials)
    base = study.user_attrs.get("otae_config")
    if best is None or base is None:
        return None
    values = _with_params(base, best.params)
    values["name"] = f"{base.get('name', 'run')}-tuned"
    config = config_from_dict(values)
    metric = study.user_attrs.get("otae_metric", "value")
    header = (
        f"# otae tune: the best of {len(trials)} trials of study {study.study_name!r}: "
        f"trial {best.number}, {metric} = {best.value!r}\n"
        f"# params: {json.dumps(best.params)}\n"
        "# rerun it: otae train best.yaml (the same seed reproduces the metric)\n"
    )
    return header + yaml.safe_dump(config_to_dict(config), sort_keys=False)


def _write_tables(study, out: Path) -> dict[str, Path]:
    """trials.csv and best.yaml (cheap: written after every trial)."""
    files = {"trials": out / "trials.csv"}
    rows = _trial_rows(study)
    if rows:
        write_csv_rows(files["trials"], rows)
    else:
        atomic_write_text(files["trials"], "number,state,value,duration_s\n")
    trials = [t for t in study.get_trials(deepcopy=False) if not t.user_attrs.get("otae_surplus")]
    text = _best_yaml(study, trials)
    if text is not None:
        files["best"] = atomic_write_text(out / "best.yaml", text)
    return files


def write_outputs(study, out: str | os.PathLike) -> dict[str, Path]:
    """``trials.csv``, ``best.yaml`` (once a trial completed), the figures and
    ``report.html`` of ``study`` in ``out``; their paths by name."""
    out = Path(out)
    files = _write_tables(study, out)
    rows = _trial_rows(study)
    metric = study.user_attrs.get("otae_metric", "value")
    figures: dict[str, tuple[Path | None, str]] = {}
    figures["history"] = _history_figure(study, rows, metric, out / "optimization_history.png")
    figures["importance"] = _importance_figure(study, out / "param_importances.png")
    files.update({name: path for name, (path, _) in figures.items() if path is not None})
    files["report"] = atomic_write_text(out / "report.html", _report_html(study, rows, figures))
    return files


def _history_figure(study, rows, metric: str, path: Path) -> tuple[Path | None, str]:
    from matplotlib.figure import Figure

    complete = [(r["number"], r["value"]) for r in rows if r["state"] == "COMPLETE"]
    if not complete:
        return None, "No trial has completed yet."
    fig = Figure(figsize=(6.5, 4.2), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    xs, ys = zip(*complete, strict=True)
    ax.plot(xs, ys, "o", label="complete trial", color="tab:blue")
    best, line = None, []
    minimize = study.direction.name == "MINIMIZE"
    for x, y in complete:
        if best is None or (y < best if minimize else y > best):
            best = y
        line.append((x, best))
    ax.step(*zip(*line, strict=True), where="post", color="tab:red", label="best so far")
    pruned = []
    for t in study.get_trials(deepcopy=False):
        if _state(t) == "PRUNED" and t.intermediate_values:
            pruned.append((t.number, t.intermediate_values[max(t.intermediate_values)]))
    if pruned:
        ax.plot(*zip(*pruned, strict=True), "x", color="grey",
                label="pruned (its last epoch's value)")  # fmt: skip
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial")
    ax.set_ylabel(metric)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    from ._io import atomic_write

    atomic_write(path, lambda f: fig.savefig(f, format="png", metadata={"Software": None}))
    return path, f"Optimisation history: {metric} of each completed trial and the best so far."


def _importance_figure(study, path: Path) -> tuple[Path | None, str]:
    optuna = _optuna()
    complete = [t for t in study.get_trials(deepcopy=False) if _state(t) == "COMPLETE"]
    varied = [k for k in study.user_attrs.get("otae_space", {})
              if len({json.dumps(t.params.get(k)) for t in complete}) > 1]  # fmt: skip
    if len(complete) < 2 or not varied:
        return None, "Parameter importances need two completed trials with different values."
    try:
        importances = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0)
        )
    except (ValueError, RuntimeError) as err:
        return None, f"Parameter importances could not be computed: {_one_line(str(err))}"
    from matplotlib.figure import Figure

    names = list(importances)[::-1]
    fig = Figure(figsize=(6.5, 0.6 * len(names) + 1.4), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    ax.barh(names, [importances[n] for n in names], color="tab:blue")
    for y, name in enumerate(names):
        ax.text(importances[name], y, f" {importances[name]:.2f}", va="center", fontsize="small")
    ax.set_xlabel("importance (fANOVA, completed trials)")
    ax.set_xlim(0, 1.1)
    fig.tight_layout()
    from ._io import atomic_write

    atomic_write(path, lambda f: fig.savefig(f, format="png", metadata={"Software": None}))
    return path, "Parameter importances: the share of the objective's variance each explains."


_STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:70em}
table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ccc;padding:.25em .5em}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.best{background:#eaf6ea}img{max-width:100%}pre{background:#f6f6f6;padding:.5em}"""


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f'<td class="num">{value:.6g}</td>'
    if isinstance(value, int) and not isinstance(value, bool):
        return f'<td class="num">{value}</td>'
    return f"<td>{html.escape('' if value is None else str(value))}</td>"


def _report_html(study, rows, figures) -> str:
    trials = [t for t in study.get_trials(deepcopy=False) if not t.user_attrs.get("otae_surplus")]
    best = _best(study, trials)
    metric = study.user_attrs.get("otae_metric", "value")
    states: dict[str, int] = {}
    for r in rows:
        states[r["state"]] = states.get(r["state"], 0) + 1
    summary = ", ".join(f"{n} {s.lower()}" for s, n in sorted(states.items())) or "no trials"
    if best is None:
        best_html = "<p>No trial has completed yet.</p>"
    else:
        params = "".join(f"<tr><td>{html.escape(k)}</td>{_cell(v)}</tr>"
                         for k, v in best.params.items())  # fmt: skip
        best_html = (
            f"<p>Trial {best.number}: {html.escape(metric)} = {best.value:.6g}. "
            "<code>otae train best.yaml</code> reruns it (same seed, same metric).</p>"
            f"<table><tr><th>parameter</th><th>value</th></tr>{params}</table>"
        )
    figs = []
    for path, caption in figures.values():
        if path is None:
            figs.append(f"<p>{html.escape(caption)}</p>")
            continue
        data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
        figs.append(f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(caption)}">'
                    f"<figcaption>{html.escape(caption)} "
                    f'(<a href="{html.escape(Path(path).name)}">{html.escape(Path(path).name)}'
                    "</a>)</figcaption></figure>")  # fmt: skip
    columns = list(rows[0]) if rows else []
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "\n".join(
        f'<tr{" class=best" if best is not None and r["number"] == best.number else ""}>'
        + "".join(_cell(r[c]) for c in columns) + "</tr>"
        for r in rows
    )
    space = study.user_attrs.get("otae_space", {})
    title = f"otae tune: {study.study_name}"
    stamp = _dt.datetime.now().isoformat(timespec="seconds")
    return f"""<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{_STYLE}</style></head>
<body>
<h1>{html.escape(title)}</h1>
<p>Generated {html.escape(stamp)}. {html.escape(metric)} to {study.direction.name.lower()};
trials: {html.escape(summary)}.</p>
<h2>Best trial</h2>
{best_html}
<h2>Figures</h2>
{"".join(figs)}
<h2>Trials</h2>
<table><tr>{head}</tr>
{body}
</table>
<h2>Search space</h2>
<pre>{html.escape(yaml.safe_dump(space, sort_keys=False))}</pre>
<h2>Base configuration</h2>
<pre>{html.escape(yaml.safe_dump(study.user_attrs.get("otae_config", {}), sort_keys=False))}</pre>
</body>
</html>
"""
