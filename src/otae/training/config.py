"""Typed experiment configs, read from YAML with inheritance and ``key=value`` overrides.

A config file is a mapping with the sections of :class:`ExperimentConfig`. It
may start with ``base: other.yaml`` (a path relative to the file, or the name
of a shipped config): the base is loaded first and this file's keys are merged
over it recursively. Overrides from the command line use dotted keys whose
values are parsed as YAML (``training.epochs=3``, ``network.options.channels=[16,32]``).
Every unknown key is an error that names it.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ..models import ModelConfig, model_config_from_dict
from ..parallel import REGULARISER_MODES
from ..typed_config import from_dict, to_dict


@dataclass
class DataConfig:
    #: dataset name (see ``otae list``): mnist, idx, celeba, image_folder
    name: str = "mnist"
    #: folder with the data files; None uses the embedded MNIST
    root: str | None = None
    #: keep only the first n training / test examples (None: all)
    train_subset: int | None = None
    test_subset: int | None = None
    #: resize images to this side length (image_folder / celeba); None: dataset default
    image_size: int | None = None


@dataclass
class NetworkConfig:
    #: paper_mnist, paper_celeba, small_conv or mlp (see ``otae list``)
    architecture: str = "small_conv"
    #: keyword options of the architecture (e.g. channels: [32, 64])
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class OptimizerConfig:
    #: adam or rmsprop
    name: str = "adam"
    lr: float = 1e-3
    #: Adam's betas (the paper uses (0.5, 0.999))
    betas: tuple[float, float] = (0.5, 0.999)
    weight_decay: float = 0.0
    #: learning rate of the adversarial critic (GWAE); None: same as lr
    critic_lr: float | None = None


#: inductor's modes (torch.compile(mode=...)); "default" passes none
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


#: W&B's run modes (wandb.init(mode=...))
WANDB_MODES = ("offline", "online", "disabled")

#: validation metrics every model's evaluation produces (``val_`` + a loss term, or
#: ``val_rec_loss`` / ``val_mse_per_pixel`` of the posterior means); a model's extra loss
#: terms (GWAE's ``val_w_bound``...) are known only once its first epoch is evaluated
VALIDATION_METRICS = (
    "val_total", "val_reconstruction", "val_regulariser", "val_rec_loss", "val_mse_per_pixel",
)


@dataclass
class EarlyStoppingConfig:
    """Stop when a validation metric has not improved for ``patience`` epochs.

    The validation rows are carved out of the training set (the model does not train on
    them); ``training.epochs`` is then the upper bound, and the final metrics are those
    of ``best.pt``, the epoch with the best monitored value (otae.training.callbacks).
    """

    #: off by default: no validation split, best.pt by the test loss, as without the block
    enabled: bool = False
    #: epochs without improvement before stopping (the GWAE authors use 10)
    patience: int = 10
    #: a validation column of history.csv: val_total, val_rec_loss, val_regulariser, ...
    monitor: str = "val_total"
    #: min (lower is better) or max
    mode: str = "min"
    #: an improvement must beat the best value by more than this
    min_delta: float = 0.0
    #: fraction of the training set held out as the validation split
    validation_fraction: float = 0.1
    #: seeds the split alone: the same rows whatever training.seed is
    validation_seed: int = 0


@dataclass
class TrainingConfig:
    epochs: int = 50
    #: the global batch: under torchrun each of W processes holds batch_size / W rows
    batch_size: int = 100
    seed: int = 0
    #: auto (CUDA when available), cpu, cuda, cuda:1, ...
    device: str = "auto"
    #: torch.use_deterministic_algorithms (bit-reproducible runs, slower on GPU)
    deterministic: bool = False
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    #: write last.pt every this many epochs (best.pt whenever the test loss improves, or
    #: with early_stopping the monitored validation metric)
    checkpoint_every: int = 1
    eval_batch_size: int = 500
    #: DataLoader workers for datasets read from disk (0: load in the main process)
    num_workers: int = 0
    #: page-locked host batches for asynchronous copies to CUDA (ignored on CPU)
    pin_memory: bool = True
    #: fp32, or bf16 (autocast of the networks; losses and OT terms stay in float32)
    precision: str = "fp32"
    #: torch.compile the whole training objective (networks and regulariser, forward and
    #: backward) as one graph per objective; checkpoints are unchanged (otae.training.compiled)
    compile: bool = False
    #: the torch.compile backend: inductor, or eager / aot_eager / any registered backend
    compile_backend: str = "inductor"
    #: inductor's mode: default, reduce-overhead (CUDA graphs), max-autotune,
    #: max-autotune-no-cudagraphs
    compile_mode: str = "default"
    #: keep in-memory datasets (MNIST...) on the CUDA device and index them there
    data_on_device: bool = True
    #: under torchrun, batch-level regularisers see the global batch (exact) or each
    #: process's rows only (per_rank: no gathering, a different, noisier objective)
    regulariser_mode: str = "global"
    progress: bool = True
    tensorboard: bool = True
    #: external experiment trackers, off by default: any of wandb, mlflow
    #: (otae.training.callbacks; pip install otae[wandb] / otae[mlflow])
    loggers: list[str] = field(default_factory=list)
    #: the W&B project, and W&B's mode: offline (written under the run directory,
    #: uploaded later by `wandb sync`), online or disabled
    wandb_project: str = "otae"
    wandb_mode: str = "offline"
    #: the MLflow tracking URI; None: a local file store at <run dir>/mlruns
    mlflow_tracking_uri: str | None = None
    #: the MLflow experiment; None: the config's name
    mlflow_experiment: str | None = None
    #: stop on a held-out validation split (off by default; see EarlyStoppingConfig)
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)


@dataclass
class EvaluationConfig:
    #: 2-D projection of the latent plot: pca or tsne
    latent_method: str = "pca"
    latent_points: int = 2000
    n_samples: int = 64
    n_per_component: int = 10
    report: bool = True
    #: training steps timed with and without the regulariser after training (0: skip)
    timing_steps: int = 10
    #: generated/test images for the classifier Fréchet distance (MNIST-like data; 0: skip)
    classifier_fd_samples: int = 0
    #: generated/test images for FID with Inception-v3 (needs otae[fid]; 0: skip)
    fid_samples: int = 0
    #: cluster the test codes (k-means and the model's mixture prior) against the labels:
    #: ACC / NMI / ARI in metrics.json (false: skip)
    clustering: bool = True
    #: the disentanglement curve (data with known factors: shapes, shapes_fine): every this
    #: many epochs, and at the last, score the codes of a fixed set of images into the
    #: history (val_mig / test_mig, ...; otae.training.callbacks.DisentanglementCurve); 0: off
    disentanglement_every: int = 0
    #: the curve's images: the first this many of the validation split (with
    #: training.early_stopping) or else of the test set
    disentanglement_curve_points: int = 5000
    #: the curve's scores: mig, dci (DCI disentanglement: ~13 s for 7560 codes on a CPU)
    disentanglement_curve_metrics: list[str] = field(default_factory=lambda: ["mig", "dci"])


@dataclass
class ExperimentConfig:
    name: str = "run"
    #: runs are written to output_dir/name unless a run directory is given
    output_dir: str = "runs"
    model: ModelConfig = field(default_factory=ModelConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    data: DataConfig = field(default_factory=DataConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)

    def validate(self) -> None:
        self.model.validate()
        t = self.training
        for name in ("epochs", "batch_size", "checkpoint_every", "eval_batch_size"):
            if getattr(t, name) < 1:
                raise ValueError(f"training.{name} must be >= 1, got {getattr(t, name)}")
        if not -(2**63) <= t.seed < 2**63:
            raise ValueError(f"training.seed must fit in 64 bits, got {t.seed}")
        if t.num_workers < 0:
            raise ValueError(f"training.num_workers must be >= 0, got {t.num_workers}")
        if t.precision not in ("fp32", "bf16"):
            raise ValueError(f"training.precision must be 'fp32' or 'bf16', got {t.precision!r}")
        if t.compile_mode not in COMPILE_MODES:
            raise ValueError(
                f"training.compile_mode must be one of {', '.join(COMPILE_MODES)}, "
                f"got {t.compile_mode!r}"
            )
        if t.compile_mode != "default" and t.compile_backend != "inductor":
            raise ValueError(
                f"training.compile_mode={t.compile_mode!r} is an option of the inductor "
                f"backend, not of training.compile_backend={t.compile_backend!r}"
            )
        if t.regulariser_mode not in REGULARISER_MODES:
            raise ValueError(
                f"training.regulariser_mode must be one of {', '.join(REGULARISER_MODES)}, "
                f"got {t.regulariser_mode!r}"
            )
        from .callbacks import EXTERNAL_LOGGERS

        for logger in t.loggers:
            if logger not in EXTERNAL_LOGGERS:
                raise ValueError(
                    f"training.loggers: unknown logger {logger!r}; choose from "
                    f"{', '.join(EXTERNAL_LOGGERS)} (progress, history.csv, TensorBoard and "
                    "console lines are always on, see training.progress / training.tensorboard)"
                )
        if len(set(t.loggers)) != len(t.loggers):
            raise ValueError(f"training.loggers lists a logger twice: {t.loggers}")
        if t.wandb_mode not in WANDB_MODES:
            raise ValueError(
                f"training.wandb_mode must be one of {', '.join(WANDB_MODES)}, "
                f"got {t.wandb_mode!r}"
            )
        if not t.wandb_project:
            raise ValueError("training.wandb_project must not be empty")
        if t.optimizer.name not in ("adam", "rmsprop"):
            raise ValueError(
                f"training.optimizer.name must be 'adam' or 'rmsprop', got {t.optimizer.name!r}"
            )
        opt = t.optimizer
        for name in ("lr", "critic_lr"):
            value = getattr(opt, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"training.optimizer.{name} must be finite and > 0, got {value}")
        if not (math.isfinite(opt.weight_decay) and opt.weight_decay >= 0):
            raise ValueError(
                f"training.optimizer.weight_decay must be finite and >= 0, got {opt.weight_decay}"
            )
        if not all(0.0 <= b < 1.0 for b in opt.betas):
            raise ValueError(
                f"training.optimizer.betas must both lie in [0, 1), got {list(opt.betas)}"
            )
        _validate_early_stopping(t.early_stopping)
        if self.evaluation.latent_method not in ("pca", "tsne"):
            raise ValueError(
                "evaluation.latent_method must be 'pca' or 'tsne', "
                f"got {self.evaluation.latent_method!r}"
            )
        for name in ("timing_steps", "classifier_fd_samples", "fid_samples",
                     "disentanglement_every"):
            if getattr(self.evaluation, name) < 0:
                raise ValueError(
                    f"evaluation.{name} must be >= 0, got {getattr(self.evaluation, name)}"
                )
        _validate_disentanglement_curve(self.evaluation, t.early_stopping)
        for name in ("train_subset", "test_subset", "image_size"):
            value = getattr(self.data, name)
            if value is not None and value < 1:
                raise ValueError(f"data.{name} must be >= 1 or null, got {value}")


def _validate_early_stopping(es: EarlyStoppingConfig) -> None:
    where = "training.early_stopping"
    if es.patience < 1:
        raise ValueError(f"{where}.patience must be >= 1 (epochs without improvement), "
                         f"got {es.patience}")
    if es.mode not in ("min", "max"):
        raise ValueError(f"{where}.mode must be 'min' or 'max', got {es.mode!r}")
    if not (math.isfinite(es.min_delta) and es.min_delta >= 0):
        raise ValueError(f"{where}.min_delta must be finite and >= 0, got {es.min_delta}")
    if not (math.isfinite(es.validation_fraction) and 0 < es.validation_fraction < 1):
        raise ValueError(
            f"{where}.validation_fraction must lie strictly between 0 and 1, "
            f"got {es.validation_fraction}"
        )
    if not -(2**63) <= es.validation_seed < 2**63:
        raise ValueError(f"{where}.validation_seed must fit in 64 bits, got {es.validation_seed}")
    # any val_ column may be a model's extra loss term, checked after the first epoch
    if not es.monitor.startswith("val_") or es.monitor == "val_":
        raise ValueError(
            f"{where}.monitor={es.monitor!r} is not a validation metric; available: "
            f"{', '.join(VALIDATION_METRICS)} (or val_<term> for a model's other loss terms, "
            "val_mig / val_dci_disentanglement with evaluation.disentanglement_every=1)"
        )


def _validate_disentanglement_curve(ev: EvaluationConfig, es: EarlyStoppingConfig) -> None:
    from .callbacks import CURVE_METRICS

    metrics = ev.disentanglement_curve_metrics
    unknown = [m for m in metrics if m not in CURVE_METRICS]
    if unknown or not metrics or len(set(metrics)) != len(metrics):
        raise ValueError(
            f"evaluation.disentanglement_curve_metrics must list some of "
            f"{', '.join(CURVE_METRICS)}, each once, got {metrics}"
        )
    if ev.disentanglement_curve_points < 2:
        raise ValueError(
            "evaluation.disentanglement_curve_points must be >= 2, "
            f"got {ev.disentanglement_curve_points}"
        )
    # early stopping may watch a score of the curve on the validation split: only if the
    # curve measures it at every epoch (patience counts epochs), and only upwards
    by_column = {f"val_{column}": name for name, column in CURVE_METRICS.items()}
    name = by_column.get(es.monitor)
    if not es.enabled or name is None:
        return
    if ev.disentanglement_every != 1 or name not in metrics:
        raise ValueError(
            f"training.early_stopping.monitor={es.monitor!r} needs the disentanglement curve "
            f"at every epoch: evaluation.disentanglement_every=1 (got "
            f"{ev.disentanglement_every}) and {name} in evaluation.disentanglement_curve_metrics "
            f"(got {metrics})"
        )
    if es.mode != "max":
        raise ValueError(
            f"training.early_stopping.monitor={es.monitor!r} is a score (higher is better): "
            "set training.early_stopping.mode=max"
        )


SECTIONS = {
    "network": NetworkConfig,
    "data": DataConfig,
    "training": TrainingConfig,
    "evaluation": EvaluationConfig,
}


def config_from_dict(values: dict[str, Any]) -> ExperimentConfig:
    """Typed, validated config from a plain mapping; unknown keys raise ``ValueError``."""
    if not isinstance(values, dict):
        raise ValueError(f"a config must be a mapping of sections, got {type(values).__name__}")
    values = dict(values)
    values.pop("base", None)
    model_values = values.pop("model", None)
    if model_values is None:
        raise ValueError("the config has no 'model' section (it needs at least model.name)")
    if not isinstance(model_values, dict):
        raise ValueError(f"model: expected a mapping (name: ..., ...), got {model_values!r}")
    model = model_config_from_dict(dict(model_values))
    config = from_dict(ExperimentConfig, values)
    config.model = model
    config.validate()
    return config


def config_to_dict(config: ExperimentConfig) -> dict[str, Any]:
    return to_dict(config)


# ---------------------------------------------------------------------- resume
#: Settings a resumed run may change: they do not change what has been trained (how
#: long to go on, where and how fast it runs, what is logged and evaluated).
#: ``training.early_stopping`` is not among them: its split decides the training rows,
#: and its other fields the epoch a run stops at and what best.pt holds.
RESUME_FREE = (
    "name",
    "output_dir",
    "evaluation",
    "training.epochs",
    "training.device",
    "training.deterministic",
    "training.checkpoint_every",
    "training.eval_batch_size",
    "training.num_workers",
    "training.pin_memory",
    "training.compile",
    "training.compile_backend",
    "training.compile_mode",
    "training.data_on_device",
    "training.progress",
    "training.tensorboard",
    "training.loggers",
    "training.wandb_project",
    "training.wandb_mode",
    "training.mlflow_tracking_uri",
    "training.mlflow_experiment",
)
#: Settings a resumed run applies to its restored optimisers from the next step on.
RESUME_APPLIED = ("training.optimizer.lr", "training.optimizer.critic_lr")


def _flatten(values: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(values, dict) or (prefix and not values):
        return {prefix: values}
    flat: dict[str, Any] = {}
    for key, value in values.items():
        flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def _under(key: str, prefixes: tuple[str, ...]) -> bool:
    return any(key == p or key.startswith(f"{p}.") for p in prefixes)


def resume_changes(saved: ExperimentConfig, new: ExperimentConfig) -> dict[str, list[str]]:
    """The settings in which ``new`` differs from the config a run was trained with.

    Returns ``{"free": [...], "applied": [...], "refused": [...]}``, each a list of
    ``"key (old -> new)"``: ``free`` changes (:data:`RESUME_FREE`) do not change what
    was trained, ``applied`` ones (:data:`RESUME_APPLIED`, the learning rates) are
    set on the restored optimisers, ``refused`` ones (model, network, data, objective,
    batch, seed, optimiser type and hyper-parameters other than the learning rates)
    would silently not apply, or make the run a different experiment.
    """
    old_flat = _flatten(config_to_dict(saved))
    new_flat = _flatten(config_to_dict(new))
    out: dict[str, list[str]] = {"free": [], "applied": [], "refused": []}
    for key in sorted(set(old_flat) | set(new_flat)):
        old, value = old_flat.get(key), new_flat.get(key)
        if old == value:
            continue
        kind = (
            "free"
            if _under(key, RESUME_FREE)
            else "applied" if _under(key, RESUME_APPLIED) else "refused"
        )
        out[kind].append(f"{key} ({old!r} -> {value!r})")
    return out


# ---------------------------------------------------------------------- files
def shipped_config_dir() -> Path:
    """The configs shipped with the package (``otae list`` shows them)."""
    return Path(str(resources.files("otae") / "configs"))


def shipped_configs(bench_sets: bool = False) -> list[str]:
    """Names of the shipped experiment configs (or, with ``bench_sets``, of the bench sets)."""
    root = shipped_config_dir()
    names = (
        str(p.relative_to(root).with_suffix(""))
        for p in root.rglob("*.yaml")
        if not p.name.startswith("_")
    )
    return sorted(n for n in names if n.startswith("bench/") == bench_sets)


def resolve_config_path(name_or_path: str | Path, relative_to: Path | None = None) -> Path:
    """A YAML path, or the name of a shipped config (``mnist/drae-quick``)."""
    candidates = []
    path = Path(name_or_path)
    if relative_to is not None and not path.is_absolute():
        candidates.append(relative_to / path)
    candidates.append(path)
    stem = str(name_or_path).removesuffix(".yaml")
    candidates.append(shipped_config_dir() / f"{stem}.yaml")
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"config {str(name_or_path)!r} not found: not a file, and not one of the shipped "
        f"configs ({', '.join(shipped_configs())})"
    )


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def load_config_dict(name_or_path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The raw mapping of a config file with its ``base`` chain merged in."""
    path = resolve_config_path(name_or_path).resolve()
    if path in _seen:
        raise ValueError(f"config inheritance cycle: {' -> '.join(map(str, _seen + (path,)))}")
    values = read_yaml_mapping(path, "a mapping of sections (model:, training:, ...)")
    base = values.pop("base", None)
    if base is not None:
        if not isinstance(base, str) or not base:
            raise ValueError(f"{path}: base must be the path or name of a config, got {base!r}")
        base_path = resolve_config_path(base, relative_to=path.parent)
        values = _merge(load_config_dict(base_path, _seen + (path,)), values)
    return values


def read_yaml_mapping(path: Path, what: str) -> dict[str, Any]:
    """The YAML file's top-level mapping; ValueError naming the file (and line) otherwise."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not a YAML text file (not UTF-8: {err.reason})") from None
    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ValueError(f"{path} is not valid YAML: {_yaml_problem(err)}") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ValueError(f"{path} must contain {what}, got a {type(values).__name__}")
    return values


def _yaml_problem(err: yaml.YAMLError) -> str:
    """A YAML error on one line: what is wrong and where."""
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    mark = getattr(err, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{problem}{where}"


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ValueError(f"override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ValueError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return parts, value


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    values = copy.deepcopy(values)
    for text in overrides:
        parts, value = parse_override(text)
        node = values
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ValueError(f"override {text!r}: {part!r} is not a section")
            node = child
        node[parts[-1]] = value
    return values


def load_config(name_or_path: str | Path, overrides: list[str] = ()) -> ExperimentConfig:
    """Load, merge the base chain, apply overrides, type-check and validate."""
    values = apply_overrides(load_config_dict(name_or_path), list(overrides))
    values.setdefault("name", Path(str(name_or_path)).stem)
    return config_from_dict(values)


def save_config(config: ExperimentConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))


__all__ = [
    "DataConfig",
    "EarlyStoppingConfig",
    "EvaluationConfig",
    "ExperimentConfig",
    "NetworkConfig",
    "OptimizerConfig",
    "RESUME_APPLIED",
    "RESUME_FREE",
    "TrainingConfig",
    "VALIDATION_METRICS",
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "load_config",
    "load_config_dict",
    "resolve_config_path",
    "resume_changes",
    "save_config",
    "shipped_configs",
]
