"""Training: typed configs, one trainer for every model, atomic checkpoints."""

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .config import (
    DataConfig,
    EvaluationConfig,
    ExperimentConfig,
    NetworkConfig,
    OptimizerConfig,
    TrainingConfig,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    load_config,
    load_config_dict,
    resolve_config_path,
    save_config,
    shipped_configs,
)
from .trainer import (
    NonFiniteLossError,
    Trainer,
    build_split,
    derived_seed,
    load_run,
    select_device,
)

__all__ = [
    "CheckpointError",
    "DataConfig",
    "EvaluationConfig",
    "ExperimentConfig",
    "NetworkConfig",
    "NonFiniteLossError",
    "OptimizerConfig",
    "Trainer",
    "TrainingConfig",
    "apply_overrides",
    "build_split",
    "config_from_dict",
    "config_to_dict",
    "derived_seed",
    "load_checkpoint",
    "load_config",
    "load_config_dict",
    "load_run",
    "resolve_config_path",
    "save_checkpoint",
    "save_config",
    "select_device",
    "shipped_configs",
]
