"""Relational co-training of autoencoders on multi-view data (RAE paper §4 and §6.2).

* :mod:`.model`: :class:`MultiViewAutoencoders` (S >= 2 MLP autoencoders, eq. 14
  generalised to S views) and :func:`train_cotraining`; takes plain tensors.
* :mod:`.baselines`: the Table 4 methods behind ``fit`` / ``transform``.
* :mod:`.protocol`: the 80/10/10 classification protocol (preprocessing, label-budget and
  disjoint-view regimes, per-view diagnostics, diverged cells), Table 4 writer, t-SNE
  figure.
* :mod:`.cells`: finished (setting, seed, method) cells on disk, so a killed run resumes.
* :mod:`.sweep`: the protocol over a sweep of settings (regime map).
* :mod:`.pretrained`: a trained :class:`MultiViewAutoencoders` as ``config.json`` +
  ``model.safetensors`` (:func:`from_pretrained`, ``model.save_pretrained``).
"""

from .baselines import (
    METHOD_LABELS,
    METHOD_PAIRING,
    METHODS,
    AESettings,
    AutoencoderFeatures,
    CCAAutoencoders,
    CCAFeatures,
    CoRegAutoencoders,
    WassersteinAutoencoders,
    make_method,
)
from .cells import Cell, CellStore, setting_key
from .model import (
    DISCREPANCIES,
    MULTIVIEW_CLASSES,
    CoTrainingDiverged,
    MultiViewAutoencoders,
    Posterior,
    ViewAutoencoder,
    epoch_batches,
    prior_discrepancy,
    register_multiview,
    relational_discrepancy,
    train_cotraining,
    zero_pad,
)
from .pretrained import from_pretrained, save_pretrained
from .protocol import (
    COLLAPSE_SPREAD,
    NEEDS_PAIRS,
    PAPER_TABLE4,
    SCALE_SPAN_WARNING,
    ProtocolConfig,
    ProtocolResults,
    applicable_methods,
    divergence_hint,
    divergence_summary,
    format_accuracy,
    run_protocol,
    save_tsne,
    scale_warning,
    split_views,
    write_table,
)

# Explicit re-exports (``X as X``) keep __all__ untouched.
from .sweep import FACTORS as FACTORS
from .sweep import SweepResults as SweepResults
from .sweep import parse_factor as parse_factor
from .sweep import run_sweep as run_sweep
from .sweep import write_sweep as write_sweep

__all__ = [
    "AESettings",
    "AutoencoderFeatures",
    "CCAAutoencoders",
    "COLLAPSE_SPREAD",
    "CCAFeatures",
    "Cell",
    "CellStore",
    "CoRegAutoencoders",
    "CoTrainingDiverged",
    "DISCREPANCIES",
    "METHODS",
    "METHOD_LABELS",
    "METHOD_PAIRING",
    "MULTIVIEW_CLASSES",
    "MultiViewAutoencoders",
    "NEEDS_PAIRS",
    "PAPER_TABLE4",
    "Posterior",
    "SCALE_SPAN_WARNING",
    "ProtocolConfig",
    "ProtocolResults",
    "ViewAutoencoder",
    "WassersteinAutoencoders",
    "applicable_methods",
    "divergence_hint",
    "divergence_summary",
    "epoch_batches",
    "format_accuracy",
    "from_pretrained",
    "make_method",
    "prior_discrepancy",
    "register_multiview",
    "relational_discrepancy",
    "run_protocol",
    "save_pretrained",
    "save_tsne",
    "scale_warning",
    "setting_key",
    "split_views",
    "train_cotraining",
    "write_table",
    "zero_pad",
]
