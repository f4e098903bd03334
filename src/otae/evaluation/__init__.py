"""Evaluation of trained models: test metrics, figures and a self-contained HTML report."""

from .figures import (
    conditional_caption,
    conditional_grid,
    conditional_samples,
    convergence_plot,
    latent_embedding,
    latent_plot,
    loss_curves,
    make_grid,
    pca_fit,
    project_codes,
    reconstruction_grid,
    reconstruction_pairs,
    sample_grid,
    save_image_grid,
)
from .metrics import (
    encode_dataset,
    eval_mode,
    mean_image_baseline,
    reconstruction_metrics,
)
from .report import generate_report, write_report

__all__ = [
    "conditional_caption",
    "conditional_grid",
    "conditional_samples",
    "convergence_plot",
    "encode_dataset",
    "eval_mode",
    "generate_report",
    "latent_embedding",
    "latent_plot",
    "loss_curves",
    "make_grid",
    "mean_image_baseline",
    "pca_fit",
    "project_codes",
    "reconstruction_grid",
    "reconstruction_metrics",
    "reconstruction_pairs",
    "sample_grid",
    "save_image_grid",
    "write_report",
]
