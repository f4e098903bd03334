"""Training: typed configs, one trainer for every model, callbacks, atomic checkpoints.

One module per job: :mod:`.config` (settings), :mod:`.trainer` (the loop),
:mod:`.callbacks` (logging and policies), :mod:`.checkpoint` (atomic files),
:mod:`.loading` (reading a run back), :mod:`.splits` (datasets and the validation
rows), :mod:`.seeding` (derived seeds, data order, RNG state), :mod:`.optim` (devices
and optimisers), :mod:`.divergence` (finding a diverged step), :mod:`.compiled` and
:mod:`.distributed`.
"""

from .callbacks import (
    Callback,
    ConsoleLogger,
    CSVLogger,
    DisentanglementCurve,
    EarlyStopping,
    MLflowCallback,
    ProgressBar,
    TensorBoardLogger,
    WandbCallback,
)
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .config import (
    DataConfig,
    EarlyStoppingConfig,
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
from .divergence import NonFiniteLossError
from .loading import final_checkpoint, load_run
from .optim import select_device
from .seeding import derived_seed
from .splits import build_split, carve_validation, validation_split
from .trainer import Trainer

__all__ = [
    "CSVLogger",
    "Callback",
    "CheckpointError",
    "ConsoleLogger",
    "DataConfig",
    "DisentanglementCurve",
    "EarlyStopping",
    "EarlyStoppingConfig",
    "EvaluationConfig",
    "ExperimentConfig",
    "MLflowCallback",
    "NetworkConfig",
    "NonFiniteLossError",
    "OptimizerConfig",
    "ProgressBar",
    "TensorBoardLogger",
    "Trainer",
    "TrainingConfig",
    "WandbCallback",
    "apply_overrides",
    "build_split",
    "carve_validation",
    "config_from_dict",
    "config_to_dict",
    "derived_seed",
    "final_checkpoint",
    "load_checkpoint",
    "load_config",
    "load_config_dict",
    "load_run",
    "resolve_config_path",
    "save_checkpoint",
    "save_config",
    "select_device",
    "shipped_configs",
    "validation_split",
]
