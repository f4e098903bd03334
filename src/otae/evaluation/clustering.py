r"""Unsupervised clustering of latent codes, scored against the class labels.

The GWAE paper (Nakagawa et al., ICLR 2023) claims its GW objective serves a clustering
meta-prior unchanged; to measure it, the codes of test images are clustered without
labels and the clusters compared with the classes. The three scores are the standard
ones of deep clustering (e.g. Xie et al., "Unsupervised deep embedding for clustering
analysis", ICML 2016, for the accuracy):

* **accuracy** (ACC): :math:`\max_m \frac1N \sum_i 1[y_i = m(c_i)]` over one-to-one maps
  ``m`` from clusters to classes, found by the Hungarian algorithm on the contingency
  table (:func:`clustering_accuracy`). With ``K`` clusters and ``C`` classes only
  ``min(K, C)`` pairs are matched: points of unmatched clusters or classes are errors;
* **normalised mutual information** (NMI): :math:`I(Y; C) / \tfrac12 (H(Y) + H(C))`,
  the arithmetic-mean normalisation (scikit-learn's default), in ``[0, 1]``;
* **adjusted Rand index** (ARI, Hubert & Arabie 1985): the Rand index corrected for
  chance, :math:`(\sum_{ij}\binom{n_{ij}}2 - E) / (\tfrac12(\sum_i\binom{a_i}2 +
  \sum_j\binom{b_j}2) - E)`, :math:`E = \sum_i\binom{a_i}2 \sum_j\binom{b_j}2 /
  \binom N2`; 1 for identical partitions, about 0 for independent ones (down to -0.5).

Clusters come from two sources (:func:`cluster_assignments`):

* ``"prior"``: the model's own mixture prior, where it has more than one component.
  Each code goes to the component of highest responsibility, i.e. the argmax over
  ``k`` of :math:`\log \pi_k + \log p_k(z)`: a diagonal Gaussian
  :math:`\mathcal N(z; u_k, \operatorname{diag}\sigma_k^2)` for Gaussian mixtures (GMM
  priors of GMVAE, RAE (P)/(D), GWAE's ``gmm`` meta-prior, the VampPrior), a von
  Mises-Fisher :math:`C_d(\kappa) e^{\kappa \mu_k^\top z}` for the vMF mixture on the
  sphere (the argmax of :math:`\kappa\,\mu_k^\top z`). Every mixture here has uniform
  weights :math:`\pi_k = 1/K`;
* ``"kmeans"``: k-means (scikit-learn ``KMeans``, ``n_init=10``, fixed
  ``random_state``) with as many clusters as classes; every model gets it, so models
  compare on the same footing whatever their prior.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from ..data.batches import labels_of

# scikit-learn is imported where used: it adds about a second to `import otae`

__all__ = [
    "KMEANS_SEED",
    "adjusted_rand_index",
    "cluster_assignments",
    "clustering_accuracy",
    "clustering_metrics",
    "contingency_table",
    "dataset_clustering_metrics",
    "kmeans_assignments",
    "normalized_mutual_information",
    "prior_assignments",
    "prior_log_responsibilities",
    "saved_clusters",
]

#: k-means ``random_state``: the same for every run, so that only the codes differ
KMEANS_SEED = 0


def _as_1d_ints(values: Any, name: str) -> np.ndarray:
    array = values.detach().cpu().numpy() if isinstance(values, Tensor) else np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must hold integer ids, got dtype {array.dtype}")
    return array.astype(np.int64, copy=False)


def _pair(labels: Any, clusters: Any) -> tuple[np.ndarray, np.ndarray]:
    labels, clusters = _as_1d_ints(labels, "labels"), _as_1d_ints(clusters, "clusters")
    if labels.shape != clusters.shape:
        raise ValueError(
            f"labels and clusters must have the same length, got {labels.size} and {clusters.size}"
        )
    if labels.size == 0:
        raise ValueError("labels and clusters must not be empty")
    return labels, clusters


def contingency_table(labels: Any, clusters: Any) -> np.ndarray:
    """``(C, K)`` counts ``n_ij`` of points of the i-th class in the j-th cluster.

    Classes and clusters are the sorted distinct values of ``labels`` / ``clusters``
    (any integer ids, not necessarily ``0..C-1``).
    """
    labels, clusters = _pair(labels, clusters)
    _, rows = np.unique(labels, return_inverse=True)
    _, cols = np.unique(clusters, return_inverse=True)
    table = np.zeros((rows.max() + 1, cols.max() + 1), dtype=np.int64)
    np.add.at(table, (rows, cols), 1)
    return table


def clustering_accuracy(labels: Any, clusters: Any) -> float:
    """Fraction of points whose cluster is matched to their class by the best one-to-one map.

    The map maximises the matched counts of :func:`contingency_table` (Hungarian
    algorithm, ``scipy.optimize.linear_sum_assignment``); any numbers of clusters and
    classes: points of a cluster left unmatched (more clusters than classes) or of a
    class left unmatched count as errors.
    """
    table = contingency_table(labels, clusters)
    rows, cols = linear_sum_assignment(table, maximize=True)
    return float(table[rows, cols].sum() / table.sum())


def normalized_mutual_information(labels: Any, clusters: Any) -> float:
    """NMI with the arithmetic-mean normalisation ``I / ((H(Y) + H(C)) / 2)`` (sklearn's)."""
    from sklearn.metrics import normalized_mutual_info_score

    labels, clusters = _pair(labels, clusters)
    return float(
        normalized_mutual_info_score(labels, clusters, average_method="arithmetic")
    )


def adjusted_rand_index(labels: Any, clusters: Any) -> float:
    """Hubert & Arabie's adjusted Rand index (sklearn's ``adjusted_rand_score``)."""
    from sklearn.metrics import adjusted_rand_score

    labels, clusters = _pair(labels, clusters)
    return float(adjusted_rand_score(labels, clusters))


# ---------------------------------------------------------------------- assignments
def prior_log_responsibilities(prior, codes: Tensor) -> Tensor | None:
    r"""``(N, K)`` :math:`\log \pi_k + \log p_k(z_n)` of a mixture prior, or None.

    A prior with a ``log_responsibilities(codes)`` method (GWAE's ``gmm``, learnt
    weights and full covariances) gives its own. Otherwise None where the prior has one
    component, or is neither a diagonal Gaussian mixture
    (``gaussian_components()``) nor a vMF mixture with locations (``unit_locations``,
    ``kappa > 0``): a prior without a density per component (GWAE's neural and
    factorised meta-priors) does not cluster. vMF densities are those of unit codes
    (the argmax over ``k`` is the same for any positive rescaling of a code). Computed
    in float64 on the codes' device.
    """
    k = int(getattr(prior, "n_components", 1))
    if k < 2:
        return None
    if hasattr(prior, "log_responsibilities"):  # a mixture with its own weights and shapes
        return prior.log_responsibilities(codes)
    z = codes.detach().double()
    log_pi = -math.log(k)  # the other mixture priors of otae have uniform weights
    if hasattr(prior, "unit_locations"):
        from ..priors.sphere import vmf_log_normaliser

        kappa = float(prior.kappa)
        if kappa <= 0:  # every component is the uniform law: no clusters
            return None
        mu = prior.unit_locations.detach().to(z)
        return kappa * z @ mu.T + (vmf_log_normaliser(kappa, z.shape[1]) + log_pi)
    try:
        means, stds = prior.gaussian_components()
    except NotImplementedError:
        return None
    means, stds = means.detach().to(z), stds.detach().to(z)
    # exact differences, not the Gram expansion: accurate far from the means
    maha = ((z.unsqueeze(1) - means) / stds).square().sum(-1)  # (N, K)
    log_det = 2.0 * stds.log().sum(-1)
    return log_pi - 0.5 * (z.shape[1] * math.log(2 * math.pi) + log_det + maha)


def prior_assignments(model, codes: Tensor) -> np.ndarray | None:
    """Component of ``model.prior`` of highest responsibility for each code, or None.

    (:func:`prior_log_responsibilities`.) Evaluated with the model in eval mode: the
    VampPrior's components are its encoder's posteriors at the pseudo-inputs.
    """
    from .metrics import eval_mode

    with eval_mode(model):
        scores = prior_log_responsibilities(model.prior, codes)
    return None if scores is None else scores.argmax(1).cpu().numpy()


def kmeans_assignments(codes: Any, n_clusters: int, random_state: int = KMEANS_SEED) -> np.ndarray:
    """k-means clusters (scikit-learn ``KMeans``, ``n_init=10``) of the rows of ``codes``."""
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    points = codes.detach().cpu().double().numpy() if isinstance(codes, Tensor) else codes
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2:
        raise ValueError(f"codes must have shape (N, d), got {points.shape}")
    if not 1 <= int(n_clusters) <= points.shape[0]:
        raise ValueError(
            f"n_clusters must be between 1 and the number of codes ({points.shape[0]}), "
            f"got {n_clusters}"
        )
    km = KMeans(n_clusters=int(n_clusters), n_init=10, random_state=random_state)
    # OpenMP threads as many as the run's torch threads (a bench shares the cores out):
    # oversubscribed, k-means' OpenMP loops spin-wait (17x slower measured on 2 busy cores)
    with threadpool_limits(limits=torch.get_num_threads(), user_api="openmp"):
        return km.fit_predict(points).astype(np.int64)


def cluster_assignments(
    model, codes: Tensor, n_clusters: int, *, random_state: int = KMEANS_SEED
) -> tuple[np.ndarray, str]:
    """``(clusters, source)``: the model's prior components where it has a mixture prior
    (``"prior"``), else k-means with ``n_clusters`` clusters (``"kmeans"``)."""
    clusters = prior_assignments(model, codes)
    if clusters is not None:
        return clusters, "prior"
    return kmeans_assignments(codes, n_clusters, random_state), "kmeans"


def _scores(labels: np.ndarray, clusters: np.ndarray, source: str) -> dict[str, float]:
    return {
        f"cluster_acc_{source}": clustering_accuracy(labels, clusters),
        f"cluster_nmi_{source}": normalized_mutual_information(labels, clusters),
        f"cluster_ari_{source}": adjusted_rand_index(labels, clusters),
    }


def clustering_metrics(
    model, codes: Tensor, labels: Any, *, random_state: int = KMEANS_SEED,
    assignments: dict[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Clustering scores of ``codes`` against ``labels`` (the keys of ``metrics.json``).

    ``cluster_{acc,nmi,ari}_kmeans`` always (k-means with as many clusters as distinct
    labels), ``cluster_{acc,nmi,ari}_prior`` by the model's prior components
    (:func:`prior_assignments`; ``cluster_prior_components`` says how many, and
    ``cluster_prior_components_used`` how many are the most responsible component of
    some code; all five None where the prior has none), plus
    ``cluster_classes``, ``cluster_points`` and ``clustering_time_s`` (both sources).
    ``assignments``: a dict that receives the scored clusters (``"kmeans"``, and
    ``"prior"`` where the prior has components), so they need not be computed again.
    """
    labels = _as_1d_ints(labels, "labels")
    if labels.shape[0] != codes.shape[0]:
        raise ValueError(
            f"labels and codes must have the same length, got {labels.size} and {codes.shape[0]}"
        )
    start = time.perf_counter()
    n_classes = int(np.unique(labels).size)
    out: dict[str, Any] = {"cluster_classes": n_classes, "cluster_points": int(labels.size)}
    kmeans = kmeans_assignments(codes, n_classes, random_state)
    out.update(_scores(labels, kmeans, "kmeans"))
    clusters = prior_assignments(model, codes)
    if assignments is not None:
        assignments["kmeans"] = kmeans
        if clusters is not None:
            assignments["prior"] = clusters
    if clusters is None:  # the same keys for every model: stable columns in bench tables
        out["cluster_prior_components"] = out["cluster_prior_components_used"] = None
        out.update(dict.fromkeys(_scores(labels, labels, "prior")))
    else:
        out["cluster_prior_components"] = int(model.prior.n_components)
        # components that are the most responsible one for at least one code: a prior
        # whose components drift away from the data uses fewer than it has
        out["cluster_prior_components_used"] = int(np.unique(clusters).size)
        out.update(_scores(labels, clusters, "prior"))
    out["clustering_time_s"] = time.perf_counter() - start
    return out


def dataset_clustering_metrics(
    model, dataset: Any, batch_size: int = 500, *, codes_path=None
) -> dict[str, Any]:
    """:func:`clustering_metrics` of the codes (posterior means) of a labelled dataset.

    Unlabelled data (an ``image_folder`` without classes) or a single class give only a
    note under ``"clustering"``, no scores. ``codes_path``: also save the codes and
    labels there (``np.savez``, arrays ``codes`` float32 ``(N, d)`` and ``labels``
    int64 ``(N,)``; no pickle), so they can be clustered again without the model, and
    the scored clusters: ``clusters_kmeans`` and, with a mixture prior, ``clusters_prior``
    (int64 ``(N,)``; :func:`saved_clusters` reads them back as
    :func:`cluster_assignments` would choose).
    """
    from .metrics import encode_dataset

    # a dataset that says it has no labels is not read through for them
    unlabelled = hasattr(dataset, "labels") and dataset.labels is None
    labels = None if unlabelled else labels_of(dataset)
    if labels is None:
        return {"clustering": "skipped: the test images are unlabelled"}
    if int(labels.unique().numel()) < 2:
        return {"clustering": "skipped: the test images have a single class"}
    codes = encode_dataset(model, dataset, batch_size)
    found: dict[str, np.ndarray] = {}
    out = clustering_metrics(model, codes, labels, assignments=found)
    if codes_path is not None:
        np.savez(
            codes_path, codes=codes.float().numpy(), labels=labels.cpu().numpy(),
            **{f"clusters_{source}": clusters for source, clusters in found.items()},
        )
        out["clustering_codes_file"] = str(codes_path)
    return out


def saved_clusters(codes_path) -> tuple[np.ndarray, str]:
    """``(clusters, source)`` saved by :func:`dataset_clustering_metrics`: the prior's
    components where the model has a mixture prior, else k-means (the choice of
    :func:`cluster_assignments`, without clustering again)."""
    with np.load(codes_path, allow_pickle=False) as saved:
        source = "prior" if "clusters_prior" in saved.files else "kmeans"
        return saved[f"clusters_{source}"], source
