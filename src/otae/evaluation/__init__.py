"""Evaluation of trained models: test metrics, figures and a self-contained HTML report."""

from .classifier import (
    ClassifierFeatureExtractor,
    MnistClassifier,
    load_or_train_mnist_classifier,
)

# clustering of latent codes (issue 16)
from .clustering import (
    adjusted_rand_index,
    cluster_assignments,
    clustering_accuracy,
    clustering_metrics,
    dataset_clustering_metrics,
    kmeans_assignments,
    normalized_mutual_information,
    prior_assignments,
)
from .fid import (
    InceptionFeatureExtractor,
    dataset_statistics,
    feature_statistics,
    frechet_distance,
    generate_samples,
    generated_statistics,
    load_samples_npz,
    save_samples_npz,
    write_compact_inception,
)
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
    "ClassifierFeatureExtractor",
    "InceptionFeatureExtractor",
    "MnistClassifier",
    "conditional_caption",
    "conditional_grid",
    "conditional_samples",
    "convergence_plot",
    "dataset_statistics",
    "encode_dataset",
    "eval_mode",
    "feature_statistics",
    "frechet_distance",
    "generate_samples",
    "generated_statistics",
    "generate_report",
    "latent_embedding",
    "latent_plot",
    "load_or_train_mnist_classifier",
    "load_samples_npz",
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
    "save_samples_npz",
    "write_compact_inception",
    "write_report",
]

__all__ += [
    "adjusted_rand_index",
    "cluster_assignments",
    "clustering_accuracy",
    "clustering_metrics",
    "dataset_clustering_metrics",
    "kmeans_assignments",
    "normalized_mutual_information",
    "prior_assignments",
]
