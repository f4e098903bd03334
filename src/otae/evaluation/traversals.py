r"""Runs on data with known generative factors: disentanglement scores and traversals.

:func:`dataset_disentanglement_metrics` scores the test codes (posterior means) of a
dataset with a ``factors`` attribute (e.g. ``shapes``,
:class:`otae.data.FactorImageDataset`) with the metrics of
:mod:`otae.evaluation.disentanglement`, for the GWAE paper's claim (Nakagawa et al.,
ICLR 2023) that one GW objective serves a disentanglement meta-prior:

* ``mig``: MIG (Chen et al., NeurIPS 2018), 20 equal-width bins per dimension;
* ``dci_disentanglement``, ``dci_completeness``, ``dci_informativeness``: DCI (Eastwood
  & Williams, ICLR 2018), random forests fitted on a seeded 80 % of the codes and
  scored on the other 20 % (informativeness: held-out accuracy);
* ``factorvae_score``: FactorVAE score (Kim & Mnih, ICML 2018) with the
  scale-relative collapse rule below.

**Collapsed dimensions, whatever the codes' scale.** The FactorVAE score drops
dimensions whose standard deviation is under 0.05, a threshold on the scale of an
:math:`\mathcal N(0, I)` prior; the codes of deterministic autoencoders have any scale,
so the absolute rule would score them 0 (or keep every dimension) by construction.
Here the threshold is relative (:func:`active_threshold`):

.. math:: \tau = 0.05 \sqrt{\tfrac1D \textstyle\sum_j \operatorname{Var}(z_j)},

0.05 times the root-mean-square of the per-dimension standard deviations: 0.05 for
codes of unit variance per dimension (disentanglement_lib's rule), and the same
dimensions kept and the same score under any rescaling :math:`z \mapsto c z` (the
vote normalises each dimension by its own standard deviation).

:func:`factor_traversal_rows` picks the rows of the latent traversal figure
(:func:`otae.evaluation.figures.traversal_grid`): for each factor, the code dimension
of highest DCI importance for it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "ACTIVE_FRACTION",
    "DISENTANGLEMENT_KEYS",
    "DISENTANGLEMENT_SEED",
    "active_threshold",
    "code_disentanglement_metrics",
    "dataset_disentanglement_metrics",
    "factor_traversal_rows",
    "mig_factor_key",
    "per_factor_mig_from_codes",
    "per_factor_mig_keys",
]

#: seed of the DCI split and forests and of the FactorVAE votes: the same for every run
DISENTANGLEMENT_SEED = 0
#: collapse threshold of the FactorVAE score, relative to the codes' RMS std
ACTIVE_FRACTION = 0.05
#: the scores in metrics.json (and the bench tables' columns)
DISENTANGLEMENT_KEYS = (
    "mig",
    "dci_disentanglement",
    "dci_completeness",
    "dci_informativeness",
    "factorvae_score",
)


#: prefixes of the per-factor gaps in metrics.json: binned posterior means (MIG as in
#: disentanglement_lib) and the encoder's posteriors (Chen et al.'s estimator)
MIG_FACTOR_PREFIX = "mig_factor_"
POSTERIOR_MIG_FACTOR_PREFIX = "mig_posterior_factor_"


def mig_factor_key(factor_name: str, prefix: str = MIG_FACTOR_PREFIX) -> str:
    """``<prefix><name>``: the metrics.json key of a factor's MIG gap (the name in lower
    case, runs of other characters as ``_``)."""
    return prefix + re.sub(r"[^a-z0-9]+", "_", str(factor_name).lower()).strip("_")


def per_factor_mig_keys(
    factor_names: Sequence[str], per_factor: Any, prefix: str = MIG_FACTOR_PREFIX
) -> dict[str, float]:
    """``{mig_factor_key(name, prefix): gap}``: each factor's normalised MIG gap under its
    name, for metrics.json and the bench tables."""
    gaps = [float(v) for v in np.asarray(per_factor, dtype=np.float64).reshape(-1)]
    if len(gaps) != len(factor_names):
        raise ValueError(f"{len(gaps)} per-factor gaps for {len(factor_names)} factor names")
    keys = [mig_factor_key(name, prefix) for name in factor_names]
    if len(set(keys)) != len(keys):
        raise ValueError(f"factor names {list(factor_names)} do not give distinct keys")
    return dict(zip(keys, gaps, strict=True))


def per_factor_mig_from_codes(codes_path: str | Path, factor_names: Sequence[str],
                              mig: float | None = None) -> dict[str, float]:
    """:func:`per_factor_mig_keys` of the codes and factors saved by
    :func:`dataset_disentanglement_metrics` at ``codes_path`` (a run scored before the
    per-factor keys existed). ``mig``: the run's recorded MIG, which the saved codes must
    reproduce (else ValueError: the file holds other codes)."""
    from .disentanglement import mutual_information_gap

    with np.load(codes_path) as saved:
        codes = saved["codes"].astype(np.float64)
        factors = saved["factors"]
    out = mutual_information_gap(codes, factors)
    if mig is not None and not np.isclose(out["mig"], mig, rtol=0, atol=1e-9):
        raise ValueError(
            f"the codes in {codes_path} give MIG {out['mig']:.6f}, not the recorded {mig:.6f}"
        )
    return per_factor_mig_keys(factor_names, out["per_factor"])


def active_threshold(codes: Any, fraction: float = ACTIVE_FRACTION) -> float:
    """``fraction`` times the root-mean-square per-dimension std of ``codes`` ``(N, D)``."""
    codes = np.asarray(codes, dtype=np.float64)
    return float(fraction * np.sqrt(codes.var(axis=0).mean()))


def code_disentanglement_metrics(
    codes: Any, factors: Any, *, random_state: int = DISENTANGLEMENT_SEED
) -> dict[str, Any]:
    """The scores of :data:`DISENTANGLEMENT_KEYS` of ``codes`` ``(N, D)`` for ``factors``
    ``(N, K)``, plus ``factorvae_active_threshold`` / ``factorvae_active_dims``,
    ``disentanglement_points``, ``disentanglement_time_s``, and the numpy arrays
    ``dci_importance`` ``(D, K)`` and ``mig_per_factor`` ``(K,)`` (not for metrics.json)."""
    from .disentanglement import dci, factorvae_score, mutual_information_gap

    start = time.perf_counter()
    codes = np.asarray(codes, dtype=np.float64)
    threshold = active_threshold(codes)
    out_dci = dci(codes, factors, random_state=random_state)
    fvae = factorvae_score(codes, factors, active_threshold=threshold, random_state=random_state)
    mig = mutual_information_gap(codes, factors)
    return {
        "mig": mig["mig"],
        "dci_disentanglement": out_dci["disentanglement"],
        "dci_completeness": out_dci["completeness"],
        "dci_informativeness": out_dci["informativeness"],
        "factorvae_score": fvae["score"],
        "factorvae_active_threshold": threshold,
        "factorvae_active_dims": int(fvae["active"].sum()),
        "disentanglement_points": int(codes.shape[0]),
        "disentanglement_time_s": time.perf_counter() - start,
        "dci_importance": out_dci["importance"],
        "mig_per_factor": mig["per_factor"],
    }


def dataset_disentanglement_metrics(
    model,
    dataset: Any,
    batch_size: int = 500,
    *,
    codes_path: str | Path | None = None,
    reuse_codes: bool = False,
) -> tuple[dict[str, Any], np.ndarray, np.ndarray | None]:
    """``(metrics, codes, importance)`` of a dataset with a ``factors`` attribute.

    ``metrics``: :func:`code_disentanglement_metrics` (without its arrays),
    ``disentanglement_factors``, the factor names, and each factor's MIG gap as
    ``mig_factor_<name>`` (:func:`per_factor_mig_keys`); for a probabilistic encoder also
    ``mig_posterior`` and its gaps ``mig_posterior_factor_<name>``
    (:func:`~otae.evaluation.disentanglement.posterior_mutual_information_gap`, Chen et
    al.'s estimator on the posteriors; the log-variances are saved as ``logvars``);
    where the scores are undefined
    (a factor constant over the dataset, or 1-D codes) only a note under
    ``"disentanglement"``, importance None and nothing saved. ``codes``: the dataset's codes
    (posterior means), float32. ``codes_path``: save the arrays ``codes``, ``factors``
    (int64 ``(N, K)``) and ``dci_importance`` (``(D, K)``) there (``np.savez``), so that
    every score can be recomputed from the file. ``reuse_codes``: the file at
    ``codes_path`` already holds this model's codes of ``dataset`` (the clustering's
    ``test_codes.npz`` of the same evaluation): take them from it instead of encoding
    again, and keep its other arrays.
    """
    from .disentanglement import posterior_mutual_information_gap
    from .metrics import encode_dataset, encode_posterior

    factors = getattr(dataset, "factors", None)
    if factors is None:
        raise ValueError("dataset has no generative factors (a `factors` attribute)")
    saved: dict[str, np.ndarray] = {}
    if reuse_codes:
        if codes_path is None:
            raise ValueError("reuse_codes needs the codes_path of the saved codes")
        with np.load(codes_path) as npz:
            saved = {key: npz[key] for key in npz.files}
        if len(saved.get("codes", ())) != len(dataset):
            raise ValueError(f"{codes_path} does not hold the {len(dataset)} codes of the dataset")
        codes = saved["codes"].astype(np.float32)
    logvars = None
    if getattr(model, "probabilistic", False):
        means, logvars = encode_posterior(model, dataset, batch_size)
        logvars = None if logvars is None else logvars.float().numpy()
        if not reuse_codes:
            codes = means.float().numpy()
    elif not reuse_codes:
        codes = encode_dataset(model, dataset, batch_size).float().numpy()
    factors = np.asarray(factors.cpu() if hasattr(factors, "cpu") else factors, dtype=np.int64)
    names = getattr(dataset, "factor_names", None)
    names = list(names) if names is not None else [f"factor {k}" for k in range(factors.shape[1])]
    # a trained run must not fail at its last step: scores that are undefined become a note
    constant = [n for n, col in zip(names, factors.T, strict=True) if np.unique(col).size < 2]
    if constant or codes.shape[1] < 2:
        why = (
            f"{', '.join(constant)} take(s) a single value in the {len(codes)} test images"
            if constant else "the codes have a single dimension (MIG needs two)"
        )  # fmt: skip
        return {"disentanglement": f"skipped: {why}"}, codes, None
    metrics = code_disentanglement_metrics(codes, factors)
    importance = metrics.pop("dci_importance")
    metrics.update(per_factor_mig_keys(names, metrics.pop("mig_per_factor")))
    if logvars is not None:
        start = time.perf_counter()
        posterior = posterior_mutual_information_gap(codes, logvars, factors,
                                                     random_state=DISENTANGLEMENT_SEED)  # fmt: skip
        metrics["mig_posterior"] = posterior["mig"]
        metrics.update(
            per_factor_mig_keys(names, posterior["per_factor"], POSTERIOR_MIG_FACTOR_PREFIX)
        )
        metrics["disentanglement_time_s"] += time.perf_counter() - start
    metrics["disentanglement_factors"] = names
    if codes_path is not None:
        saved.update(codes=codes, factors=factors, dci_importance=importance)
        if logvars is not None:
            saved["logvars"] = logvars
        np.savez(codes_path, **saved)
        metrics["disentanglement_codes_file"] = str(codes_path)
    return metrics, codes, importance


def factor_traversal_rows(importance: Any, factor_names: Sequence[str]) -> list[tuple[str, int]]:
    """``(factor name, code dimension)`` per factor: the dimension of highest DCI importance."""
    importance = np.asarray(importance)
    if importance.ndim != 2 or importance.shape[1] != len(factor_names):
        raise ValueError(
            f"importance must be (D, {len(factor_names)}) for the factors {list(factor_names)}, "
            f"got {importance.shape}"
        )
    return [(str(name), int(np.argmax(importance[:, k]))) for k, name in enumerate(factor_names)]
