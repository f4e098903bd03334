"""Trainer callbacks: everything the trainer logs goes through them.

A :class:`Callback` has one no-op method per event of a run; subclass it and override
the ones you need, then pass instances to ``Trainer(..., callbacks=[...])``. The events,
in order::

    on_fit_start(trainer)                    after resume, run dir and config.yaml written
      on_epoch_start(trainer, epoch, n_steps)
        on_step_end(trainer, epoch, step, terms)   every optimisation step
      on_train_epoch_end(trainer, epoch)     after the last step (also when a step failed)
      on_evaluate(trainer, epoch) -> dict    after the held-out evaluation: more columns
      on_epoch_end(trainer, epoch, row)      after evaluation, history and checkpoints
    on_fit_end(trainer)                      every epoch done (or the deadline reached)
    on_exception(trainer, err)               instead of on_fit_end: the run failed
    on_run_end(trainer, metrics, report)     `otae train` / run_experiment: metrics.json
    teardown(trainer)                        always last: close files, finish runs

Rules the trainer keeps:

* Callbacks run on rank 0 only (under torchrun the other ranks train silently).
* ``terms`` in :meth:`Callback.on_step_end` are the step's loss terms as 0-dim DEVICE
  tensors. Reading one (``float(t)``) waits for the GPU; a callback may do that only at
  the steps where :meth:`Callback.syncs_at` says True. The trainer checks divergence at
  those steps first, so a callback never sees the values of a diverged step.
* :meth:`Callback.on_evaluate` returns columns for the epoch's history row (``{}``:
  none); they join the row before early stopping reads it and the checkpoints save it,
  which :meth:`Callback.on_epoch_end` comes too late for.
* ``row`` in :meth:`Callback.on_epoch_end` is the epoch's history row (``epoch``,
  ``train_*`` means, ``epoch_time_s``, ``test_*``), already in ``trainer.history`` and in
  the epoch's checkpoints. A callback that raises there stops the run AFTER the epoch's
  checkpoints were written: resuming continues with the next epoch. (Under torchrun the
  error stops every rank, as any failure of rank 0's end of epoch does.)
* :meth:`Callback.on_run_end` comes from :func:`otae.experiment.run_experiment` (the
  ``otae train`` path) after the final metrics; ``Trainer.fit`` alone never calls it.
  ``Trainer.fit`` calls :meth:`Callback.teardown` at its end unless given
  ``teardown=False`` (``run_experiment`` does so and calls ``Trainer.teardown`` after
  its evaluation).

Built-ins (:func:`default_callbacks` picks them from ``training.*``): :class:`ProgressBar`
(``training.progress``), :class:`CSVLogger` (``history.csv``), :class:`TensorBoardLogger`
(``training.tensorboard``), :class:`ConsoleLogger` (one line per epoch), the opt-in
:class:`WandbCallback` / :class:`MLflowCallback` (``training.loggers``),
:class:`DisentanglementCurve` (``evaluation.disentanglement_every``) and
:class:`EarlyStopping` (``training.early_stopping.enabled``).
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from torch import Tensor

from .._io import write_csv_rows
from .config import CURVE_METRICS, EXTERNAL_LOGGERS, config_to_dict, flatten_config

if TYPE_CHECKING:  # pragma: no cover
    from .trainer import Trainer



class Callback:
    """Hooks into a training run; every method is a no-op here (see the module doc)."""

    def syncs_at(self, step: int) -> bool:
        """Whether :meth:`on_step_end` reads the terms of step ``step`` on the host."""
        return False

    def on_fit_start(self, trainer: Trainer) -> None:
        """Training starts (or resumes: ``trainer.epoch`` epochs are done already)."""

    def on_epoch_start(self, trainer: Trainer, epoch: int, n_steps: int) -> None:
        """Epoch ``epoch`` (1-based) starts; it has ``n_steps`` optimisation steps."""

    def on_step_end(
        self, trainer: Trainer, epoch: int, step: int, terms: dict[str, Tensor]
    ) -> None:
        """Step ``step`` (0-based within the epoch) is done; ``terms`` are device tensors."""

    def on_train_epoch_end(self, trainer: Trainer, epoch: int) -> None:
        """The epoch's steps are done (or one failed), before its held-out evaluation."""

    def on_evaluate(self, trainer: Trainer, epoch: int) -> dict[str, float]:
        """Epoch ``epoch`` is evaluated: columns to add to its history row (``{}``: none)."""
        return {}

    def on_epoch_end(self, trainer: Trainer, epoch: int, row: dict[str, float]) -> None:
        """Epoch ``epoch`` is evaluated, in ``trainer.history`` and checkpointed."""

    def on_fit_end(self, trainer: Trainer) -> None:
        """Training ended normally (every epoch, or stopped at the deadline)."""

    def on_exception(self, trainer: Trainer, err: BaseException) -> None:
        """The run failed with ``err`` (divergence, a full disk, Ctrl-C...); it propagates."""

    def on_run_end(self, trainer: Trainer, metrics: dict[str, Any], report: Path | None) -> None:
        """The run's final metrics (as in metrics.json) and its report.html (None: none)."""

    def teardown(self, trainer: Trainer) -> None:
        """Last call of the run, success or not: close what the callback opened."""


class CallbackList:
    """Calls each hook of ``callbacks`` in order; on ranks other than 0, nothing."""

    def __init__(self, callbacks: list[Callback], enabled: bool = True) -> None:
        self.callbacks = list(callbacks) if enabled else []
        self._torn_down = False

    def __iter__(self):
        return iter(self.callbacks)

    def syncs_at(self, step: int) -> bool:
        return any(cb.syncs_at(step) for cb in self.callbacks)

    def _call(self, hook: str, *args: Any) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(*args)

    def on_fit_start(self, trainer):
        self._torn_down = False
        self._call("on_fit_start", trainer)

    def on_epoch_start(self, trainer, epoch, n_steps):
        self._call("on_epoch_start", trainer, epoch, n_steps)

    def on_step_end(self, trainer, epoch, step, terms):
        self._call("on_step_end", trainer, epoch, step, terms)

    def on_train_epoch_end(self, trainer, epoch):
        self._call("on_train_epoch_end", trainer, epoch)

    def on_evaluate(self, trainer, epoch) -> dict[str, float]:
        columns: dict[str, float] = {}
        for cb in self.callbacks:
            columns.update(cb.on_evaluate(trainer, epoch) or {})
        return columns

    def on_epoch_end(self, trainer, epoch, row):
        self._call("on_epoch_end", trainer, epoch, row)

    def on_fit_end(self, trainer):
        self._call("on_fit_end", trainer)

    def on_exception(self, trainer, err):
        self._call("on_exception", trainer, err)

    def on_run_end(self, trainer, metrics, report):
        self._call("on_run_end", trainer, metrics, report)

    def teardown(self, trainer) -> None:
        """Each callback's ``teardown`` once, all of them even if one raises (then re-raised)."""
        if self._torn_down:
            return
        self._torn_down = True
        failure: BaseException | None = None
        for cb in self.callbacks:
            try:
                cb.teardown(trainer)
            except BaseException as err:  # the others must still close their files
                failure = failure or err
        if failure is not None:
            raise failure


# ---------------------------------------------------------------------- built-ins
class ProgressBar(Callback):
    """A per-batch tqdm bar on stderr, only when stderr is a terminal (or a notebook).

    Every ``every`` steps it shows the step's reconstruction and regulariser terms
    (a host sync: :meth:`syncs_at`, where the trainer also checks divergence).
    """

    def __init__(self, every: int = 10) -> None:
        self.every = every
        self.bar: Any = NoProgress()

    def syncs_at(self, step: int) -> bool:
        return self.bar.enabled and step % self.every == 0

    def on_epoch_start(self, trainer, epoch, n_steps):
        self.bar = progress_bar(n_steps, f"epoch {epoch}/{trainer.config.training.epochs}", True)

    def on_step_end(self, trainer, epoch, step, terms):
        self.bar.update(1)
        if self.syncs_at(step):
            self.bar.set_postfix(
                rec=f"{float(terms['reconstruction'].detach()):.2f}",
                reg=f"{float(terms['regulariser'].detach()):.4g}",
            )

    def on_train_epoch_end(self, trainer, epoch):
        # closed before any error line, which must not share the bar's line
        self.bar.close()
        self.bar = NoProgress()

    def teardown(self, trainer):
        self.on_train_epoch_end(trainer, trainer.epoch)


class CSVLogger(Callback):
    """``history.csv`` in the run directory: every row of ``trainer.history``.

    Rewritten whole after each epoch through a temporary file and ``os.replace``, so a
    killed run never leaves a half-written file; columns are the union of the rows'
    keys in first-seen order (a resumed run's rows included).
    """

    def __init__(self, filename: str = "history.csv") -> None:
        self.filename = filename

    def on_epoch_end(self, trainer, epoch, row):
        write_history_csv(trainer.history, trainer.run_dir / self.filename)


def write_history_csv(history: list[dict[str, float]], path: Path) -> None:
    """``history`` as CSV at ``path``, atomically (see :class:`CSVLogger`)."""
    write_csv_rows(path, history)


class TensorBoardLogger(Callback):
    """Each history row as scalars under ``run_dir/tensorboard``, step = epoch.

    Tags replace the first ``_`` of a column by ``/`` (``train/total``, ``test/rec_loss``,
    ``epoch/time_s``). A resumed run purges the events a killed run logged after its last
    checkpoint. Without the tensorboard package it logs one line and writes nothing.
    """

    def __init__(self, subdir: str = "tensorboard") -> None:
        self.subdir = subdir
        self.writer = None

    def on_fit_start(self, trainer):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            trainer.log("tensorboard is not installed: TensorBoard logs are off "
                        "(history.csv is written)")
            return
        # purge_step drops events a killed run logged after its last checkpoint
        self.writer = SummaryWriter(str(trainer.run_dir / self.subdir),
                                    purge_step=trainer.epoch + 1)

    def on_epoch_end(self, trainer, epoch, row):
        if self.writer is None:
            return
        for key, value in row.items():
            if key != "epoch":
                self.writer.add_scalar(key.replace("_", "/", 1), value, epoch)
        self.writer.flush()

    def teardown(self, trainer):
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class ConsoleLogger(Callback):
    """One line per epoch through ``trainer.log`` (stderr by default)::

        epoch 3: train rec 41.215 | test rec 40.874 | 1.2s
    """

    def on_epoch_end(self, trainer, epoch, row):
        val = f" | val rec {row['val_rec_loss']:.3f}" if "val_rec_loss" in row else ""
        curve = "".join(
            f" | {split} mig {row[f'{split}_mig']:.3f}"
            for split in ("val", "test") if f"{split}_mig" in row
        )
        trainer.log(
            f"epoch {epoch}: train rec {row.get('train_reconstruction', float('nan')):.3f}"
            f"{val} | test rec {row['test_rec_loss']:.3f}{curve} | {row['epoch_time_s']:.1f}s"
        )


class EarlyStopping(Callback):
    """Stop when ``monitor``, a validation column of the history (``val_total``...), has
    not improved by more than ``min_delta`` for ``patience`` epochs (``mode``: min or max).

    Installed by ``training.early_stopping.enabled`` (:func:`default_callbacks`), which
    also carves the validation split out of the training set; the trainer drives it.
    Unlike the other callbacks its decision shapes the run, so the trainer calls
    :meth:`update` at the end of each epoch BEFORE the checkpoints: an improvement
    writes ``best.pt``, and :meth:`state_dict` (best value and epoch, epochs without
    improvement, the stopping epoch) goes into ``best.pt`` and ``last.pt``, so that a
    resumed run stops at the same epoch as an uninterrupted one. Its hooks only log.
    """

    def __init__(
        self, monitor: str = "val_total", patience: int = 10, mode: str = "min",
        min_delta: float = 0.0,
    ) -> None:
        if mode not in ("min", "max"):
            raise ValueError(f"EarlyStopping: mode must be 'min' or 'max', got {mode!r}")
        if patience < 1:
            raise ValueError(f"EarlyStopping: patience must be >= 1, got {patience}")
        self.monitor, self.patience, self.mode = monitor, int(patience), mode
        self.min_delta = float(min_delta)
        self.best_value: float | None = None
        self.best_epoch: int | None = None
        #: epochs since the best one
        self.bad_epochs = 0
        #: the epoch after which the run stopped (None: it has not)
        self.stopped_epoch: int | None = None

    @classmethod
    def from_config(cls, config) -> EarlyStopping:
        """From a :class:`~otae.training.config.EarlyStoppingConfig`."""
        return cls(config.monitor, config.patience, config.mode, config.min_delta)

    @property
    def stopped(self) -> bool:
        return self.stopped_epoch is not None

    def improves(self, value: float) -> bool:
        """Whether ``value`` beats the best so far by more than ``min_delta`` (NaN never)."""
        if math.isnan(value):
            return False
        if self.best_value is None:
            return True
        if self.mode == "min":
            return value < self.best_value - self.min_delta
        return value > self.best_value + self.min_delta

    def update(self, epoch: int, row: dict[str, float]) -> bool:
        """Record epoch ``epoch``'s history row; True if it is the new best epoch."""
        if self.monitor not in row:
            available = [k for k in row if k.startswith("val_")]
            raise ValueError(
                f"training.early_stopping.monitor={self.monitor!r} is not a validation metric "
                f"of this model; available: {', '.join(available) or 'none'}"
            )
        value = float(row[self.monitor])
        if self.improves(value):
            self.best_value, self.best_epoch, self.bad_epochs = value, epoch, 0
            return True
        self.bad_epochs += 1
        if self.bad_epochs >= self.patience:
            self.stopped_epoch = epoch
        return False

    def state_dict(self) -> dict[str, Any]:
        return {
            "monitor": self.monitor,
            "best_value": self.best_value,
            "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs,
            "stopped_epoch": self.stopped_epoch,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        best = state["best_value"]
        self.best_value = None if best is None else float(best)
        self.best_epoch = state["best_epoch"]
        self.bad_epochs = int(state["bad_epochs"])
        self.stopped_epoch = state["stopped_epoch"]

    def record(self) -> dict[str, Any]:
        """What metrics.json keeps of the run's early stopping."""
        return {
            "early_stopping_monitor": self.monitor,
            "early_stopping_mode": self.mode,
            "early_stopping_patience": self.patience,
            "early_stopping_best_epoch": self.best_epoch,
            "early_stopping_best_value": self.best_value,
            "early_stopping_stopped_epoch": self.stopped_epoch,
        }

    def on_fit_end(self, trainer):
        if self.stopped:
            trainer.log(
                f"early stopping: {self.monitor} has not improved for {self.patience} "
                f"epoch{'s' if self.patience > 1 else ''} "
                f"since epoch {self.best_epoch} ({self.monitor}={self.best_value:.6g}): "
                f"stopped after epoch {self.stopped_epoch} of {trainer.config.training.epochs}"
            )


class DisentanglementCurve(Callback):
    """MIG and DCI disentanglement of a fixed set of images with known generative factors,
    every ``every`` epochs and at the last, as columns of the epoch's history row.

    Installed by ``evaluation.disentanglement_every`` > 0 (:func:`default_callbacks`), it
    tells a model that has not trained long enough from one that does not disentangle.
    The images are the first ``points`` of the validation split when early stopping
    carved one (columns ``val_mig``, ``val_dci_disentanglement``, which early stopping may
    monitor), else of the test set (``test_mig``, ``test_dci_disentanglement``).
    ``metrics`` picks the scores: ``mig`` and/or ``dci`` (the slower one). The codes are
    the posterior means (:func:`otae.evaluation.metrics.encode_dataset`: eval mode, no
    gradient, every module's mode restored after) and the scores are computed as in the
    final metrics (same bins, forests and seed), so the last epoch's values are those
    metrics.json gives for the same images and weights. Nothing here draws from a random
    generator, so a run trains to the same weights with the curve on or off.

    The trainer calls :meth:`setup` when it is made (on every process: data without
    factors fails before any training) and collects the scores through
    :meth:`on_evaluate`, before early stopping reads the row and the checkpoints save it.
    """

    def __init__(
        self, every: int = 1, metrics: Sequence[str] = ("mig", "dci"), points: int = 5000,
        batch_size: int = 500,
    ) -> None:
        metrics = list(metrics)
        if int(every) != every or every < 1:
            raise ValueError(f"DisentanglementCurve: every must be an int >= 1, got {every!r}")
        if not metrics or any(m not in CURVE_METRICS for m in metrics):
            raise ValueError(
                f"DisentanglementCurve: metrics must be some of {', '.join(CURVE_METRICS)}, "
                f"got {metrics}"
            )
        if points < 2:
            raise ValueError(f"DisentanglementCurve: points must be >= 2, got {points}")
        self.every, self.metrics = int(every), metrics
        self.points, self.batch_size = int(points), int(batch_size)
        #: the scored images, their factors ``(N, K)`` and the column prefix (:meth:`setup`)
        self.data: Any = None
        self.factors: np.ndarray | None = None
        self.prefix = "test"

    @classmethod
    def from_config(cls, config) -> DisentanglementCurve:
        """From an :class:`~otae.training.config.ExperimentConfig`'s ``evaluation`` section."""
        ev = config.evaluation
        return cls(ev.disentanglement_every, ev.disentanglement_curve_metrics,
                   ev.disentanglement_curve_points, config.training.eval_batch_size)

    @property
    def columns(self) -> list[str]:
        """The history columns this curve writes."""
        return [f"{self.prefix}_{CURVE_METRICS[m]}" for m in self.metrics]

    def setup(self, trainer: Trainer) -> None:
        """Pick the images (ValueError, one line, if the scores cannot be computed)."""
        split = "validation split" if trainer.val_data is not None else "test set"
        data = trainer.val_data if trainer.val_data is not None else trainer.test_data
        if getattr(data, "factors", None) is None:
            raise ValueError(
                f"evaluation.disentanglement_every={self.every} needs images with known "
                f"generative factors (data.name=shapes or shapes_fine), but the {split} of "
                f"data.name={trainer.config.data.name!r} has none; set "
                "evaluation.disentanglement_every=0"
            )
        data = data.first(min(self.points, len(data)))
        factors = np.asarray(data.factors.cpu(), dtype=np.int64)
        names = list(getattr(data, "factor_names", None) or range(factors.shape[1]))
        constant = [str(n) for n, col in zip(names, factors.T, strict=True)
                    if np.unique(col).size < 2]
        if constant:
            which = (f"factor {constant[0]} takes" if len(constant) == 1
                     else f"factors {', '.join(constant)} take")
            raise ValueError(
                f"the disentanglement curve is undefined: {which} a "
                f"single value in its {len(data)} images (the first "
                f"evaluation.disentanglement_curve_points of the {split}); use more images"
            )
        gaps = [m for m in self.metrics if m in ("mig", "mig_q")]
        if gaps and trainer.config.model.latent_dim < 2:
            raise ValueError(
                "the disentanglement curve's MIG needs model.latent_dim >= 2 (a gap between "
                f"two code dimensions); drop {', '.join(gaps)} from "
                "evaluation.disentanglement_curve_metrics"
            )
        if "mig_q" in self.metrics and not _probabilistic(trainer):
            raise ValueError(_deterministic_mig_q(trainer.config.model.name))
        self.data, self.factors = data, factors
        self.prefix = "val" if trainer.val_data is not None else "test"

    def due(self, epoch: int, last_epoch: int) -> bool:
        return epoch % self.every == 0 or epoch == last_epoch

    def on_evaluate(self, trainer, epoch):
        if not self.due(epoch, trainer.config.training.epochs):
            return {}
        if self.data is None:  # passed to Trainer(callbacks=...) by hand
            self.setup(trainer)
        return self.scores(trainer.model)

    def scores(self, model) -> dict[str, float]:
        """The scores of ``model``'s codes of the images, by column (NaN: codes not finite)."""
        from ..evaluation.disentanglement import (
            dci,
            mutual_information_gap,
            posterior_mutual_information_gap,
        )
        from ..evaluation.metrics import encode_dataset, encode_posterior
        from ..evaluation.traversals import DISENTANGLEMENT_SEED
        from ..parallel import local_batches

        # one process's work (rank 0 under torchrun): no collectives
        logvars = None
        with local_batches(model):
            if "mig_q" in self.metrics:
                means, logvars = encode_posterior(model, self.data, self.batch_size)
                if logvars is None:
                    raise ValueError(_deterministic_mig_q(type(model).__name__))
                codes, logvars = means.float().numpy(), logvars.float().numpy()
            else:
                codes = encode_dataset(model, self.data, self.batch_size).float().numpy()
        if not np.isfinite(codes).all() or (logvars is not None and not np.isfinite(logvars).all()):
            # NaN, which early stopping never counts as an improvement, rather than a failed
            # epoch: a diverged model is the held-out loss check's to report
            return dict.fromkeys(self.columns, math.nan)
        out = {}
        for name, column in zip(self.metrics, self.columns, strict=True):
            if name == "mig":
                out[column] = mutual_information_gap(codes, self.factors)["mig"]
            elif name == "mig_q":
                out[column] = posterior_mutual_information_gap(
                    codes, logvars, self.factors, random_state=DISENTANGLEMENT_SEED
                )["mig"]
            else:
                out[column] = dci(codes, self.factors,
                                  random_state=DISENTANGLEMENT_SEED)["disentanglement"]
        return out


def _probabilistic(trainer) -> bool:
    """Whether the trainer's model has Gaussian posteriors (asked before it is built: the
    registered class's flag; a model passed in is checked again when first scored)."""
    from ..models import get_model_class

    model = getattr(trainer, "model", None)
    if model is not None:
        return bool(getattr(model, "probabilistic", False))
    try:
        return get_model_class(trainer.config.model.name).probabilistic
    except ValueError:  # not registered: passed in, checked when first scored
        return True


def _deterministic_mig_q(name: str) -> str:
    return (
        "the disentanglement curve's mig_q (MIG on the encoder's posteriors) needs a "
        f"probabilistic encoder, and model.name={name!r} is deterministic; use mig"
    )


# ---------------------------------------------------------------------- external
def _import_optional(module: str, logger: str):
    """``import module``, or ImportError naming the extra that installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(
            f"training.loggers lists {logger!r} but {module} cannot be imported ({err}); "
            f"install it with `pip install {EXTERNAL_LOGGERS[logger]}`, or drop {logger!r} "
            "from training.loggers"
        ) from None


def _numbers(values: dict[str, Any]) -> dict[str, float]:
    """The real numbers of ``values`` as floats (bools, strings, None, lists left out)."""
    return {
        k: float(v) for k, v in values.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    }


class WandbCallback(Callback):
    """A Weights & Biases run: the config once, each history row (step = epoch), the
    final metrics as ``final_*`` summary values and the report path as ``report``.

    ``mode`` is W&B's: ``offline`` (default: written under ``run_dir/wandb``, nothing
    leaves the machine; ``wandb sync run_dir/wandb/offline-run-*`` uploads it later),
    ``online`` or ``disabled``. Needs ``pip install otae[wandb]``; the import happens
    when the callback is made, so a missing library fails before training.
    """

    def __init__(self, project: str = "otae", mode: str = "offline", name: str | None = None,
                 **init_kwargs: Any) -> None:
        self.wandb = _import_optional("wandb", "wandb")
        self.project, self.mode, self.name = project, mode, name
        self.init_kwargs = init_kwargs
        self.run = None

    def on_fit_start(self, trainer):

        self.run = self.wandb.init(
            project=self.project,
            name=self.name or trainer.config.name,
            mode=self.mode,
            dir=str(trainer.run_dir),
            config=config_to_dict(trainer.config),
            **self.init_kwargs,
        )

    def on_epoch_end(self, trainer, epoch, row):
        self.run.log(_numbers(row), step=epoch)

    def on_run_end(self, trainer, metrics, report):
        # prefixed: W&B's summary also holds the last history row under the plain names
        self.run.summary.update({f"final_{k}": v for k, v in _numbers(metrics).items()})
        if report is not None:
            self.run.summary["report"] = str(report)

    def on_exception(self, trainer, err):
        if self.run is not None:
            self.run.finish(exit_code=1)
            self.run = None

    def teardown(self, trainer):
        if self.run is not None:
            self.run.finish()
            self.run = None


class MLflowCallback(Callback):
    """An MLflow run: the config as params (dotted keys) once, each history row as
    metrics (step = epoch), the final metrics as ``final_*`` metrics, the report path
    as the ``report`` tag.

    ``tracking_uri`` None writes a local file store at ``run_dir/mlruns`` (nothing leaves
    the machine; ``mlflow ui --backend-store-uri run_dir/mlruns`` shows it). MLflow 3
    keeps that file store in maintenance mode behind ``MLFLOW_ALLOW_FILE_STORE``, which
    this default sets unless the environment already does; any other URI (``sqlite:///...``,
    ``http://...``) is used as given. ``experiment`` None: the config's name. Needs
    ``pip install otae[mlflow]`` (mlflow-skinny is enough for the file store).
    """

    def __init__(self, tracking_uri: str | None = None, experiment: str | None = None) -> None:
        self.mlflow = _import_optional("mlflow", "mlflow")
        self.tracking_uri, self.experiment = tracking_uri, experiment
        self.client = None
        self.run_id: str | None = None

    def on_fit_start(self, trainer):

        uri = self.tracking_uri
        if uri is None:
            uri = (trainer.run_dir / "mlruns").resolve().as_uri()
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = self.mlflow.tracking.MlflowClient(tracking_uri=uri)
        name = self.experiment or trainer.config.name
        found = self.client.get_experiment_by_name(name)
        experiment_id = found.experiment_id if found else self.client.create_experiment(name)
        run = self.client.create_run(experiment_id, run_name=trainer.config.name)
        self.run_id = run.info.run_id
        params = [
            self.mlflow.entities.Param(k, str(v)[:6000])
            for k, v in flatten_config(config_to_dict(trainer.config)).items()
        ]
        self.client.log_batch(self.run_id, params=params)

    def _log(self, values: dict[str, float], step: int, prefix: str = "") -> None:
        import time

        now = int(time.time() * 1000)
        metrics = [
            self.mlflow.entities.Metric(f"{prefix}{k}", v, now, step)
            for k, v in _numbers(values).items() if math.isfinite(v)
        ]
        self.client.log_batch(self.run_id, metrics=metrics)

    def on_epoch_end(self, trainer, epoch, row):
        self._log({k: v for k, v in row.items() if k != "epoch"}, epoch)

    def on_run_end(self, trainer, metrics, report):
        self._log(metrics, trainer.epoch, prefix="final_")
        if report is not None:
            self.client.set_tag(self.run_id, "report", str(report))

    def on_exception(self, trainer, err):
        self._end("FAILED")

    def teardown(self, trainer):
        self._end("FINISHED")

    def _end(self, status: str) -> None:
        if self.run_id is not None:
            self.client.set_terminated(self.run_id, status)
            self.run_id = None


def default_callbacks(config) -> list[Callback]:
    """The callbacks ``training.*`` asks for: progress bar, history.csv, TensorBoard,
    console lines, W&B / MLflow in the order of ``training.loggers``, the disentanglement
    curve (``evaluation.disentanglement_every``), then early stopping."""
    t = config.training
    callbacks: list[Callback] = [ProgressBar()] if t.progress else []
    callbacks.append(CSVLogger())
    if t.tensorboard:
        callbacks.append(TensorBoardLogger())
    callbacks.append(ConsoleLogger())
    for name in t.loggers:
        if name == "wandb":
            callbacks.append(WandbCallback(project=t.wandb_project, mode=t.wandb_mode))
        elif name == "mlflow":
            callbacks.append(MLflowCallback(t.mlflow_tracking_uri, t.mlflow_experiment))
    if config.evaluation.disentanglement_every > 0:
        callbacks.append(DisentanglementCurve.from_config(config))
    if t.early_stopping.enabled:
        callbacks.append(EarlyStopping.from_config(t.early_stopping))
    return callbacks


# ---------------------------------------------------------------------- tqdm
def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def progress_bar(total: int, desc: str, enabled: bool):
    """A per-batch progress bar on stderr, only when stderr is a terminal.

    Redirected to a file or a pipe, a bar is thousands of carriage-return updates in
    the log; the one line per epoch that the trainer logs is the progress there.
    """
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        enabled = False
    # a Jupyter widget bar (tqdm.auto's choice in a notebook) is one updating widget
    widget = enabled and "notebook" in tqdm.__module__
    if not enabled or not (widget or _is_terminal(sys.stderr)):
        return NoProgress()
    bar = tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)
    bar.enabled = True
    return bar


class NoProgress:
    """What :func:`progress_bar` returns when no bar is shown: its methods do nothing."""

    enabled = False

    def update(self, n: int) -> None: ...
    def set_postfix(self, **kwargs: Any) -> None: ...
    def close(self) -> None: ...


__all__ = [
    "CSVLogger",
    "NoProgress",
    "Callback",
    "CallbackList",
    "ConsoleLogger",
    "DisentanglementCurve",
    "EarlyStopping",
    "MLflowCallback",
    "ProgressBar",
    "TensorBoardLogger",
    "WandbCallback",
    "default_callbacks",
    "write_history_csv",
]
