"""One trainer for every model: epochs, critic schedule, checkpoints, resume.

What a run logs (progress bar, history.csv, TensorBoard, console lines, W&B, MLflow)
goes through callbacks (:mod:`otae.training.callbacks`); the trainer keeps training,
evaluation, the divergence checks and the checkpoints.

Data parallelism (``torchrun``, :mod:`otae.training.distributed`). ``batch_size`` is
the global batch; rank ``r`` of ``W`` trains on rows ``r, r + W, ...`` of each
global batch (:class:`EpochSampler`, a ``DistributedSampler``), the networks are
wrapped in ``DistributedDataParallel``, batch norm uses global-batch statistics
and batch-level regularisers gather the global batch (:mod:`otae.parallel`): one
step equals the one-process step at the same global batch up to float rounding
(tested with gloo). Rank 0 alone evaluates, logs and writes checkpoints; every
rank reads the checkpoint to resume.

Reproducibility. All randomness of an epoch (data order, reparameterisation
noise, prior samples, random projections) comes from generators seeded by
``(training.seed, epoch)``, and network weights/prior parameters are seeded
from ``training.seed`` before the model is built. Checkpoints hold the model,
optimisers, global RNG states and the epoch, so ``resume`` replays the
remaining epochs exactly: on CPU a resumed run ends with bit-identical weights
to an uninterrupted one (tested). A run killed mid-epoch resumes from the last
completed epoch.

Early stopping (``training.early_stopping``, :class:`~otae.training.callbacks.EarlyStopping`).
A fixed share of the training rows, drawn with ``validation_seed`` alone
(:func:`validation_split`), is held out and evaluated after every epoch next to the test
set; the split depends on no rank, so every process trains on the same rows.
``best.pt`` then follows the monitored validation metric instead of the test loss, the
run stops after ``patience`` epochs without improvement (``training.epochs`` is the
upper bound) and the early-stopping state is checkpointed, so a resumed run stops where
an uninterrupted one does.
"""

from __future__ import annotations

import math
import os
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .._io import FolderLock
from ..checks import input_checks
from ..data import ImageDataset
from ..discrepancies import NonFiniteInputError
from ..models import MODELS, Autoencoder, build_model
from ..parallel import BatchShards, convert_batchnorm, local_batches
from . import distributed
from . import loading as _loading
from . import splits as _splits
from .callbacks import (
    Callback,
    CallbackList,
    DisentanglementCurve,
    EarlyStopping,
    default_callbacks,
)
from .checkpoint import (
    CheckpointError,
    load_checkpoint,
    remove_stale_temporaries,
    save_checkpoint,
)
from .compiled import CompiledObjective, compile_options
from .config import (
    DataConfig,
    EvaluationConfig,
    ExperimentConfig,
    TrainingConfig,
    config_to_dict,
    resume_changes,
    save_config,
)
from .divergence import DIVERGENCE_CHECK_EVERY, DIVERGENCE_FIX, DivergenceWatch, NonFiniteLossError
from .loading import load_error_line, require_keys
from .optim import apply_hyperparameters, make_optimizer, select_device, select_memory_format
from .seeding import (
    STREAM_TEST,
    STREAM_TRAIN,
    EpochSampler,
    derived_seed,
    rng_state,
    set_rng_state,
)
from .splits import build_split, carve_validation

#: names that lived here before the trainer was split by job: the old path warns
_MOVED = {"final_checkpoint": "loading", "load_run": "loading", "validation_split": "splits"}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        module = {"loading": _loading, "splits": _splits}[_MOVED[name]]
        warnings.warn(
            f"otae.training.trainer.{name} moved to {module.__name__}.{name} (also "
            f"otae.training.{name}); the old path goes away in the next release",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _Objective(nn.Module):
    """The model's objectives behind one ``forward``, which DistributedDataParallel wraps."""

    def __init__(self, model: Autoencoder) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, x: Tensor, generator: torch.Generator, kind: str, critic_step: int = 0
    ) -> dict[str, Tensor]:
        if kind == "loss":
            return self.model.loss(x, generator)
        if kind == "critic":
            return self.model.critic_loss(x, generator, reuse_samples=critic_step > 0)
        if kind == "reconstruction":
            return {"total": self.model.reconstruction_objective(x, generator)}
        raise ValueError(f"unknown objective {kind!r}")


class Trainer:
    """Train a built model on built data; write everything under ``run_dir``.

    ``Trainer(model, train_data, test_data, training, run_dir)`` trains any
    :class:`~otae.models.Autoencoder`, including a subclass the library has never heard
    of (no :func:`~otae.models.register_model` needed), on any
    :class:`~otae.data.ImageDataset`, with the settings of a
    :class:`~otae.training.TrainingConfig` (``training``; default: its defaults) and, for
    the disentanglement curve, an :class:`~otae.training.EvaluationConfig`
    (``evaluation``). ``test_data`` is the held-out set evaluated after every epoch (it
    decides ``best.pt``; default: the training data). :meth:`from_config` builds model
    and data from an :class:`~otae.training.ExperimentConfig`, as ``otae train`` does.

    With ``training.early_stopping`` the validation rows are carved out of the training
    data (:attr:`val_data`; :attr:`train_data` is the rest). ``log`` receives the
    trainer's messages (default: stderr). ``callbacks`` are added after the ones the
    settings ask for (:func:`~otae.training.callbacks.default_callbacks`: progress bar,
    history.csv, TensorBoard, console lines, W&B / MLflow, the disentanglement curve,
    early stopping); all of them run on rank 0 only. ``name`` names the run in loggers.

    The network weights are the model's as given; seed them before building the model
    (``torch.manual_seed``) for a reproducible run. Everything random during training
    comes from ``training.seed`` (module docstring).

    The form ``Trainer(config, run_dir, log=..., callbacks=...)`` of earlier versions
    still works, with a DeprecationWarning: use :meth:`from_config`.
    """

    def __init__(
        self,
        model: Autoencoder | ExperimentConfig,
        train_data: ImageDataset | str | Path | None = None,
        test_data: ImageDataset | None = None,
        training: TrainingConfig | None = None,
        run_dir: str | Path | None = None,
        *,
        evaluation: EvaluationConfig | None = None,
        name: str = "run",
        log: Callable[[str], None] | None = None,
        callbacks: list[Callback] | None = None,
    ) -> None:
        if isinstance(model, ExperimentConfig):
            warnings.warn(
                "Trainer(config, run_dir, ...) is deprecated and goes away in the next release; "
                "use Trainer.from_config(config, run_dir, ...)",
                DeprecationWarning,
                stacklevel=2,
            )
            if train_data is None and run_dir is None:
                raise TypeError("Trainer.from_config(config, run_dir) needs a run directory")
            self._build_from_config(model, train_data if run_dir is None else run_dir,
                                    log=log, callbacks=callbacks)  # fmt: skip
            return
        if not isinstance(model, Autoencoder):
            raise TypeError(
                f"Trainer trains an otae.models.Autoencoder (or use Trainer.from_config), "
                f"got {type(model).__name__}"
            )
        if train_data is None or isinstance(train_data, (str, Path)):
            raise TypeError(
                "Trainer(model, train_data, ...) needs the training data (an ImageDataset)"
            )
        if run_dir is None:
            raise TypeError(
                "Trainer(model, train_data, ...) needs run_dir, the folder it writes to"
            )
        config = ExperimentConfig(
            name=name,
            model=model.config,
            # the data was given: no dataset is built from this section
            data=DataConfig(name="given"),
            training=training if training is not None else TrainingConfig(),
            evaluation=evaluation if evaluation is not None else EvaluationConfig(),
        )
        config.validate()
        registered = MODELS.get(model.config.name) is type(model)
        self._setup(
            config,
            run_dir,
            train_data,
            test_data if test_data is not None else train_data,
            lambda device: model.to(device),
            model_name=config.model.name if registered else _qualified_name(type(model)),
            log=log,
            callbacks=callbacks,
            own_networks=False,
        )

    @classmethod
    def from_config(
        cls,
        config: ExperimentConfig,
        run_dir: str | Path,
        *,
        train_data: ImageDataset | None = None,
        test_data: ImageDataset | None = None,
        log: Callable[[str], None] | None = None,
        callbacks: list[Callback] | None = None,
    ) -> Trainer:
        """Build model and data from ``config`` (``config.model``, ``config.network``,
        ``config.data``) and train with its ``training`` and ``evaluation`` settings, as
        ``otae train`` does. ``train_data`` / ``test_data`` replace the datasets of
        ``config.data`` when given. The weights are seeded from ``training.seed``."""
        trainer = cls.__new__(cls)
        trainer._build_from_config(config, run_dir, train_data=train_data,
                                   test_data=test_data, log=log, callbacks=callbacks)  # fmt: skip
        return trainer

    def _build_from_config(self, config, run_dir, *, train_data=None, test_data=None, log=None,
                           callbacks=None) -> None:  # fmt: skip
        config.validate()

        def build(device: torch.device) -> Autoencoder:
            seed = config.training.seed
            torch.manual_seed(seed)
            return build_model(
                config.model,
                self.train_data.image_shape,
                config.network.architecture,
                dict(config.network.options),
                generator=torch.Generator().manual_seed(derived_seed(seed, 0, 0)),
            ).to(device)

        self._setup(
            config,
            run_dir,
            # built lazily, after the callbacks (a missing W&B fails before data loads)
            train_data or (lambda: build_split(config.data, "train")),
            test_data or (lambda: build_split(config.data, "test")),
            build,
            model_name=config.model.name,
            log=log,
            callbacks=callbacks,
        )

    def _setup(self, config, run_dir, train_data, test_data, make_model, *, model_name, log,
               callbacks, world: tuple[int, int] | None = None,
               own_networks: bool = True) -> None:  # fmt: skip
        """The construction shared by both entries: callbacks, data on the device, the
        model (``make_model(device)``: the step that seeds and builds, or moves a given
        model), data parallelism, optimisers. ``world`` overrides ``(world size, rank)``
        (the profiling copy is one process alone). ``own_networks``: the networks are
        otae's architectures, known to run in any memory layout (a given model's may
        ``view`` activations as NCHW, so ``memory_format=auto`` leaves its layout)."""
        self.config = config
        self.model_name = model_name
        self.run_dir = Path(run_dir)
        self.world_size, self.rank = world or distributed.world()
        self.is_main = self.rank == 0
        log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.log = log if self.is_main else (lambda msg: None)
        given = list(callbacks or [])
        if any(isinstance(cb, EarlyStopping) for cb in given):
            raise ValueError(
                "EarlyStopping is installed by training.early_stopping.enabled=true (which "
                "also makes the validation split), not passed in callbacks"
            )
        # first: a missing W&B / MLflow library fails here, before the data is loaded
        installed = default_callbacks(config)
        #: on every rank (each restores its state), decided on rank 0 (:meth:`_stop_early`)
        self.early_stopping: EarlyStopping | None = next(
            (cb for cb in installed if isinstance(cb, EarlyStopping)), None
        )
        self.callbacks = CallbackList(installed + given, enabled=self.is_main)
        if config.training.batch_size % self.world_size:
            raise ValueError(
                f"training.batch_size={config.training.batch_size} is the global batch and must "
                f"be divisible by the number of processes ({self.world_size})"
            )
        self.train_data = train_data() if callable(train_data) else train_data
        self.test_data = test_data() if callable(test_data) else test_data
        self.val_data: ImageDataset | None = None
        if self.early_stopping is not None:
            self.train_data, self.val_data = carve_validation(
                self.train_data, config.training.early_stopping
            )
        self.device = distributed.rank_device(select_device(config.training.device))
        if (self.device.type == "cuda" and config.training.data_on_device
                and config.training.num_workers == 0):
            # in-memory datasets (uint8) are indexed on the GPU: no per-batch copies
            self.train_data = self.train_data.on_device(self.device)
            self.test_data = self.test_data.on_device(self.device)
            if self.val_data is not None:
                self.val_data = self.val_data.on_device(self.device)
        #: on every rank, so that data without generative factors fails here on each
        #: (the scores themselves are rank 0's work, :meth:`_end_epoch`)
        self.disentanglement_curve: DisentanglementCurve | None = next(
            (cb for cb in installed if isinstance(cb, DisentanglementCurve)), None
        )
        if self.disentanglement_curve is not None:
            self.disentanglement_curve.setup(self)
        if config.training.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
        self.model: Autoencoder = make_model(self.device)
        self._own_networks = own_networks
        #: layout of the image batches and the convolution weights (training.memory_format;
        #: preserve_format: a given model's and the data's own, untouched)
        self.memory_format = select_memory_format(
            config.training.memory_format, self.device, self.model if own_networks else None,
            compiled=config.training.compile,
        )
        self.model.to(memory_format=self.memory_format)
        shards = BatchShards(self.world_size, self.rank, config.training.regulariser_mode)
        self.model.shards = shards
        if shards.gathers:
            convert_batchnorm(self.model, shards)
        if config.training.compile and self.world_size > 1:
            # DistributedDataParallel must run its own forward: compile the networks in
            # place (parameter names, hence checkpoints, are unchanged)
            options = compile_options(config.training.compile_backend,
                                      config.training.compile_mode)
            self.model.encoder.compile(**options)
            self.model.decoder.compile(**options)
        self.objective: nn.Module = _Objective(self.model)
        if self.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            self.objective = DistributedDataParallel(
                self.objective,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                # GWAE's critic and generator steps each leave the other's parameters
                # unused; every other model uses all its parameters in every step
                find_unused_parameters=self.model.has_critic,
                # buffers (batch-norm statistics, search locations) are computed from the
                # global batch on every rank alike: nothing to broadcast
                forward_sync_buffers=False,
            )
        critic = {id(p) for p in self.model.critic_parameters()}
        main_params = [p for p in self.model.parameters() if id(p) not in critic]
        opt_config = config.training.optimizer
        self.optimizer = make_optimizer(main_params, opt_config)
        self.critic_optimizer = None
        if self.model.has_critic:
            self.critic_optimizer = make_optimizer(
                self.model.critic_parameters(), opt_config, opt_config.critic_lr,
                opt_config.critic_betas,
            )
        self._runner = self._objective_runner(self.objective)
        self.divergence = DivergenceWatch(self.device)
        self._unit_scale = torch.ones((), device=self.device)  # the fused check's "unscale"
        #: the last step's device flag: 1.0 if its objective or gradients were not finite
        self._last_found_inf = torch.zeros((), device=self.device)
        self.epoch = 0  # completed epochs
        #: held from :meth:`fit` to :meth:`teardown` (rank 0): a second process is refused
        self._run_lock: FolderLock | None = None
        #: the epoch of the last checkpoint written or resumed from (None: none yet)
        self.checkpoint_epoch: int | None = None
        self.history: list[dict[str, float]] = []
        self.best_value = math.inf
        #: wall seconds of each epoch, its evaluation, checkpoints and callbacks included
        #: (what a deadline must allow for; ``epoch_time_s`` is training alone); kept in
        #: the checkpoint, where an epoch's own wall time joins from the next epoch's on
        self.epoch_wall_s: list[float] = []

    # ------------------------------------------------------------------ state
    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    def state_dict(self) -> dict[str, Any]:
        state = {
            "model_name": self.model_name,
            "config": config_to_dict(self.config),
            "image_shape": list(self.train_data.image_shape),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": self.epoch,
            "history": self.history,
            "best_value": self.best_value,
            "rng": rng_state(),
            "epoch_wall_s": list(self.epoch_wall_s),
        }
        if self.critic_optimizer is not None:
            state["critic_optimizer"] = self.critic_optimizer.state_dict()
        if self.early_stopping is not None:
            state["early_stopping"] = self.early_stopping.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any], path: Path | str = "checkpoint") -> None:
        require_keys(state, ("model", "optimizer", "epoch", "history", "best_value", "rng"), path)
        if state.get("model_name") != self.model_name:
            raise CheckpointError(
                f"{path} holds a {state.get('model_name')!r} model, "
                f"this trainer trains {self.model_name!r}"
            )
        self._check_resume_config(state, path)
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            if self.critic_optimizer is not None:
                self.critic_optimizer.load_state_dict(state["critic_optimizer"])
            apply_hyperparameters(self.optimizer, self.config.training.optimizer)
            if self.critic_optimizer is not None:
                opt = self.config.training.optimizer
                apply_hyperparameters(self.critic_optimizer, opt, opt.critic_lr, opt.critic_betas)
        except (KeyError, RuntimeError, ValueError) as err:
            raise CheckpointError(
                f"{path} does not match this model's architecture or optimiser: "
                f"{load_error_line(err)}"
            ) from None
        if self.early_stopping is not None:
            # the config check above refused a change of training.early_stopping
            require_keys(state, ("early_stopping",), path)
            self.early_stopping.load_state_dict(state["early_stopping"])
        self.epoch = int(state["epoch"])
        self.history = list(state["history"])
        self.best_value = float(state["best_value"])
        # absent from checkpoints written before the wall times were kept
        self.epoch_wall_s = [float(t) for t in state.get("epoch_wall_s", [])]
        set_rng_state(state["rng"])

    def _check_resume_config(self, state: dict[str, Any], path: Path | str) -> None:
        """Refuse to resume under settings that would change what is trained (ValueError).

        Free changes (epochs, device, logging, evaluation...) pass, the learning rates
        are applied by :meth:`load_state_dict`; any other change (model, network, data,
        batch size, seed, optimiser...) would not apply to the restored state or would
        make the run a different experiment under the same name.
        """
        if "config" not in state:
            raise CheckpointError(f"{path} lacks its config")
        try:
            changes = resume_changes(state["config"], self.config)
        except (TypeError, ValueError, AttributeError) as err:
            raise CheckpointError(f"{path} holds an invalid config: {err}") from None
        if changes["refused"]:
            raise ValueError(
                f"cannot resume {self.run_dir} with changed "
                f"{'setting' if len(changes['refused']) == 1 else 'settings'} "
                f"{', '.join(changes['refused'])}: they change what is trained; drop them, "
                "or start a new run (another --run-dir, or --overwrite). A resumed run may "
                "change training.epochs, training.optimizer.lr / critic_lr, device, logging "
                "and evaluation settings"
            )
        done = int(state.get("epoch", 0))
        if self.config.training.epochs < done:
            raise ValueError(
                f"training.epochs={self.config.training.epochs} but {path} has already "
                f"completed {done} epochs: a resumed run can only train longer"
            )
        for change in changes["applied"]:
            self.log(f"resuming with {change}")

    def resume(self, path: str | Path | None = None) -> bool:
        """Load ``path`` (default: the run's last.pt); False if there is none yet."""
        path = Path(path) if path is not None else self.checkpoint_dir / "last.pt"
        if not path.exists():
            return False
        self.load_state_dict(load_checkpoint(path, map_location=self.device), path)
        self.checkpoint_epoch = self.epoch
        self.log(f"resumed from {path} after epoch {self.epoch}")
        return True

    # ------------------------------------------------------------------ loops
    def _batches(self, n: int, batch_size: int, generator: torch.Generator | None) -> list[Tensor]:
        order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
        return list(order.split(batch_size))

    def _iterate(self, data: ImageDataset, batches: list[Tensor]):
        # page-locked batches let the copy to the GPU overlap the previous step
        pin = self.config.training.pin_memory and self.device.type == "cuda"
        if self.config.training.num_workers > 0:
            loader = torch.utils.data.DataLoader(
                data,
                batch_sampler=[b.tolist() for b in batches],
                num_workers=self.config.training.num_workers,
                pin_memory=pin,
                persistent_workers=False,
            )
            for images, labels in loader:
                yield self._on_device(images), labels
        else:
            if data.device is not None and data.device != torch.device("cpu") and batches:
                # the dataset lives on the device: one copy of the whole order, split there
                sizes = [len(b) for b in batches]
                batches = list(torch.cat(batches).to(data.device).split(sizes))
                pin = False  # its batches are on the device already
            for indices in batches:
                images, labels = data.get_batch(indices)
                if pin:
                    images = images.pin_memory()
                yield self._on_device(images), labels

    def _on_device(self, images: Tensor) -> Tensor:
        """A batch on the training device, in the training layout (4-D images only)."""
        layout = self.memory_format if images.dim() == 4 else torch.preserve_format
        return images.to(self.device, non_blocking=True, memory_format=layout)

    def _autocast(self):
        """bf16 autocast of the networks if ``training.precision`` asks for it.

        The models compute their losses and OT regularisers in float32 inside it
        (``otae.models.base.full_precision``).
        """
        return torch.autocast(
            self.device.type, dtype=torch.bfloat16, enabled=self.config.training.precision == "bf16"
        )

    def _objective_runner(self, objective: nn.Module):
        """``run(x, generator, kind, critic_step) -> terms``: compiled whole
        (``training.compile``, one process) or eager, input checks off either way."""
        cfg = self.config.training
        if cfg.compile and self.world_size == 1:
            return CompiledObjective(objective, self._autocast, cfg.compile_backend,
                                     cfg.compile_mode)

        def run(x, generator, kind, critic_step=0):
            with input_checks(False), self._autocast():
                return objective(x, generator, kind, critic_step)

        return run

    def backward(
        self, x: Tensor, generator: torch.Generator, kind: str = "loss", critic_step: int = 0
    ) -> tuple[dict[str, Tensor], Tensor]:
        """Objective ``kind`` (loss, critic, reconstruction) on this rank's rows ``x`` and its
        backward pass (gradients averaged over ranks). Returns the terms and a 0-dim bool
        device tensor: whether the objective and every gradient were finite on every rank.

        No host synchronisation: the regularisers' input checks are off (the config was
        validated, the hot path must not wait for the device) and finiteness is a device
        flag (:attr:`_last_found_inf`, 1.0 when not finite) that the optimiser step obeys.
        """
        terms = self._runner(x, generator, kind, critic_step)
        total = terms["total"]
        total.backward()
        found_inf = (~torch.isfinite(total.detach())).float()
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        if grads:  # GradScaler's fused check (grads scaled by 1: unchanged)
            torch._amp_foreach_non_finite_check_and_unscale_(grads, found_inf, self._unit_scale)
        if self.model.shards.active:  # not while one rank works alone (local_batches)
            distributed.any_rank_(found_inf)
        self._last_found_inf = found_inf
        return terms, found_inf == 0

    @property
    def last_step_finite(self) -> bool:
        """Whether the last step's objective and gradients were finite (a host sync)."""
        return not bool(self._last_found_inf > 0)

    def step(
        self, x: Tensor, generator: torch.Generator, regularise: bool = True
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """One optimisation step on batch ``x``: the critic's steps (if any), then the model's.

        ``regularise=False`` takes a plain autoencoder step instead (reconstruction
        only, no critic): the baseline of :meth:`regulariser_share`. A step whose
        objective or gradients are not finite is skipped on the device, and so is every
        later step until :attr:`divergence` is reset (the caller reports it:
        :meth:`train_epoch` at its logging points).
        """
        critic_terms: dict[str, Tensor] = {}
        if self.critic_optimizer is not None and regularise:
            for critic_step in range(self.model.config.n_critic):
                self.critic_optimizer.zero_grad(set_to_none=True)
                critic_terms, _ = self.backward(x, generator, "critic", critic_step)
                # a bad critic step is skipped alone, as before: the model's step decides
                self._update(self.critic_optimizer,
                             torch.maximum(self._last_found_inf, self.divergence.flag))
        self.optimizer.zero_grad(set_to_none=True)
        terms, _ = self.backward(x, generator, "loss" if regularise else "reconstruction")
        self._update(self.optimizer, self.divergence.update(self._last_found_inf, terms))
        self.model.end_of_batch()
        return terms, critic_terms

    @staticmethod
    def _update(optimizer: torch.optim.Optimizer, skip: Tensor) -> None:
        """``optimizer.step()`` unless the device flag ``skip`` (0-dim, 0 or 1) is set.

        Fused Adam takes the flag as its ``found_inf`` input (no update, no state change,
        no host sync). Optimisers without it (RMSprop) get zero gradients instead, which
        leaves the weights unchanged when there is no weight decay or momentum (otae's
        RMSprop has no momentum); with weight decay the flag is read on the host.
        """
        if optimizer.defaults.get("fused"):
            optimizer.found_inf = skip
            optimizer.step()
            return
        if any(group.get("weight_decay") or group.get("momentum")
               for group in optimizer.param_groups):
            if not bool(skip > 0):
                optimizer.step()
            return
        keep = skip == 0
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.grad = torch.where(keep, p.grad, 0.0)
        optimizer.step()

    def regulariser_share(self, n_steps: int = 10, n_warmup: int = 2) -> dict[str, float]:
        """Seconds per training step with and without the regulariser, same model and batch.

        Runs on a copy of the model and optimisers (the run is not disturbed) on one
        training batch, as ``n_steps`` pairs of a full step and a reconstruction-only
        step, the order alternating between pairs so that neither kind always runs
        first. Reports the fastest of each kind (the least disturbed by other load)
        and ``regulariser_share``: the median paired difference ``t_full_i - t_ae_i`` of
        each order, averaged over the two orders, over the median full step. Paired
        differences cancel the slow drifts of a shared machine that make
        ``1 - min t_ae / min t_full`` (``regulariser_share_min``) noisy; balancing the
        orders cancels a cost that always falls on the first (or second) step of a pair.
        """
        import statistics

        cfg = self.config.training
        probe = self._profiling_copy()
        gen = torch.Generator(device=self.device).manual_seed(derived_seed(cfg.seed, 0, 5))
        batch = torch.arange(min(cfg.batch_size, len(self.train_data)))
        x, _ = next(probe._iterate(self.train_data, [batch]))
        times: dict[bool, list[float]] = {True: [], False: []}
        # one process alone: the copy's collectives are off
        with local_batches(probe.model):
            for i in range(n_warmup + n_steps):
                for regularise in (True, False) if i % 2 == 0 else (False, True):
                    _synchronize(self.device)
                    start = time.perf_counter()
                    probe.step(x, gen, regularise)
                    _synchronize(self.device)
                    if i >= n_warmup:
                        times[regularise].append(time.perf_counter() - start)
        with_reg, without = min(times[True]), min(times[False])
        paired = [a - b for a, b in zip(times[True], times[False], strict=True)]
        # pairs run in both orders; the median of each order's differences, averaged,
        # cancels a cost that falls on whichever step of a pair runs first (or second)
        by_order = [statistics.median(paired[order::2]) for order in (0, 1) if paired[order::2]]
        typical = statistics.median(times[True])
        quartiles = statistics.quantiles(paired, n=4) if len(paired) > 1 else [paired[0]] * 3
        return {
            "step_time_s": with_reg,
            "step_time_without_regulariser_s": without,
            "regulariser_share": statistics.fmean(by_order) / typical,
            # the spread of the paired differences: how noisy the machine was
            "regulariser_share_quartiles": [q / typical for q in (quartiles[0], quartiles[2])],
            "regulariser_share_min": 1.0 - without / with_reg,
            "step_times_s": times[True],
            "step_times_without_regulariser_s": times[False],
        }

    def _profiling_copy(self) -> Trainer:
        """A throw-away trainer on a copy of the model, with fresh optimisers, as one
        process, with no logging, validation split or evaluation callbacks: what
        :meth:`regulariser_share` times, so the run itself is never touched."""
        import copy
        import dataclasses

        training = dataclasses.replace(
            self.config.training,
            early_stopping=dataclasses.replace(self.config.training.early_stopping,
                                               enabled=False),
            loggers=[], progress=False, tensorboard=False,
        )  # fmt: skip
        config = dataclasses.replace(
            self.config,
            training=training,
            evaluation=dataclasses.replace(self.config.evaluation, disentanglement_every=0),
        )
        probe = Trainer.__new__(Trainer)
        probe._setup(config, self.run_dir, self.train_data, self.test_data,
                     lambda device: copy.deepcopy(self.model).to(device).train(),
                     model_name=self.model_name, log=lambda message: None, callbacks=[],
                     world=(1, 0), own_networks=self._own_networks)  # fmt: skip
        return probe

    def epoch_batches(self, epoch: int) -> list[Tensor]:
        """This rank's batches of epoch ``epoch``: its rows of each global batch."""
        sampler = EpochSampler(
            len(self.train_data), self.world_size, self.rank, self.config.training.seed
        )
        sampler.set_epoch(epoch)
        local_batch = self.config.training.batch_size // self.world_size
        return list(torch.tensor(list(sampler), dtype=torch.long).split(local_batch))

    def noise_generator(self, epoch: int) -> torch.Generator:
        """The epoch's noise (reparameterisation, prior samples, projections).

        Seeded alike on every rank, as the global-batch regularisers require; in
        ``per_rank`` mode each rank draws its own (independent small-batch estimates).
        """
        stream = STREAM_TRAIN
        if self.model.shards.active and not self.model.shards.gathers:
            stream += 16 * self.rank
        return torch.Generator(device=self.device).manual_seed(
            derived_seed(self.config.training.seed, epoch, stream)
        )

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One epoch; returns the mean loss terms over the global batches (all ranks)."""
        gen = self.noise_generator(epoch)
        batches = self.epoch_batches(epoch)
        self.model.train()
        sums: dict[str, Tensor] = {}
        seen = 0
        callbacks = self.callbacks
        callbacks.on_epoch_start(self, epoch, len(batches))
        self.divergence.reset()
        try:
            for step, (x, _) in enumerate(self._iterate(self.train_data, batches)):
                terms, critic_terms = self.step(x, gen)
                for key, value in critic_terms.items():
                    key = key if key.startswith("critic") else f"critic_{key}"
                    sums[key] = sums.get(key, 0) + value.detach() * len(x)
                for key, value in terms.items():
                    sums[key] = sums.get(key, 0) + value.detach() * len(x)
                seen += len(x)
                # logging points are the only host syncs of the loop: divergence first,
                # so that no callback reads the terms of a diverged step
                if callbacks.syncs_at(step) or (step + 1) % DIVERGENCE_CHECK_EVERY == 0:
                    self._check_divergence(epoch)
                callbacks.on_step_end(self, epoch, step, terms)
            self._check_divergence(epoch)
        finally:
            callbacks.on_train_epoch_end(self, epoch)
        # each rank's terms are its share; their average over ranks is the global value
        keys = list(sums)
        totals = distributed.sum_over_ranks(
            torch.stack([torch.as_tensor(sums[k], device=self.device).float() for k in keys])
        )
        seen *= self.world_size
        return {f"train_{k}": float(v) / seen for k, v in zip(keys, totals.tolist(), strict=True)}

    def _check_divergence(self, epoch: int) -> None:
        """Raise :class:`NonFiniteLossError` if a step of this epoch was not finite."""
        if not self.divergence.diverged():
            return
        batch, values = self.divergence.report()
        what = f"loss is not finite ({values})"
        broken = self._nonfinite_modules()
        if broken:
            what += f"; the {' and '.join(broken)} parameters are no longer finite"
        raise NonFiniteLossError(
            f"training diverged at epoch {epoch}, batch {batch}: {what}; {DIVERGENCE_FIX}"
        )

    def _nonfinite_modules(self) -> list[str]:
        """Which of encoder, decoder, prior, critic hold NaN/Inf weights (host syncs)."""
        names = []
        for name in ("encoder", "decoder", "prior", "critic"):
            module = getattr(self.model, name, None)
            if module is not None and any(
                not bool(torch.isfinite(p).all()) for p in module.parameters()
            ):
                names.append(name)
        return names

    def evaluate(self, data: ImageDataset | None = None, prefix: str = "test") -> dict[str, float]:
        """Held-out loss terms (fixed noise) and the reconstruction metric (posterior means),
        named ``{prefix}_*`` (the validation split's: ``val``)."""
        data = data or self.test_data
        cfg = self.config.training
        gen = torch.Generator(device=self.device).manual_seed(
            derived_seed(cfg.seed, 0, STREAM_TEST)
        )
        was_training = self.model.training
        self.model.eval()
        sums: dict[str, float] = {}
        sse_sum = 0.0
        n = len(data)
        # evaluation is one process's work (rank 0 in a parallel run): no collectives
        with local_batches(self.model):
            try:
                for x, _ in self._iterate(data, self._batches(n, cfg.eval_batch_size, None)):
                    # Not under no_grad: some regularisers search directions by autograd.
                    terms = self.model.loss(x, gen)
                    for key, value in terms.items():
                        sums[key] = sums.get(key, 0.0) + float(value.detach()) * len(x)
                    with torch.no_grad():
                        sse = (self.model.reconstruct(x) - x).pow(2).flatten(1).sum(1)
                    sse_sum += float(sse.sum())
            finally:
                self.model.train(was_training)
        pixels = math.prod(data.image_shape)
        metrics = {f"{prefix}_{k}": v / n for k, v in sums.items()}
        metrics[f"{prefix}_rec_loss"] = sse_sum / n
        metrics[f"{prefix}_mse_per_pixel"] = sse_sum / (n * pixels)
        return metrics

    # ------------------------------------------------------------------ driver
    def fit(
        self, resume: bool = False, deadline: float | None = None, *, teardown: bool = True
    ) -> list[dict[str, float]]:
        """Train the remaining epochs; returns the per-epoch history (rank 0's: complete).

        ``deadline`` (a ``time.time()`` value) stops training at the last epoch boundary
        before it: an epoch is started only if the mean wall time of an epoch so far,
        its evaluation and checkpoints included, says it ends in time (the first one
        always starts). The checkpoints are those of the last finished epoch, so the run
        continues later with ``resume``. Under torchrun the ranks stop together (rank 0
        alone keeps the history that decides).

        The callbacks get ``on_fit_start`` ... ``on_fit_end`` (or ``on_exception``, and the
        error propagates), then ``teardown`` unless ``teardown=False``: the caller then
        calls :meth:`teardown` itself, after whatever it still reports to them
        (:func:`otae.experiment.run_experiment` does so for the final metrics).
        """
        if self.is_main and self._run_lock is None:
            # before anything is read or written: one process trains in a run directory
            self._run_lock = FolderLock(self.run_dir, "run directory").acquire()
        try:
            if resume and not self.resume():
                self.log(f"no checkpoint in {self.checkpoint_dir}: starting from scratch")
            if self.is_main:
                for stale in remove_stale_temporaries(self.checkpoint_dir):
                    self.log(f"removed {stale.name}, left by a checkpoint write that was killed")
                save_config(self.config, self.run_dir / "config.yaml")
        except BaseException:
            self._release_run_lock()
            raise
        cfg = self.config.training
        try:
            self.callbacks.on_fit_start(self)
            if self.early_stopping is not None and self.early_stopping.stopped:
                self.log(
                    f"early stopping ended this run after epoch {self.early_stopping.stopped_epoch}"
                    ": nothing left to train"
                )
            for epoch in range(self.epoch + 1, cfg.epochs + 1):
                if self.early_stopping is not None and self.early_stopping.stopped:
                    break
                if not self._time_for_an_epoch(deadline):
                    self.log(
                        f"time limit: stopped after epoch {self.epoch} of {cfg.epochs}; "
                        "resuming the run continues from there"
                    )
                    break
                start = time.perf_counter()
                row: dict[str, float] = {"epoch": epoch}
                row.update(self.train_epoch(epoch))
                row["epoch_time_s"] = time.perf_counter() - start
                self.epoch = epoch
                failure: Exception | None = None
                if self.is_main:
                    try:
                        self._end_epoch(row, self.callbacks)
                    except Exception as err:  # re-raised after the vote
                        failure = err
                # the other ranks wait while rank 0 evaluates and writes checkpoints; the
                # wait is a vote, so a failure there stops every rank at once instead of
                # leaving them in a collective with a peer that has gone
                if not distributed.all_ranks_true(failure is None, self.device):
                    if failure is not None:
                        raise failure
                    raise distributed.RunStoppedOnAnotherRank(
                        f"rank 0 stopped the run at the end of epoch {epoch}; its error says why"
                    )
                self.epoch_wall_s.append(time.perf_counter() - start)
                if self.early_stopping is not None and self._stop_early():
                    break
            self.callbacks.on_fit_end(self)
        except NonFiniteLossError as err:
            error = NonFiniteLossError(f"{err}; {self._recovery_hint()}")
            self.notify_failure(error, teardown)
            raise error from None
        except BaseException as err:
            self.notify_failure(err, teardown)
            raise
        if teardown:
            self.teardown()
        return self.history

    def notify_failure(self, err: BaseException, teardown: bool = False) -> None:
        """Tell the callbacks that the run failed with ``err`` (which the caller re-raises),
        then tear them down if ``teardown``.

        An error of a callback here is not raised: it would hide ``err``, the reason the
        run stopped; it is logged instead.
        """
        try:
            self.callbacks.on_exception(self, err)
        except Exception as hook_err:
            self.log(f"warning: a callback failed while the run stopped: {hook_err!r}")
        if teardown:
            try:
                self.teardown()
            except Exception as hook_err:
                self.log(f"warning: a callback failed while the run stopped: {hook_err!r}")

    def teardown(self) -> None:
        """The callbacks' last call (:meth:`fit` makes it unless ``teardown=False``); once.
        Also releases the run directory, which :meth:`fit` locked against other processes."""
        try:
            self.callbacks.teardown(self)
        finally:
            self._release_run_lock()

    def _release_run_lock(self) -> None:
        if self._run_lock is not None:
            self._run_lock.release()
            self._run_lock = None

    def _stop_early(self) -> bool:
        """Whether early stopping ends the run now: rank 0 decides (it alone evaluates)."""
        stopped = self.is_main and self.early_stopping.stopped
        if not distributed.all_ranks_true(not stopped, self.device):
            self.early_stopping.stopped_epoch = self.epoch  # the other ranks learn it here
            return True
        return False

    def restore_best(self) -> int | None:
        """Load ``best.pt``'s weights into the model; its epoch (None: no best.pt yet).

        The final model of a run with early stopping: the metrics and the report at the
        end of ``otae train`` describe it, not the last epoch's weights.
        """
        path = self.checkpoint_dir / "best.pt"
        if not path.exists():
            return None
        state = load_checkpoint(path, map_location=self.device)
        require_keys(state, ("model", "epoch"), path)
        self.model.load_state_dict(state["model"])
        return int(state["epoch"])

    def _time_for_an_epoch(self, deadline: float | None) -> bool:
        """Whether one more epoch ends by ``deadline``, at the mean wall time of the epochs
        so far (evaluation and checkpoints included: on a shapes_fine run with the
        disentanglement curve they add half the training time); before any wall time is
        known (a resume after one epoch, an older checkpoint), at the history's mean
        training time."""
        if deadline is None:
            return True
        times = self.epoch_wall_s or [
            row["epoch_time_s"] for row in self.history if "epoch_time_s" in row
        ]
        fits = not times or time.time() + sum(times) / len(times) <= deadline
        return distributed.all_ranks_true(fits, self.device)

    def _recovery_hint(self) -> str:
        """What is kept after a divergence and how to go on (for the error message)."""
        run = self.run_dir
        if self.checkpoint_epoch is None:
            return (
                "no epoch completed, so there is no checkpoint to keep; "
                f"`otae train {run} training.optimizer.lr=<lower>` starts the run again"
            )
        return (
            f"the checkpoints of epoch {self.checkpoint_epoch} are kept in {run / 'checkpoints'}; "
            f"continue from there with `otae train {run} training.optimizer.lr=<lower>`"
        )

    def _end_epoch(self, row: dict[str, float], callbacks: CallbackList) -> None:
        """Held-out evaluation (with the callbacks' columns), history, checkpoints, then
        the callbacks (rank 0).

        An epoch whose last updates left the model non-finite (its held-out loss is NaN
        or Inf) raises :class:`NonFiniteLossError` here, before anything is written: the
        previous epoch's checkpoints stay as they were. The callbacks' ``on_epoch_end``
        (history.csv, TensorBoard, the epoch's line...) comes after the checkpoints, so a
        callback that raises stops the run with this epoch saved.
        """
        epoch = self.epoch
        try:
            metrics = self.evaluate()
            if self.val_data is not None:
                metrics.update(self.evaluate(self.val_data, prefix="val"))
            reason = ""
        except NonFiniteInputError as err:
            metrics = {}
            reason = f"codes or prior parameters are no longer finite ({err}, in evaluation)"
        checked = {k: metrics[k] for k in ("test_total", "test_rec_loss") if k in metrics}
        if reason or not all(math.isfinite(v) for v in checked.values()):
            values = ", ".join(f"{k}={v:.4g}" for k, v in checked.items())
            raise NonFiniteLossError(
                f"training diverged at epoch {epoch}, after its last batch: "
                f"{reason or f'held-out loss is not finite ({values})'}; {DIVERGENCE_FIX}"
            )
        row.update(metrics)
        # the callbacks' columns (the disentanglement curve): in the row before early
        # stopping reads it and the checkpoints save it with the history
        row.update(callbacks.on_evaluate(self, epoch))
        if self.early_stopping is not None:
            # decided before the checkpoints, which hold its state (and best.pt its best)
            improved = self.early_stopping.update(epoch, row)
            stopping = self.early_stopping.stopped
        else:
            improved = row.get("test_total", math.inf) < self.best_value
            if improved:
                self.best_value = row["test_total"]
            stopping = False
        self.history.append(row)
        if improved:
            save_checkpoint(self.state_dict(), self.checkpoint_dir / "best.pt")
        cfg = self.config.training
        # the stopping epoch always: a resumed run must find the run stopped there
        if epoch % cfg.checkpoint_every == 0 or epoch == cfg.epochs or stopping:
            save_checkpoint(self.state_dict(), self.checkpoint_dir / "last.pt")
            self.checkpoint_epoch = epoch
        callbacks.on_epoch_end(self, epoch, row)


def _qualified_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


