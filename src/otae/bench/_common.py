"""What the modules of the bench share: a run's directory name, its device, its
convergence history, and the metric columns of the tables and the report."""

from __future__ import annotations

import csv
from pathlib import Path

import torch


def slug(text: str) -> str:
    """``text`` as a directory name (:func:`otae.experiment.slug`)."""
    from ..experiment import slug as experiment_slug

    return experiment_slug(text)


def device_of(config) -> torch.device:
    """The device a run of ``config`` trains on."""
    from ..training import select_device

    return select_device(config.training.device)


def read_history(path: Path) -> list[dict[str, float]]:
    """The rows of a run's ``history.csv`` as numbers (none where there is no file)."""
    if not path.exists():
        return []
    with path.open() as handle:
        return [
            {k: float(v) for k, v in row.items() if v not in ("", None)}
            for row in csv.DictReader(handle)
        ]


#: clustering columns of the tables (scores in [0, 1], or [-0.5, 1] for ARI: 3 digits)
SOURCE = {"kmeans": "k-means", "prior": "prior"}
CLUSTER = tuple(f"cluster_{m}_{s}" for s in SOURCE for m in ("acc", "nmi", "ari"))
#: disentanglement columns (runs on data with factors, :mod:`otae.evaluation.traversals`)
DISENTANGLEMENT = (
    ("mig", "MIG"),
    ("mig_posterior", "MIG (q)"),
    ("dci_disentanglement", "DCI D"),
    ("dci_completeness", "DCI C"),
    ("dci_informativeness", "DCI I"),
    ("factorvae_score", "FactorVAE"),
)
#: scores shown with 3 digits
RATIOS = (*CLUSTER, *(key for key, _ in DISENTANGLEMENT))
#: counts, shown with one decimal (a mean over seeds)
COUNTS = ("cluster_prior_components_used",)
