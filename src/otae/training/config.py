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
import dataclasses
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from .._io import atomic_write_text
from ..models import MODELS, ModelConfig, model_config_from_dict
from ..typed_config import check_choices, from_dict, to_dict

#: what a resumed run may do with a changed setting (field metadata ``resume``):
#: ``free`` (does not change what was trained), ``applied`` (set on the restored
#: optimisers: the learning rates), ``refused`` (would change the experiment), or
#: ``section`` (a nested config whose own fields say)
RESUME_POLICIES = ("free", "applied", "refused", "section")


def setting(default: Any = dataclasses.MISSING, *, resume: str, factory: Any = dataclasses.MISSING):
    """A config field with its resume policy (:data:`RESUME_POLICIES`) in its metadata."""
    if resume not in RESUME_POLICIES:
        raise ValueError(f"resume must be one of {', '.join(RESUME_POLICIES)}, got {resume!r}")
    return field(default=default, default_factory=factory, metadata={"resume": resume})


@dataclass
class DataConfig:
    #: dataset name (see ``otae list``): mnist, idx, celeba, image_folder
    name: str = setting("mnist", resume="refused")
    #: folder with the data files; None uses the embedded MNIST
    root: str | None = setting(None, resume="refused")
    #: keep only the first n training / test examples (None: all)
    train_subset: int | None = setting(None, resume="refused")
    test_subset: int | None = setting(None, resume="refused")
    #: resize images to this side length (image_folder / celeba); None: dataset default
    image_size: int | None = setting(None, resume="refused")


@dataclass
class NetworkConfig:
    #: paper_mnist, paper_celeba, gwae_conv, small_conv or mlp (see ``otae list``)
    architecture: str = setting("small_conv", resume="refused")
    #: keyword options of the architecture (e.g. channels: [32, 64])
    options: dict[str, Any] = setting(factory=dict, resume="refused")


@dataclass
class OptimizerConfig:
    #: adam or rmsprop
    name: Literal["adam", "rmsprop"] = setting("adam", resume="refused")
    lr: float = setting(1e-3, resume="applied")
    #: Adam's betas (the paper uses (0.5, 0.999))
    betas: tuple[float, float] = setting((0.5, 0.999), resume="refused")
    weight_decay: float = setting(0.0, resume="refused")
    #: learning rate of the adversarial critic (GWAE) or discriminator (FactorVAE);
    #: None: same as lr
    critic_lr: float | None = setting(None, resume="applied")
    #: Adam's betas of the critic / discriminator (FactorVAE's paper: (0.5, 0.9));
    #: None: same as betas
    critic_betas: tuple[float, float] | None = setting(None, resume="refused")


#: the names ``training.loggers`` accepts, with the extra that installs each library
EXTERNAL_LOGGERS = {"wandb": "otae[wandb]", "mlflow": "otae[mlflow]"}
#: the scores ``evaluation.disentanglement_curve_metrics`` accepts -> their history column
#: after the ``val_`` / ``test_`` prefix (the names of the final metrics in metrics.json)
#: (``mig_q``: MIG (q), Chen et al.'s estimator on the posteriors: probabilistic encoders)
CURVE_METRICS = {"mig": "mig", "mig_q": "mig_posterior", "dci": "dci_disentanglement"}

#: inductor's modes (torch.compile(mode=...)); "default" passes none
CompileMode = Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]

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
    enabled: bool = setting(False, resume="refused")
    #: epochs without improvement before stopping (the GWAE authors use 10)
    patience: int = setting(10, resume="refused")
    #: a validation column of history.csv: val_total, val_rec_loss, val_regulariser, ...
    monitor: str = setting("val_total", resume="refused")
    #: min (lower is better) or max
    mode: Literal["min", "max"] = setting("min", resume="refused")
    #: an improvement must beat the best value by more than this
    min_delta: float = setting(0.0, resume="refused")
    #: fraction of the training set held out as the validation split
    validation_fraction: float = setting(0.1, resume="refused")
    #: seeds the split alone: the same rows whatever training.seed is
    validation_seed: int = setting(0, resume="refused")


@dataclass
class TrainingConfig:
    epochs: int = setting(50, resume="free")
    #: the global batch: under torchrun each of W processes holds batch_size / W rows
    batch_size: int = setting(100, resume="refused")
    seed: int = setting(0, resume="refused")
    #: auto (CUDA when available), cpu, cuda, cuda:1, ...
    device: str = setting("auto", resume="free")
    #: torch.use_deterministic_algorithms (bit-reproducible runs, slower on GPU)
    deterministic: bool = setting(False, resume="free")
    optimizer: OptimizerConfig = setting(factory=OptimizerConfig, resume="section")
    #: write last.pt every this many epochs (best.pt whenever the test loss improves, or
    #: with early_stopping the monitored validation metric)
    checkpoint_every: int = setting(1, resume="free")
    eval_batch_size: int = setting(500, resume="free")
    #: DataLoader workers for datasets read from disk (0: load in the main process)
    num_workers: int = setting(0, resume="free")
    #: page-locked host batches for asynchronous copies to CUDA (ignored on CPU)
    pin_memory: bool = setting(True, resume="free")
    #: fp32, or bf16 (autocast of the networks; losses and OT terms stay in float32)
    precision: Literal["fp32", "bf16"] = setting("fp32", resume="refused")
    #: torch.compile the whole training objective (networks and regulariser, forward and
    #: backward) as one graph per objective; checkpoints are unchanged (otae.training.compiled)
    compile: bool = setting(False, resume="free")
    #: the torch.compile backend: inductor, or eager / aot_eager / any registered backend
    compile_backend: str = setting("inductor", resume="free")
    #: inductor's mode: default, reduce-overhead (CUDA graphs), max-autotune,
    #: max-autotune-no-cudagraphs
    compile_mode: CompileMode = setting(
        "default", resume="free"
    )
    #: layout of image batches and convolution weights: channels_last (NHWC), contiguous
    #: (NCHW), or auto: channels_last for otae's conv nets on a CPU in eager mode (1.02-1.11x
    #: faster steps, docs/performance.md), contiguous elsewhere, a model given to
    #: Trainer(model, ...) left as it is. The same model and objective either way: only
    #: the kernels' rounding differs
    memory_format: Literal["auto", "contiguous", "channels_last"] = setting("auto", resume="free")
    #: keep in-memory datasets (MNIST...) on the CUDA device and index them there
    data_on_device: bool = setting(True, resume="free")
    #: under torchrun, batch-level regularisers see the global batch (exact) or each
    #: process's rows only (per_rank: no gathering, a different, noisier objective)
    regulariser_mode: Literal["global", "per_rank"] = setting("global", resume="refused")
    progress: bool = setting(True, resume="free")
    tensorboard: bool = setting(True, resume="free")
    #: external experiment trackers, off by default: any of wandb, mlflow
    #: (otae.training.callbacks; pip install otae[wandb] / otae[mlflow])
    loggers: list[str] = setting(factory=list, resume="free")
    #: the W&B project, and W&B's mode: offline (written under the run directory,
    #: uploaded later by `wandb sync`), online or disabled
    wandb_project: str = setting("otae", resume="free")
    wandb_mode: Literal["offline", "online", "disabled"] = setting("offline", resume="free")
    #: the MLflow tracking URI; None: a local file store at <run dir>/mlruns
    mlflow_tracking_uri: str | None = setting(None, resume="free")
    #: the MLflow experiment; None: the config's name
    mlflow_experiment: str | None = setting(None, resume="free")
    #: stop on a held-out validation split (off by default; see EarlyStoppingConfig)
    early_stopping: EarlyStoppingConfig = setting(factory=EarlyStoppingConfig, resume="section")


@dataclass
class EvaluationConfig:
    #: 2-D projection of the latent plot: pca or tsne
    latent_method: Literal["pca", "tsne"] = setting("pca", resume="free")
    latent_points: int = setting(2000, resume="free")
    n_samples: int = setting(64, resume="free")
    n_per_component: int = setting(10, resume="free")
    report: bool = setting(True, resume="free")
    #: training steps timed with and without the regulariser after training (0: skip)
    timing_steps: int = setting(10, resume="free")
    #: generated/test images for the classifier Fréchet distance (MNIST-like data; 0: skip)
    classifier_fd_samples: int = setting(0, resume="free")
    #: generated/test images for FID with Inception-v3 (needs otae[fid]; 0: skip)
    fid_samples: int = setting(0, resume="free")
    #: cluster the test codes (k-means and the model's mixture prior) against the labels:
    #: ACC / NMI / ARI in metrics.json (false: skip)
    clustering: bool = setting(True, resume="free")
    #: the disentanglement curve (data with known factors: shapes, shapes_fine): every this
    #: many epochs, and at the last, score the codes of a fixed set of images into the
    #: history (val_mig / test_mig, ...; otae.training.callbacks.DisentanglementCurve); 0: off
    disentanglement_every: int = setting(0, resume="free")
    #: the curve's images: the first this many of the validation split (with
    #: training.early_stopping) or else of the test set
    disentanglement_curve_points: int = setting(5000, resume="free")
    #: the curve's scores: mig, dci (DCI disentanglement: ~13 s for 7560 codes on a CPU)
    disentanglement_curve_metrics: list[str] = setting(
        factory=lambda: ["mig", "dci"], resume="free"
    )


@dataclass
class ExperimentConfig:
    name: str = setting("run", resume="free")
    #: runs are written to output_dir/name unless a run directory is given
    output_dir: str = setting("runs", resume="free")
    model: ModelConfig = setting(factory=ModelConfig, resume="refused")
    network: NetworkConfig = setting(factory=NetworkConfig, resume="refused")
    data: DataConfig = setting(factory=DataConfig, resume="refused")
    training: TrainingConfig = setting(factory=TrainingConfig, resume="section")
    evaluation: EvaluationConfig = setting(factory=EvaluationConfig, resume="free")

    def validate(self) -> None:
        # every Literal setting (optimiser, precision, compile mode, modes...): one
        # generic check that names the section.key
        check_choices(self, "")
        self.model.validate()
        t = self.training
        for name in ("epochs", "batch_size", "checkpoint_every", "eval_batch_size"):
            if getattr(t, name) < 1:
                raise ValueError(f"training.{name} must be >= 1, got {getattr(t, name)}")
        if not -(2**63) <= t.seed < 2**63:
            raise ValueError(f"training.seed must fit in 64 bits, got {t.seed}")
        if t.num_workers < 0:
            raise ValueError(f"training.num_workers must be >= 0, got {t.num_workers}")
        if t.compile_mode != "default" and t.compile_backend != "inductor":
            raise ValueError(
                f"training.compile_mode={t.compile_mode!r} is an option of the inductor "
                f"backend, not of training.compile_backend={t.compile_backend!r}"
            )

        for logger in t.loggers:
            if logger not in EXTERNAL_LOGGERS:
                raise ValueError(
                    f"training.loggers: unknown logger {logger!r}; choose from "
                    f"{', '.join(EXTERNAL_LOGGERS)} (progress, history.csv, TensorBoard and "
                    "console lines are always on, see training.progress / training.tensorboard)"
                )
        if len(set(t.loggers)) != len(t.loggers):
            raise ValueError(f"training.loggers lists a logger twice: {t.loggers}")
        if not t.wandb_project:
            raise ValueError("training.wandb_project must not be empty")
        opt = t.optimizer
        for name in ("lr", "critic_lr"):
            value = getattr(opt, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"training.optimizer.{name} must be finite and > 0, got {value}")
        if not (math.isfinite(opt.weight_decay) and opt.weight_decay >= 0):
            raise ValueError(
                f"training.optimizer.weight_decay must be finite and >= 0, got {opt.weight_decay}"
            )
        for name in ("betas", "critic_betas"):
            betas = getattr(opt, name)
            if betas is not None and not all(0.0 <= b < 1.0 for b in betas):
                raise ValueError(
                    f"training.optimizer.{name} must both lie in [0, 1), got {list(betas)}"
                )
        _validate_early_stopping(t.early_stopping)
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
def resume_policy(key: str) -> str:
    """What a resumed run does with a change of the dotted setting ``key``: ``free``,
    ``applied`` or ``refused`` (:data:`RESUME_POLICIES`), read from the fields' metadata
    down the path (a section's policy covers its whole subtree unless it is ``section``:
    then its fields say). A key no config field names (a model's own option: the model
    section is refused as a whole) takes the policy of its deepest known ancestor."""
    cls: Any = ExperimentConfig
    policy = "refused"
    for part in key.split("."):
        if not dataclasses.is_dataclass(cls):
            break
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if part not in fields:
            break
        policy = fields[part].metadata.get("resume", "refused")
        if policy != "section":
            return policy
        cls = _field_type(cls, part)
    return "refused" if policy == "section" else policy


def _field_type(cls: type, name: str) -> type:
    import typing

    return typing.get_type_hints(cls)[name]


def _leaf_keys(cls: type, prefix: str = "") -> list[str]:
    keys = []
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        if f.metadata.get("resume") == "section":
            keys += _leaf_keys(_field_type(cls, f.name), key + ".")
        else:
            keys.append(key)
    return keys


#: Settings a resumed run may change without changing what was trained (epochs, device,
#: logging, evaluation...), from the fields' ``resume`` metadata.
RESUME_FREE = tuple(k for k in _leaf_keys(ExperimentConfig) if resume_policy(k) == "free")
#: Settings a resumed run applies to its restored optimisers from the next step on.
RESUME_APPLIED = tuple(k for k in _leaf_keys(ExperimentConfig) if resume_policy(k) == "applied")


def flatten_config(values: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config dict as ``{"section.key": value}`` (empty sections kept as leaves)."""
    if not isinstance(values, dict) or (prefix and not values):
        return {prefix: values}
    flat: dict[str, Any] = {}
    for key, value in values.items():
        flat.update(flatten_config(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def resume_changes(
    saved: ExperimentConfig | dict[str, Any], new: ExperimentConfig | dict[str, Any]
) -> dict[str, list[str]]:
    """The settings in which ``new`` differs from the config a run was trained with.

    Returns ``{"free": [...], "applied": [...], "refused": [...]}``, each a list of
    ``"key (old -> new)"``: ``free`` changes (:data:`RESUME_FREE`) do not change what
    was trained, ``applied`` ones (:data:`RESUME_APPLIED`, the learning rates) are
    set on the restored optimisers, ``refused`` ones (model, network, data, objective,
    batch, seed, optimiser type and hyper-parameters other than the learning rates)
    would silently not apply, or make the run a different experiment. Either config may
    be given as the dict a checkpoint holds (:func:`normalised_config_dict` reads it).
    """
    old_flat = flatten_config(normalised_config_dict(saved))
    new_flat = flatten_config(normalised_config_dict(new))
    out: dict[str, list[str]] = {"free": [], "applied": [], "refused": []}
    for key in sorted(set(old_flat) | set(new_flat)):
        old, value = old_flat.get(key), new_flat.get(key)
        if old == value:
            continue
        out[resume_policy(key)].append(f"{key} ({old!r} -> {value!r})")
    return out


def normalised_config_dict(config: ExperimentConfig | dict[str, Any]) -> dict[str, Any]:
    """``config`` as a plain dict with every field present: a dict (a checkpoint's) is read
    through the config dataclasses first, so keys an older otae did not write get their
    defaults. A model section whose ``name`` no registry knows (a model handed to the
    :class:`~otae.training.Trainer` directly) is kept as written; a ValueError if any
    other section is invalid."""
    if isinstance(config, ExperimentConfig):
        return config_to_dict(config)
    model = config.get("model")
    if isinstance(model, dict) and model.get("name") not in MODELS:
        # any registered name stands in while the other sections are read
        stand_in = {**config, "model": {"name": sorted(MODELS)[0]}}
        rest = config_to_dict(config_from_dict(stand_in))
        rest["model"] = copy.deepcopy(model)
        return rest
    return config_to_dict(config_from_dict(config))


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
    """``config`` as YAML at ``path``, atomically."""
    atomic_write_text(path, yaml.safe_dump(config_to_dict(config), sort_keys=False))


__all__ = [
    "CURVE_METRICS",
    "DataConfig",
    "EarlyStoppingConfig",
    "EXTERNAL_LOGGERS",
    "EvaluationConfig",
    "ExperimentConfig",
    "NetworkConfig",
    "OptimizerConfig",
    "RESUME_APPLIED",
    "RESUME_FREE",
    "RESUME_POLICIES",
    "TrainingConfig",
    "VALIDATION_METRICS",
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "flatten_config",
    "load_config",
    "load_config_dict",
    "normalised_config_dict",
    "resolve_config_path",
    "resume_changes",
    "resume_policy",
    "save_config",
    "setting",
    "shipped_configs",
]
