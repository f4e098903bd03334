r"""Disentanglement metrics: MIG, DCI and the FactorVAE score.

Each takes the codes ``(N, D)`` of ``N`` images (e.g. posterior means from
:func:`otae.evaluation.metrics.encode_dataset`) and their ground-truth factors
``(N, K)`` (discrete values, e.g. :attr:`otae.data.FactorImageDataset.factors`),
and returns a dict: the score(s) as floats and the matrices behind them as numpy
arrays. Entropies and mutual informations are in nats; every score is a ratio.
Everything is deterministic (``random_state``).

* **MIG**, mutual information gap (Chen et al., "Isolating Sources of
  Disentanglement in VAEs", NeurIPS 2018), as in disentanglement_lib: each code
  dimension is cut into ``n_bins`` equal-width bins, giving discrete ``\hat z_j``;

  .. math:: \mathrm{MIG} = \frac1K \sum_k \frac{I(\hat z_{j^{(k)}}; v_k)
            - \max_{j \ne j^{(k)}} I(\hat z_j; v_k)}{H(v_k)},
            \quad j^{(k)} = \arg\max_j I(\hat z_j; v_k),

  with :math:`I` and :math:`H` the plug-in (histogram) estimates. 1: each factor is
  captured by one code dimension and by no other; 0: no gap.

* **DCI** (Eastwood & Williams, "A Framework for the Quantitative Evaluation of
  Disentangled Representations", ICLR 2018): one random-forest classifier per factor
  predicts ``v_k`` from the codes (the paper's random-forest variant; disentanglement_lib
  uses gradient boosting, several times slower); its impurity-based feature importances
  form column ``k`` of the importance matrix :math:`R \in \mathbb{R}_{\ge 0}^{D\times K}`.
  With :math:`P_{jk} = R_{jk}/\sum_{k'} R_{jk'}` and
  :math:`\tilde P_{jk} = R_{jk}/\sum_{j'} R_{j'k}`,

  .. math:: D = \sum_j \rho_j \bigl(1 - H_K(P_{j\cdot})\bigr),\;
            \rho_j = \frac{\sum_k R_{jk}}{\sum_{jk} R_{jk}},\qquad
            C = \frac1K \sum_k \bigl(1 - H_D(\tilde P_{\cdot k})\bigr),

  :math:`H_n` the entropy in base :math:`n` (so each term lies in [0, 1]).
  Informativeness is the classifiers' mean accuracy on held-out codes (the paper
  reports the error, 1 - accuracy). The forests consider every code dimension at
  every split (bagged trees), so importance is not handed to a dimension merely
  because the informative one was not drawn, and each factor's leaf size is chosen
  by cross-validation on the training codes: fixed small leaves let the forests fit
  noise with splits on uninformative dimensions, which impurity importance credits.

* **FactorVAE score** (Kim & Mnih, "Disentangling by Factorising", ICML 2018):
  each vote fixes one factor ``k`` at a value drawn from the data, takes
  ``batch_size`` codes with that value, divides them by the codes' overall standard
  deviation and votes ``(argmin_j Var_j, k)``; dimensions whose overall std is under
  0.05 are left out (collapsed, as in disentanglement_lib). A majority-vote
  classifier (each dimension -> its most voted factor) is fitted on ``n_train`` votes;
  the score is its accuracy on ``n_eval`` fresh votes. The paper renders new images
  for each vote; here the batches are drawn (with replacement when fewer) from the
  given codes, which for a full factorial grid such as ``shapes`` is the same law.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "DCI_LEAF_FRACTIONS",
    "correlation_ratio",
    "dci",
    "dci_scores",
    "discrete_mutual_information",
    "discretise",
    "factorvae_score",
    "mutual_information_gap",
    "posterior_mutual_information",
    "posterior_mutual_information_gap",
]


def _as_codes(codes: Any, name: str = "codes") -> np.ndarray:
    if hasattr(codes, "detach"):
        codes = codes.detach().cpu().numpy()
    codes = np.asarray(codes, dtype=np.float64)
    if codes.ndim != 2 or codes.shape[0] < 2 or codes.shape[1] < 1:
        raise ValueError(f"{name} must have shape (N, D) with N >= 2, got {codes.shape}")
    if not np.isfinite(codes).all():
        raise ValueError(f"{name} must be finite (NaN or inf found)")
    return codes


def _raw_factors(factors: Any, n: int, name: str = "factors") -> np.ndarray:
    """Factors ``(N, K)`` (or ``(N,)``) checked: ``(N, K)`` discrete values."""
    if hasattr(factors, "detach"):
        factors = factors.detach().cpu().numpy()
    factors = np.asarray(factors)
    if factors.ndim == 1:
        factors = factors[:, None]
    if factors.ndim != 2 or factors.shape[0] != n or factors.shape[1] < 1:
        raise ValueError(f"{name} must have shape ({n}, K) to match the codes, got {factors.shape}")
    if not np.issubdtype(factors.dtype, np.integer):
        if not np.isfinite(factors).all() or (factors != np.round(factors)).any():
            raise ValueError(f"{name} must hold discrete (integer) factor values")
    return factors


def _value_indices(factors: np.ndarray) -> np.ndarray:
    """Each column's values -> their rank among the column's distinct values (int64)."""
    return np.stack([np.unique(col, return_inverse=True)[1] for col in factors.T], axis=1)


def _as_factors(factors: Any, n: int, name: str = "factors") -> np.ndarray:
    """Factors ``(N, K)`` (or ``(N,)``) -> ``(N, K)`` int64 value indices ``0 .. n_k - 1``."""
    return _value_indices(_raw_factors(factors, n, name))


def discretise(codes: Any, n_bins: int = 20) -> np.ndarray:
    """Each column cut into ``n_bins`` equal-width bins over its range: ``(N, D)`` indices.

    Bin ``b`` of a column with range ``[lo, hi]`` is ``[lo + b w, lo + (b + 1) w)``,
    ``w = (hi - lo) / n_bins``, the last one closed (``np.histogram``'s bins); a
    constant column is all bin 0.
    """
    codes = _as_codes(codes)
    if int(n_bins) != n_bins or n_bins < 2:
        raise ValueError(f"n_bins must be an int >= 2, got {n_bins!r}")
    lo, hi = codes.min(axis=0), codes.max(axis=0)
    width = np.where(hi > lo, hi - lo, 1.0)
    bins = np.floor((codes - lo) / width * n_bins).astype(np.int64)
    return np.clip(bins, 0, int(n_bins) - 1)


def discrete_mutual_information(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Plug-in mutual information (nats) between every column of ``x`` ``(N, A)`` and of
    ``y`` ``(N, B)``, both non-negative ints: ``(A, B)``,
    :math:`I = \\sum_{ab} p_{ab} \\log \\frac{p_{ab}}{p_a p_b}` from the joint histogram."""
    x, y = np.asarray(x, dtype=np.int64), np.asarray(y, dtype=np.int64)
    n = x.shape[0]
    out = np.zeros((x.shape[1], y.shape[1]))
    for i, a in enumerate(x.T):
        na = a.max() + 1
        pa = np.bincount(a, minlength=na) / n
        for j, b in enumerate(y.T):
            nb = b.max() + 1
            joint = np.bincount(a * nb + b, minlength=na * nb).reshape(na, nb) / n
            pb = joint.sum(axis=0)
            nz = joint > 0
            out[i, j] = (joint[nz] * np.log(joint[nz] / np.outer(pa, pb)[nz])).sum()
    return np.maximum(out, 0.0)  # rounding can leave -1e-17 for independent columns


def _entropy(factors: np.ndarray) -> np.ndarray:
    """Plug-in entropy (nats) of each column of non-negative ints ``(N, K)``."""
    out = []
    for col in factors.T:
        p = np.bincount(col) / len(col)
        p = p[p > 0]
        out.append(-(p * np.log(p)).sum())
    return np.asarray(out)


def mutual_information_gap(codes: Any, factors: Any, n_bins: int = 20) -> dict[str, Any]:
    """MIG of ``codes`` ``(N, D)`` for ``factors`` ``(N, K)`` (Chen et al. 2018).

    Returns ``mig`` (float, in [0, 1]), ``per_factor`` ``(K,)`` normalised gaps,
    ``mutual_information`` ``(D, K)`` (nats, binned codes) and ``factor_entropy`` ``(K,)``.
    """
    codes = _as_codes(codes)
    if codes.shape[1] < 2:
        raise ValueError(f"codes must have at least 2 dimensions for a gap, got {codes.shape[1]}")
    factors = _as_factors(factors, codes.shape[0])
    entropy = _entropy(factors)
    if (entropy == 0).any():
        k = int(np.flatnonzero(entropy == 0)[0])
        raise ValueError(
            f"factors column {k} takes a single value: its entropy is 0, MIG is undefined"
        )
    mi = discrete_mutual_information(discretise(codes, n_bins), factors)
    top = np.sort(mi, axis=0)[::-1]
    per_factor = (top[0] - top[1]) / entropy
    return {
        "mig": float(per_factor.mean()),
        "per_factor": per_factor,
        "mutual_information": mi,
        "factor_entropy": entropy,
    }


def correlation_ratio(codes: Any, factors: Any) -> np.ndarray:
    r"""``(D, K)``: the share of each code dimension's variance that each factor explains
    alone, the correlation ratio

    .. math:: \eta^2_{jk} = \frac{\sum_v n_v (\bar z_{j \mid v_k = v} - \bar z_j)^2}
              {\sum_n (z_{nj} - \bar z_j)^2}

    (between-value over total sum of squares; 0 for a constant dimension). Unlike the
    mutual information of binned codes it has no binning and no small-sample bias from
    the runner-up dimension, and it tells which factors a dimension mixes: on a full
    factorial grid a dimension that is an additive sum of functions of the factors has
    a column that sums to 1.
    """
    codes = _as_codes(codes)
    factors = _as_factors(factors, codes.shape[0])
    centred = codes - codes.mean(axis=0)
    total = (centred**2).sum(axis=0)
    out = np.zeros((codes.shape[1], factors.shape[1]))
    for k, column in enumerate(factors.T):
        counts = np.bincount(column)
        sums = np.stack([np.bincount(column, weights=c, minlength=counts.size)
                         for c in centred.T])  # fmt: skip
        between = (sums**2 / np.maximum(counts, 1)).sum(axis=1)
        out[:, k] = np.divide(between, total, out=np.zeros_like(total), where=total > 0)
    return out


_LOG_2PI = float(np.log(2 * np.pi))


def _mixture_entropy(z: Any, mean: Any, logvar: Any, chunk: int) -> Any:
    r"""``(D,)``: :math:`-\frac1S \sum_s \log \frac1M \sum_m N(z_{sj}; \mu_{mj},
    \sigma^2_{mj})` for samples ``z`` ``(S, D)`` and components ``(M, D)`` (torch, float64)."""
    import torch

    inv_var = torch.exp(-logvar)
    norm = -0.5 * (_LOG_2PI + logvar)  # (M, D)
    total = torch.zeros(z.shape[1], dtype=z.dtype)
    for start in range(0, z.shape[0], chunk):
        block = z[start : start + chunk, None, :]  # (s, 1, D)
        log_q = norm - 0.5 * (block - mean) ** 2 * inv_var  # (s, M, D)
        total -= (torch.logsumexp(log_q, dim=1) - np.log(mean.shape[0])).sum(dim=0)
    return total / z.shape[0]


def posterior_mutual_information(
    mean: Any, logvar: Any, factors: Any, *, random_state: int = 0, chunk: int = 64
) -> dict[str, Any]:
    r"""Mutual information between each code dimension and each factor under the
    encoder's Gaussian posteriors, estimated as Chen et al. (2018, Sec. 5; their
    ``disentanglement_metrics.py``) do for MIG: with one draw
    :math:`z_n \sim q(z \mid x_n)` per data point and
    :math:`q(z_j) = \frac1N \sum_n q(z_j \mid x_n)`,

    .. math:: I(z_j; v_k) = \hat H(z_j) - \sum_v p(v_k = v)\, \hat H(z_j \mid v_k = v),
              \qquad \hat H(z_j) = -\frac1N \sum_n \log q(z_{nj}),

    the conditional entropies by the same estimate within the points with
    :math:`v_k = v` (their own mixture). Unlike the binned posterior means of
    :func:`mutual_information_gap`, a dimension that transmits nothing (posterior
    variance ~1, means nearly constant) has MI ~0 here, however its means correlate
    with a factor. Clamped at 0 (Monte Carlo noise), in nats.

    ``mean``, ``logvar``: ``(N, D)`` posterior parameters; ``factors`` ``(N, K)``. Every
    point is used (Chen et al. subsample 10,000 draws of dSprites' 737,280 for the
    marginal; here the N draws of the test set). Cost: about :math:`N^2 D` log-densities
    for the marginals and as many again spread over the factors' values.
    Returns ``mutual_information`` ``(D, K)``, ``marginal_entropy`` ``(D,)``,
    ``conditional_entropy`` ``(D, K)``, ``factor_entropy`` ``(K,)``.
    """
    import torch

    mean = _as_codes(mean, "mean")
    logvar = _as_codes(logvar, "logvar")
    if logvar.shape != mean.shape:
        raise ValueError(f"logvar must have the shape of mean {mean.shape}, got {logvar.shape}")
    if not (np.isfinite(mean).all() and np.isfinite(logvar).all()):
        raise ValueError("mean and logvar must be finite")
    factors = _as_factors(factors, mean.shape[0])
    rng = np.random.default_rng(random_state)
    z = mean + np.exp(0.5 * logvar) * rng.standard_normal(mean.shape)
    tm, tl, tz = (torch.from_numpy(a) for a in (mean, logvar, z))
    marginal = _mixture_entropy(tz, tm, tl, chunk).numpy()
    conditional = np.zeros((mean.shape[1], factors.shape[1]))
    for k, column in enumerate(factors.T):
        for value in np.unique(column):
            rows = torch.from_numpy(np.flatnonzero(column == value))
            weight = len(rows) / len(column)
            conditional[:, k] += weight * _mixture_entropy(
                tz[rows], tm[rows], tl[rows], chunk
            ).numpy()
    return {
        "mutual_information": np.maximum(marginal[:, None] - conditional, 0.0),
        "marginal_entropy": marginal,
        "conditional_entropy": conditional,
        "factor_entropy": _entropy(factors),
    }


def posterior_mutual_information_gap(
    mean: Any, logvar: Any, factors: Any, *, random_state: int = 0
) -> dict[str, Any]:
    """MIG from :func:`posterior_mutual_information` (Chen et al.'s estimator): the
    gap between each factor's two most informative dimensions over its entropy, then
    the mean over factors. Returns ``mig``, ``per_factor`` ``(K,)`` and the arrays of
    :func:`posterior_mutual_information`. (Chen et al.'s dSprites MIG averages over
    scale, orientation and the positions only: the mean of ``per_factor`` without
    the shape.)"""
    # checked before the N^2 D estimate, not after it
    codes = _as_codes(mean, "mean")
    if codes.shape[1] < 2:
        raise ValueError(f"codes must have at least 2 dimensions for a gap, got {codes.shape[1]}")
    if (_entropy(_as_factors(factors, codes.shape[0])) == 0).any():
        raise ValueError("a factor takes a single value: its entropy is 0, MIG is undefined")
    out = posterior_mutual_information(mean, logvar, factors, random_state=random_state)
    top = np.sort(out["mutual_information"], axis=0)[::-1]
    per_factor = (top[0] - top[1]) / out["factor_entropy"]
    return {"mig": float(per_factor.mean()), "per_factor": per_factor, **out}


def _one_minus_entropy(p: np.ndarray, axis: int) -> np.ndarray:
    """``1 - H_n(p)`` along ``axis`` after normalising to sum 1 (``n`` its length);
    1 for ``n = 1`` (nothing to spread over), 0 for an all-zero row (no mass)."""
    n = p.shape[axis]
    total = p.sum(axis=axis, keepdims=True)
    q = np.divide(p, total, out=np.zeros_like(p), where=total > 0)
    if n == 1:
        return np.where(total.squeeze(axis) > 0, 1.0, 0.0)
    logs = np.log(q, out=np.zeros_like(q), where=q > 0)
    score = 1 + (q * logs).sum(axis=axis) / np.log(n)
    return np.where(total.squeeze(axis) > 0, score, 0.0)


def dci_scores(importance: Any) -> dict[str, Any]:
    """Disentanglement and completeness of an importance matrix ``(D, K)`` (>= 0).

    ``disentanglement``: :math:`\\sum_j \\rho_j (1 - H_K(P_{j\\cdot}))`;
    ``completeness``: mean over factors of :math:`1 - H_D(\\tilde P_{\\cdot k})`
    (Eastwood & Williams 2018); also ``per_code`` ``(D,)``, ``per_factor`` ``(K,)``.
    """
    r = np.asarray(importance, dtype=np.float64)
    if r.ndim != 2 or (r < 0).any() or not np.isfinite(r).all() or r.sum() <= 0:
        raise ValueError(
            f"importance must be a (D, K) matrix of finite values >= 0, not all 0, got {r.shape}"
        )
    per_code = _one_minus_entropy(r, axis=1)
    per_factor = _one_minus_entropy(r, axis=0)
    rho = r.sum(axis=1) / r.sum()
    return {
        "disentanglement": float((rho * per_code).sum()),
        "completeness": float(per_factor.mean()),
        "per_code": per_code,
        "per_factor": per_factor,
    }


#: Leaf sizes tried by :func:`dci`, as fractions of the codes a forest is fitted on (never
#: under ``min_samples_leaf``): 0 is the fixed ``min_samples_leaf`` forest.
DCI_LEAF_FRACTIONS = (0.0, 0.005, 0.01, 0.02, 0.04)


def _leaf(fraction: float, n: int, least: int) -> int:
    return max(int(least), int(np.ceil(fraction * n)))


def _select_leaf_fraction(
    codes: np.ndarray, target: np.ndarray, fractions: Sequence[float], least: int,
    folds: int, make_forest: Any, rng: np.random.Generator,
) -> float:
    """The leaf fraction of the best mean ``folds``-fold validation accuracy on the
    training codes; a tie goes to the larger leaf (the simpler forest)."""
    n = len(codes)
    parts = np.array_split(rng.permutation(n), folds)
    splits = [(np.concatenate(parts[:i] + parts[i + 1 :]), parts[i]) for i in range(folds)]
    # fractions that give the same leaves on every fold are one candidate (the smallest)
    candidates: dict[tuple[int, ...], float] = {}
    for fraction in sorted(fractions):
        leaves = tuple(_leaf(fraction, len(fit), least) for fit, _ in splits)
        candidates.setdefault(leaves, fraction)
    if len(candidates) == 1:
        return next(iter(candidates.values()))
    best, best_score = 0.0, -1.0
    for leaves, fraction in candidates.items():  # increasing leaves: >= prefers the larger
        score = np.mean([
            make_forest(leaf).fit(codes[fit], target[fit]).score(codes[held], target[held])
            for leaf, (fit, held) in zip(leaves, splits, strict=True)
        ])
        if score >= best_score:
            best, best_score = fraction, score
    return best


def dci(
    codes: Any,
    factors: Any,
    codes_test: Any = None,
    factors_test: Any = None,
    test_fraction: float = 0.2,
    n_estimators: int = 10,
    min_samples_leaf: int = 5,
    leaf_fractions: Sequence[float] = DCI_LEAF_FRACTIONS,
    selection_folds: int = 3,
    random_state: int = 0,
) -> dict[str, Any]:
    """DCI (Eastwood & Williams 2018) with one random forest per factor.

    The forests (``n_estimators`` trees, seeded by ``random_state``) are fitted on
    ``codes``/``factors`` and scored on ``codes_test``/``factors_test``; without a test
    set, a random ``test_fraction`` of the examples is held out (seeded). Each factor's
    leaf size is chosen by ``selection_folds``-fold cross-validation on the training codes
    among ``max(min_samples_leaf, ceil(f * n))`` for ``f`` in ``leaf_fractions`` (``n``
    the codes fitted on); ``leaf_fractions=(0,)`` fits every forest with
    ``min_samples_leaf``, no selection. Returns ``disentanglement``, ``completeness``,
    ``informativeness`` (mean held-out accuracy), ``train_accuracy`` and
    ``test_accuracy`` ``(K,)``, ``importance`` ``(D, K)`` (each column sums to 1),
    ``min_samples_leaf`` ``(K,)`` (the leaf sizes used) and the per-code / per-factor terms.
    """
    from sklearn.ensemble import RandomForestClassifier

    codes = _as_codes(codes)
    factors = _raw_factors(factors, codes.shape[0])
    if (codes_test is None) != (factors_test is None):
        raise ValueError("codes_test and factors_test must be given together")
    fractions = tuple(float(f) for f in leaf_fractions)
    if not fractions or not all(0 <= f < 1 for f in fractions):
        raise ValueError(f"leaf_fractions must be fractions in [0, 1), got {leaf_fractions!r}")
    if int(selection_folds) != selection_folds or selection_folds < 2:
        raise ValueError(f"selection_folds must be an int >= 2, got {selection_folds!r}")
    if codes_test is None:
        if not 0 < test_fraction < 1:
            raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
        order = np.random.default_rng(random_state).permutation(codes.shape[0])
        n_test = max(1, int(round(test_fraction * codes.shape[0])))
        codes_test, codes = codes[order[:n_test]], codes[order[n_test:]]
        factors_test, factors = factors[order[:n_test]], factors[order[n_test:]]
    else:
        codes_test = _as_codes(codes_test, "codes_test")
        factors_test = _raw_factors(factors_test, codes_test.shape[0], "factors_test")
        if codes_test.shape[1] != codes.shape[1] or factors_test.shape[1] != factors.shape[1]:
            raise ValueError(
                f"codes_test and factors_test must have {codes.shape[1]} and "
                f"{factors.shape[1]} columns like codes and factors, got "
                f"{codes_test.shape[1]} and {factors_test.shape[1]}"
            )
    # one value -> index map for both sets
    both = _value_indices(np.concatenate([factors, factors_test]))
    factors, factors_test = both[: len(factors)], both[len(factors) :]
    n_codes, n_factors = codes.shape[1], factors.shape[1]

    def make_forest(leaf: int) -> Any:
        return RandomForestClassifier(
            n_estimators=n_estimators,
            min_samples_leaf=leaf,
            # every dimension at every split: the informative one always wins its split,
            # so a dimension that only duplicates another gets no importance ('sqrt'
            # features: D = 0.70 instead of 1.00 for a permuted copy of the factors)
            max_features=None,
            random_state=random_state,
            n_jobs=1,
        )

    importance = np.zeros((n_codes, n_factors))
    train_acc, test_acc = np.zeros(n_factors), np.zeros(n_factors)
    leaves = np.zeros(n_factors, dtype=np.int64)
    for k in range(n_factors):
        # Small leaves let a forest fit the factor's noise with splits on dimensions that
        # carry nothing about it, and impurity importance then credits them: a disentangled
        # code with noise scores D = 0.39 on the 7560 shapes_fine test codes with leaves of
        # 5, 0.95 with the validated leaf (docs/disentanglement.md).
        fraction = min(fractions)
        if len(fractions) > 1 and len(codes) >= 2 * selection_folds:
            fraction = _select_leaf_fraction(
                codes, factors[:, k], fractions, min_samples_leaf, int(selection_folds),
                make_forest, np.random.default_rng([random_state, k]),
            )
        leaves[k] = _leaf(fraction, len(codes), min_samples_leaf)
        forest = make_forest(int(leaves[k])).fit(codes, factors[:, k])
        importance[:, k] = forest.feature_importances_
        train_acc[k] = forest.score(codes, factors[:, k])
        test_acc[k] = forest.score(codes_test, factors_test[:, k])
    if importance.sum() == 0:  # every forest is a single leaf: the codes carry nothing
        scores = {"disentanglement": 0.0, "completeness": 0.0,
                  "per_code": np.zeros(n_codes), "per_factor": np.zeros(n_factors)}
    else:
        scores = dci_scores(importance)
    return {
        **scores,
        "informativeness": float(test_acc.mean()),
        "train_accuracy": train_acc,
        "test_accuracy": test_acc,
        "importance": importance,
        "min_samples_leaf": leaves,
    }


def factorvae_score(
    codes: Any,
    factors: Any,
    batch_size: int = 64,
    n_train: int = 5000,
    n_eval: int = 2500,
    active_threshold: float = 0.05,
    random_state: int = 0,
) -> dict[str, Any]:
    """FactorVAE score (Kim & Mnih 2018) of ``codes`` ``(N, D)`` for ``factors`` ``(N, K)``.

    Returns ``score`` (held-out accuracy of the majority-vote classifier, in [0, 1]),
    ``train_accuracy``, ``votes`` ``(D, K)`` (training votes), ``active`` ``(D,)``
    (dimensions with overall std >= ``active_threshold``). With no active dimension
    the score is 0 (as in disentanglement_lib). The threshold is absolute, meant for
    codes on the scale of an N(0, I) prior; for codes of arbitrary scale (deterministic
    autoencoders) pass ``active_threshold=0`` (every non-constant dimension).
    """
    codes = _as_codes(codes)
    factors = _as_factors(factors, codes.shape[0])
    # a variance needs 2 codes
    for name, value, least in (("batch_size", batch_size, 2), ("n_train", n_train, 1),
                               ("n_eval", n_eval, 1)):
        if int(value) != value or value < least:
            raise ValueError(f"{name} must be an int >= {least}, got {value!r}")
    n_codes, n_factors = codes.shape[1], factors.shape[1]
    scale = codes.std(axis=0)
    active = (scale >= active_threshold) & (np.ptp(codes, axis=0) > 0)  # ptp: exact
    if not active.any():
        return {"score": 0.0, "train_accuracy": 0.0,
                "votes": np.zeros((n_codes, n_factors), dtype=np.int64), "active": active}
    normalised = codes[:, active] / scale[active]
    dims = np.flatnonzero(active)
    rng = np.random.default_rng(random_state)
    n = len(codes)
    # The examples sorted by each factor's value, all factors in one array: the
    # examples with factor k = v are sorted[k * n + start[k, v] :][: count[k, v]].
    sorted_ = np.concatenate([np.argsort(col, kind="stable") for col in factors.T])
    n_values = factors.max(axis=0) + 1
    count = np.zeros((n_factors, n_values.max()), dtype=np.int64)
    for k, col in enumerate(factors.T):
        count[k, : n_values[k]] = np.bincount(col)
    start = np.cumsum(count, axis=1) - count

    def votes(total: int) -> np.ndarray:
        out = np.zeros((n_codes, n_factors), dtype=np.int64)
        for size in np.diff(np.r_[0:total:1000, total]):  # 1000 votes at a time
            k = rng.integers(n_factors, size=size)
            v = factors[rng.integers(n, size=size), k]  # a value drawn from the data
            # batch_size examples with factor k = v, iid (as freshly generated images)
            picks = rng.integers(0, count[k, v][:, None], size=(size, int(batch_size)))
            batch = sorted_[(k * n + start[k, v])[:, None] + picks]
            lowest = dims[np.argmin(normalised[batch].var(axis=1), axis=1)]
            np.add.at(out, (lowest, k), 1)
        return out

    train, test = votes(n_train), votes(n_eval)
    classifier = train.argmax(axis=1)  # each dimension -> its most voted factor
    rows = np.arange(n_codes)
    return {
        "score": float(test[rows, classifier].sum() / test.sum()),
        "train_accuracy": float(train[rows, classifier].sum() / train.sum()),
        "votes": train,
        "active": active,
    }
