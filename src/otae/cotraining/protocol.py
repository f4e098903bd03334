"""The multi-view classification protocol of the RAE paper (§6.2, Table 4).

For each seed:

1. a stratified 80/10/10 train/validation/test split
   (:func:`otae.data.multiview.split_indices` with ``numpy.random.default_rng(seed)``);
2. every view preprocessed with TRAINING statistics only (``ProtocolConfig.preprocess``):
   ``"standardise"`` (default: z-score, constant columns keep scale 1), ``"minmax"``
   (each column to [0, 1] by its training min and max, constant columns to 0) or
   ``"none"`` (raw values);
3. unsupervised training of each method on the training rows (labels unused). With
   ``ProtocolConfig.disjoint`` the training rows are first split (seeded, stratified:
   :func:`otae.data.multiview.stratified_parts` with ``default_rng((seed, 1))``) into one
   disjoint part per view and view k is trained on its part only, so no row is seen in
   two views: unpaired methods train on these per-view sets, paired methods (see
   :data:`~otae.cotraining.baselines.METHOD_PAIRING`) are not run and reported
   "n/a (needs pairs)";
4. features of every split (for autoencoders: the concatenated latent means of ALL
   views; every row of every split has all views);
5. a softmax (multinomial logistic) regression on the training features and labels,
   features z-scored with training statistics (``StandardScaler`` in the pipeline). With
   ``ProtocolConfig.labels_per_class = n`` it sees only n labelled training rows per class
   (:func:`otae.data.multiview.labelled_subset`, ``default_rng(seed)``); the autoencoders
   still use all training rows;
6. model selection on the VALIDATION split only: the inverse regularisation ``C`` of the
   regression from ``ProtocolConfig.c_grid`` and, when ``AESettings.checkpoints`` lists
   epochs, the training epoch; ties keep the earlier epoch, then the earlier grid ``C``;
7. the test accuracy of the selected (epoch, C), scored once;
8. per-view diagnostics of the autoencoder methods at the selected epoch: the latent-mean
   spread (mean over latent coordinates of the population std of the view's latent means
   over all training rows) and the single-view test accuracy (steps 5-7 with ``C``
   selected on that view's latent means alone). A spread below :data:`COLLAPSE_SPREAD`
   marks the view as collapsed onto the prior (its codes carry almost no information).

Each (seed, method) is a *cell* of its own. A cell whose training diverges
(:class:`~otae.cotraining.model.CoTrainingDiverged`) is recorded as diverged, with the
epoch, the non-finite terms, the cause it can measure and the fix
(:func:`divergence_hint`), and the other cells still run: accuracies of a diverged cell
are NaN, and means, standard deviations and paired differences use the finished cells.
With ``ProtocolConfig.cells`` set, every finished cell is written to that file as it
finishes (:class:`~otae.cotraining.cells.CellStore`), and a later run with the same
settings takes it from there instead of training it again.

:func:`run_protocol` returns per-method test accuracies (plus what was selected, the
timings and the diagnostics); :func:`write_table` writes them in the layout of Table 4
(mean ± sample std in %, with the paper's value where the dataset is one of Table 4's)
followed by the per-view diagnostics; :func:`save_tsne` draws a t-SNE of learnt features
coloured by label.
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._io import atomic_write, atomic_write_text
from ..data.multiview import (
    PREPROCESSING,
    column_scales,
    labelled_subset,
    preprocess_views,
    split_indices,
    stratified_parts,
)
from .baselines import METHOD_LABELS, METHOD_PAIRING, METHODS, AESettings, make_method
from .cells import Cell, CellStore, setting_key
from .model import CoTrainingDiverged

__all__ = [
    "COLLAPSE_SPREAD",
    "NEEDS_PAIRS",
    "PAPER_TABLE4",
    "SCALE_SPAN_WARNING",
    "ProtocolConfig",
    "ProtocolResults",
    "accuracy_summary",
    "applicable_methods",
    "divergence_hint",
    "divergence_summary",
    "format_accuracy",
    "format_difference",
    "paired_difference",
    "run_protocol",
    "save_tsne",
    "scale_warning",
    "split_views",
    "write_table",
]

#: A view whose latent-mean spread (module docstring, step 8) is below this is "collapsed".
COLLAPSE_SPREAD = 0.05

#: :func:`scale_warning` speaks when the largest column variances of raw views differ by
#: more than this factor, or when one of them exceeds it.
SCALE_SPAN_WARNING = 1e3

#: Table cell of a paired method in a disjoint run.
NEEDS_PAIRS = "n/a (needs pairs)"

#: Table 4 of the RAE paper (accuracy %, mean, std), per dataset and method.
PAPER_TABLE4: dict[str, dict[str, tuple[float, float]]] = {
    "Caltech101-7": {
        "independent": (56.92, 1.67),
        "coreg": (76.58, 1.38),
        "cca": (78.33, 1.88),
        "aes_cca": (80.24, 1.22),
        "aes_w": (83.07, 1.69),
        "aes_gw": (84.29, 1.74),
    },
    "Caltech101-20": {
        "independent": (33.07, 2.09),
        "coreg": (60.25, 1.66),
        "cca": (52.27, 2.32),
        "aes_cca": (62.37, 1.35),
        "aes_w": (69.58, 2.03),
        "aes_gw": (69.39, 2.01),
    },
    "Handwritten": {
        "independent": (52.09, 5.82),
        "coreg": (56.20, 5.25),
        "cca": (66.28, 5.02),
        "aes_cca": (69.72, 4.64),
        "aes_w": (71.21, 5.55),
        "aes_gw": (72.36, 3.82),
    },
    "Cathgen": {
        "independent": (64.36, 1.93),
        "coreg": (66.79, 1.30),
        "cca": (65.28, 2.17),
        "aes_cca": (66.89, 1.57),
        "aes_w": (66.06, 1.68),
        "aes_gw": (66.99, 1.77),
    },
}


@dataclass
class ProtocolConfig:
    """Settings of :func:`run_protocol`.

    ``ae``: the autoencoders (:class:`AESettings`); ``c_grid``: candidate ``C`` of the
    logistic regression; ``logreg_max_iter``: its L-BFGS iterations; ``tsne_path``: if
    set and ``"aes_gw"`` is run, a t-SNE PNG of its TEST features for the first seed;
    ``dataset``: the column name in the table; ``log``: progress lines.
    ``preprocess``: ``"standardise"``, ``"none"`` or ``"minmax"`` (step 2);
    ``labels_per_class``: labelled training rows per class of the classifier (None: all;
    step 5); ``disjoint``: one disjoint part of the training rows per view (step 3).
    ``cells``: a JSON-lines file of finished cells (module docstring; None: keep none);
    ``fresh``: train every cell again even when ``cells`` holds it.
    """

    ae: AESettings = field(default_factory=AESettings)
    c_grid: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0, 100.0)
    logreg_max_iter: int = 5000
    tsne_path: str | Path | None = None
    dataset: str = "Handwritten"
    log: Callable[[str], None] | None = None
    preprocess: str = "standardise"
    labels_per_class: int | None = None
    disjoint: bool = False
    cells: str | Path | None = None
    fresh: bool = False

    def __post_init__(self) -> None:
        if self.preprocess not in PREPROCESSING:
            raise ValueError(
                f"preprocess must be one of {', '.join(PREPROCESSING)}, got {self.preprocess!r}"
            )
        if self.labels_per_class is not None and (
            isinstance(self.labels_per_class, bool)
            or int(self.labels_per_class) != self.labels_per_class
            or self.labels_per_class < 1
        ):
            raise ValueError(
                f"labels_per_class must be an integer >= 1 or None, got {self.labels_per_class!r}"
            )


@dataclass
class ProtocolResults:
    """``accuracies[method]``: test accuracy (fraction) per seed, in the order of ``seeds``.

    ``val_accuracies`` the validation accuracy of the selected model, ``selected`` the
    selected ``(epoch, C)`` per seed, ``seconds`` the wall time of fit + selection.
    ``diagnostics[method]`` (autoencoder methods only): per seed ``{view: {"spread": s,
    "accuracy": a}}`` (module docstring, step 8). ``skipped[method]``: why a requested
    method was not run (:data:`NEEDS_PAIRS`); its other entries are empty lists.
    ``preprocess``, ``labels_per_class``, ``disjoint``: the regime (:class:`ProtocolConfig`);
    ``epoch_selection``: whether more than one checkpoint epoch was a candidate.
    ``diverged[method][seed]``: the divergence record of each diverged cell (``epoch``,
    ``step``, ``non_finite``, ``cause``, ``fix``); its accuracies are NaN and its
    ``selected`` entry is ``(epoch of divergence, nan)``. ``resumed``: how many cells were
    taken from ``ProtocolConfig.cells`` instead of trained.
    """

    dataset: str
    seeds: list[int]
    accuracies: dict[str, list[float]] = field(default_factory=dict)
    val_accuracies: dict[str, list[float]] = field(default_factory=dict)
    selected: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    seconds: dict[str, list[float]] = field(default_factory=dict)
    diagnostics: dict[str, list[dict[str, dict[str, float]]]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    preprocess: str = "standardise"
    labels_per_class: int | None = None
    disjoint: bool = False
    epoch_selection: bool = False
    diverged: dict[str, dict[int, dict]] = field(default_factory=dict)
    resumed: int = 0

    def diverged_cells(self) -> list[tuple[int, str, dict]]:
        """``(seed, method, record)`` of every diverged cell, seed by seed."""
        return sorted(
            (seed, method, record)
            for method, per_seed in self.diverged.items()
            for seed, record in per_seed.items()
        )


def split_views(
    views: Mapping[str, np.ndarray],
    labels: np.ndarray,
    seed: int,
    preprocess: str = "standardise",
):
    """(train, val, test) lists of preprocessed views and the three label arrays.

    ``preprocess``: ``"standardise"``, ``"none"`` or ``"minmax"``, always with the
    training split's statistics (module docstring, step 2).
    """
    labels = np.asarray(labels)
    tr, va, te = split_indices(len(labels), labels, seed)
    splits: list[list[np.ndarray]] = [[], [], []]
    for array in views.values():
        array = np.asarray(array, dtype=np.float32)
        for k, part in enumerate(preprocess_views(preprocess, array[tr], array[va], array[te])):
            splits[k].append(part)
    return splits, (labels[tr], labels[va], labels[te])


def applicable_methods(methods: Sequence[str], disjoint: bool) -> tuple[list[str], dict[str, str]]:
    """``(methods to run, {method: reason} of those that cannot run)``.

    With ``disjoint`` the paired methods cannot run; a ValueError if none is left.
    """
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; choose from {METHODS}")
    if not disjoint:
        return list(methods), {}
    skipped = {m: NEEDS_PAIRS for m in methods if METHOD_PAIRING[m] == "paired"}
    run = [m for m in methods if m not in skipped]
    if not run:
        raise ValueError(
            f"disjoint views leave no pairs, so none of the paired methods {list(methods)} "
            f"can run; add an unpaired one (independent, aes_w, aes_gw)"
        )
    return run, skipped


def _classifier(c: float, max_iter: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    # lbfgs fits the multinomial (softmax) model for more than two classes.
    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=max_iter))


def _select_c(train_x, y_train, val_x, y_val, config: ProtocolConfig):
    """(val accuracy, C, fitted classifier) of the best ``C`` (ties: the earlier one)."""
    best = None
    for c in config.c_grid:
        clf = _classifier(c, config.logreg_max_iter).fit(train_x, y_train)
        val = float(clf.score(val_x, y_val))
        if best is None or val > best[0]:
            best = (val, c, clf)
    return best


def _select_and_test(method, splits, ys, config: ProtocolConfig, labelled=None):
    """Select (epoch, C) on validation, then score the test split ONCE.

    ``labelled``: the training rows the classifier may use (None: all). Returns
    ``(val, epoch, C, test, [train, val, test] features of the selected epoch)``.
    """
    rows = slice(None) if labelled is None else labelled
    best = None
    for epoch in method.checkpoints:
        train_x, val_x = (method.transform(split, epoch=epoch) for split in splits[:2])
        val, c, clf = _select_c(train_x[rows], ys[0][rows], val_x, ys[1], config)
        if best is None or val > best[0]:
            best = (val, epoch, c, clf, [train_x, val_x])
    val, epoch, c, clf, feats = best
    feats.append(method.transform(splits[2], epoch=epoch))
    return val, epoch, c, float(clf.score(feats[2], ys[2])), feats


def _view_diagnostics(
    method, splits, ys, epoch: int, view_names: Sequence[str], config, labelled=None
) -> dict[str, dict[str, float]]:
    """Per view: latent-mean spread over the training rows and single-view test accuracy."""
    rows = slice(None) if labelled is None else labelled
    per_split = [method.view_features(split, epoch=epoch) for split in splits]
    out = {}
    for k, name in enumerate(view_names):
        train_x, val_x, test_x = (features[k] for features in per_split)
        spread = float(np.asarray(train_x, dtype=np.float64).std(axis=0).mean())
        _, _, clf = _select_c(train_x[rows], ys[0][rows], val_x, ys[1], config)
        out[name] = {"spread": spread, "accuracy": float(clf.score(test_x, ys[2]))}
    return out


def run_protocol(
    views: Mapping[str, np.ndarray],
    labels: np.ndarray,
    methods: Sequence[str] = METHODS,
    seeds: Sequence[int] = (0, 1, 2),
    config: ProtocolConfig | None = None,
) -> ProtocolResults:
    """Table 4 protocol (module docstring) for ``methods`` of :data:`METHODS` over ``seeds``.

    ``views``: name -> (N, d) array with paired rows; ``labels``: (N,) integers. The
    method's own seed (weights, shuffles, noise) is the split seed.
    """
    config = config or ProtocolConfig()
    run, skipped = applicable_methods(methods, config.disjoint)
    log = config.log or (lambda _: None)
    view_names = list(views)
    results = ProtocolResults(
        config.dataset,
        [int(s) for s in seeds],
        skipped=skipped,
        preprocess=config.preprocess,
        labels_per_class=config.labels_per_class,
        disjoint=bool(config.disjoint),
    )
    for method_name in methods:
        for store in (
            results.accuracies,
            results.val_accuracies,
            results.selected,
            results.seconds,
        ):
            store[method_name] = []
    store = None
    if config.cells is not None:
        store = CellStore(Path(config.cells), fresh=config.fresh)
        key = setting_key(views, labels, config)
    for seed_index, seed in enumerate(results.seeds):
        splits, ys = split_views(views, labels, seed, config.preprocess)
        labelled = (
            None
            if config.labels_per_class is None
            else labelled_subset(ys[0], config.labels_per_class, seed)
        )
        train_views = splits[0]
        if config.disjoint:
            # A different stream from labelled_subset's, so the labelled rows are not
            # tied to one part.
            parts = stratified_parts(ys[0], len(train_views), (seed, 1))
            train_views = [view[part] for view, part in zip(train_views, parts, strict=True)]
        for name in run:
            cell = store.get(key, seed, name) if store is not None else None
            if cell is not None:
                results.resumed += 1
                log(f"seed {seed} {name}: finished before, taken from {store.path}")
            else:
                cell = _run_cell(name, seed, seed_index, view_names, splits, ys, train_views,
                                 labelled, config, results)  # fmt: skip
                if store is not None:
                    store.put(key, cell)
            _record(results, cell, log)
    return results


def _run_cell(
    name, seed, seed_index, view_names, splits, ys, train_views, labelled, config, results
) -> Cell:
    """Train, select and score one method on one seed; a divergence becomes a record."""
    start = time.perf_counter()
    method = make_method(name, config.ae, seed=seed, view_names=view_names)
    try:
        method.fit(train_views)
    except CoTrainingDiverged as err:
        cause, fix = divergence_hint(
            dict(zip(view_names, train_views, strict=True)),
            config,
            before_any_update=(err.epoch, err.step) == (1, 1),
        )
        divergence = {"epoch": err.epoch, "step": err.step, "non_finite": err.non_finite,
                      "cause": cause, "fix": fix}  # fmt: skip
        return Cell(name, int(seed), "diverged", seconds=time.perf_counter() - start,
                    epoch=err.epoch, divergence=divergence)  # fmt: skip
    results.epoch_selection |= len(method.checkpoints) > 1
    val, epoch, c, test, feats = _select_and_test(method, splits, ys, config, labelled)
    seconds = time.perf_counter() - start
    diagnostics = None
    if hasattr(method, "view_features"):
        diagnostics = _view_diagnostics(method, splits, ys, epoch, view_names, config, labelled)
    if name == "aes_gw" and seed_index == 0 and config.tsne_path is not None:
        save_tsne(
            feats[2],
            ys[2],
            config.tsne_path,
            seed=seed,
            title=f"AEs+GW test features ({config.dataset}, seed {seed})",
        )
    return Cell(name, int(seed), "ok", test=test, val=val, epoch=int(epoch), c=float(c),
                seconds=seconds, diagnostics=diagnostics)  # fmt: skip


def _record(results: ProtocolResults, cell: Cell, log: Callable[[str], None]) -> None:
    """Append ``cell`` to the per-method lists of ``results`` and log it."""
    name, seed = cell.method, cell.seed
    results.accuracies[name].append(cell.test)
    results.val_accuracies[name].append(cell.val)
    results.selected[name].append((int(cell.epoch or 0), math.nan if cell.c is None else cell.c))
    results.seconds[name].append(cell.seconds)
    if cell.diverged:
        record = cell.divergence or {}
        results.diverged.setdefault(name, {})[seed] = record
        log(f"seed {seed} {name}: {_divergence_text(record)}")
        return
    log(
        f"seed {seed} {name}: test {100 * cell.test:.2f}% (val {100 * cell.val:.2f}%, "
        f"epoch {cell.epoch}, C {cell.c:g}) in {cell.seconds:.1f} s"
    )
    if cell.diagnostics is not None:
        results.diagnostics.setdefault(name, []).append(cell.diagnostics)
        log(
            f"seed {seed} {name} per view: "
            + ", ".join(
                f"{v} spread {d['spread']:.3g} acc {100 * d['accuracy']:.2f}%"
                for v, d in cell.diagnostics.items()
            )
        )


def _divergence_text(record: Mapping) -> str:
    where = f"epoch {record.get('epoch')}"
    if record.get("step") is not None:
        where += f", step {record['step']}"
    terms = ", ".join(record.get("non_finite") or []) or "?"
    return (
        f"diverged at {where} (non-finite: {terms}); {record.get('cause', '')}; "
        f"fix: {record.get('fix', '')}"
    )


def divergence_hint(
    train_views: Mapping[str, np.ndarray],
    config: ProtocolConfig,
    before_any_update: bool = False,
) -> tuple[str, str]:
    """``(cause, fix)`` for a diverged cell, from what can be measured: the largest column
    variance of each (preprocessed) training view, the learning rate, and whether the loss
    was already non-finite at the first step (``before_any_update``), which no learning
    rate can cause: inputs large enough to overflow the freshly initialised network (its
    log-variance head, whose exponential is the posterior's scale)."""
    scales = column_scales(train_views)
    big = max(scales, key=scales.get)
    small = min(scales, key=scales.get)
    spans = scales[big] > SCALE_SPAN_WARNING * max(scales[small], 1e-300)
    large = spans or scales[big] > SCALE_SPAN_WARNING
    rescale = (
        "standardise the views (--preprocess standardise)"
        if config.preprocess != "standardise"
        else "rescale the view's columns before loading"
    )
    if before_any_update:
        cause = (
            f"the loss was not finite before any update: inputs with column variance up to "
            f"{scales[big]:.3g} ({big}) overflow the initialised encoder"
        )
        return cause, rescale
    if large and config.preprocess != "standardise":
        kind = "raw" if config.preprocess == "none" else f"{config.preprocess}-scaled"
        cause = (
            f"{kind} column variances reach {scales[big]:.3g} ({big}) against "
            f"{scales[small]:.3g} ({small})"
        )
        return cause, f"{rescale}, or lower --lr (now {config.ae.lr:g})"
    cause = f"learning rate {config.ae.lr:g} with column variances up to {scales[big]:.3g} ({big})"
    return cause, f"lower the learning rate (--lr, e.g. {config.ae.lr / 10:g}) or --gamma"


def scale_warning(views: Mapping[str, np.ndarray], preprocess: str) -> str | None:
    """One line when raw views (``preprocess == "none"``) have column variances that
    differ by more than :data:`SCALE_SPAN_WARNING` between views, or exceed it: their
    squared errors then dwarf each other, and training at the default learning rate can
    diverge. None otherwise (and for every other ``preprocess``)."""
    if preprocess != "none":
        return None
    scales = column_scales(views)
    big = max(scales, key=scales.get)
    small = min(scales, key=scales.get)
    span = scales[big] / max(scales[small], 1e-300)
    if span <= SCALE_SPAN_WARNING and scales[big] <= SCALE_SPAN_WARNING:
        return None
    return (
        f"--preprocess none: the largest column variance is {scales[big]:.3g} in {big} and "
        f"{scales[small]:.3g} in {small} ({math.log10(span):.1f} orders of magnitude apart); "
        "raw training may diverge or let one view dominate; --preprocess standardise "
        "is safe at any scale"
    )


def accuracy_summary(values: Sequence[float]) -> tuple[float, float]:
    """(mean, sample std) in % over the finished cells (NaN = diverged); (nan, nan) if
    none finished, std 0 for one."""
    a = 100.0 * np.asarray(values, dtype=np.float64)
    a = a[np.isfinite(a)]
    if a.size == 0:
        return math.nan, math.nan
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0


def paired_difference(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, bool]:
    """``(mean(d), SE, mean(d) > 3 SE)`` of the paired differences ``d = a - b`` in
    percentage points (inputs are fractions) over the seeds where both finished (a
    diverged cell is NaN); SE = sample std(d) / sqrt(n) is NaN and the flag False below
    2 pairs."""
    d = 100.0 * (np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))
    d = d[np.isfinite(d)]
    if d.size < 2:
        return float(d.mean()) if d.size else math.nan, math.nan, False
    se = float(d.std(ddof=1) / math.sqrt(d.size))
    return float(d.mean()), se, bool(d.mean() > 3.0 * se)


def format_difference(values: Sequence[float], reference: Sequence[float]) -> str:
    """``"+3.10 ± 0.80 (3.9 SE)"``: the paired difference to ``reference`` in percentage
    points over the seeds where both finished, its standard error, and the ratio; ``"n/a"``
    below two such seeds."""
    mean, se, _ = paired_difference(values, reference)
    if math.isnan(se):
        return "n/a"
    ratio = mean / se if se > 0 else math.copysign(math.inf, mean) if mean else 0.0
    return f"{mean:+.2f} ± {se:.2f} ({ratio:+.1f} SE)"


def format_accuracy(values: Sequence[float]) -> str:
    """A table cell: ``"mean ± std"`` (%) over the finished seeds, with
    ``"(k of n seeds; m diverged)"`` when some diverged, ``"diverged (n of n seeds)"``
    when all did."""
    values = np.asarray(values, dtype=np.float64)
    finished = int(np.isfinite(values).sum())
    if finished == 0:
        return f"diverged ({values.size} of {values.size} seeds)" if values.size else "—"
    text = "{:.2f} ± {:.2f}".format(*accuracy_summary(values))
    if finished < values.size:
        text += f" ({finished} of {values.size} seeds; {values.size - finished} diverged)"
    return text


def _regime_note(results: ProtocolResults) -> str:
    labels = (
        "all training rows"
        if results.labels_per_class is None
        else f"{results.labels_per_class} labelled training rows per class"
    )
    rows = (
        "each view trained on its own disjoint part of the training rows (no pairs)"
        if results.disjoint
        else "all views trained on all training rows"
    )
    return f"Regime: preprocess {results.preprocess}; classifier on {labels}; {rows}.\n"


def _divergence_note(results: ProtocolResults) -> str:
    """The diverged cells, one line each (empty when none diverged)."""
    cells = results.diverged_cells()
    if not cells:
        return ""
    total = sum(len(v) for m, v in results.accuracies.items() if m not in results.skipped)
    lines = [f"\n{len(cells)} of {total} cells diverged (left out of the means above):\n"]
    for seed, method, record in cells:
        label = METHOD_LABELS.get(method, method)
        lines.append(f"- seed {seed}, {label}: {_divergence_text(record)}")
    return "\n".join(lines) + "\n"


def divergence_summary(results: ProtocolResults) -> str | None:
    """One line, e.g. ``"3 of 30 cells diverged: seed 0 aes_gw (epoch 1: rec_mor), ..."``;
    None when no cell diverged."""
    cells = results.diverged_cells()
    if not cells:
        return None
    total = sum(len(v) for m, v in results.accuracies.items() if m not in results.skipped)
    items = [
        f"seed {seed} {method} (epoch {r.get('epoch')}: {', '.join(r.get('non_finite') or [])})"
        for seed, method, r in cells
    ]
    shown = ", ".join(items[:5]) + (f", and {len(items) - 5} more" if len(items) > 5 else "")
    fix = cells[0][2].get("fix", "")
    return f"{len(cells)} of {total} cells diverged: {shown}; fix: {fix}"


def _write_csv(path: str | Path, fields: list[str], rows: list[dict]) -> None:
    def write(handle) -> None:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)

    atomic_write(path, write, mode="w")


def _diagnostics_table(results: ProtocolResults, path_csv: Path) -> str:
    """Markdown of the per-view diagnostics (mean over seeds); writes ``path_csv``."""
    lines = [
        "",
        "Per-view diagnostics (mean over seeds): latent-mean spread = mean over latent "
        "coordinates of the std of the view's latent means over the training rows; "
        "single-view accuracy = softmax regression on that view's latent means alone "
        f"(C selected on validation); collapsed = spread < {COLLAPSE_SPREAD:g} "
        "(COLLAPSE_SPREAD).",
        "",
        "| method | view | latent-mean spread | single-view test accuracy (%) | collapsed |",
        "|---|---|---|---|---|",
    ]
    rows = []
    for name, per_seed in results.diagnostics.items():
        for view in per_seed[0] if per_seed else ():
            spreads = [d[view]["spread"] for d in per_seed]
            accuracies = [d[view]["accuracy"] for d in per_seed]
            spread = float(np.mean(spreads))
            mean, std = accuracy_summary(accuracies)
            collapsed = "yes" if spread < COLLAPSE_SPREAD else "no"
            label = METHOD_LABELS.get(name, name)
            lines.append(
                f"| {label} | {view} | {spread:.4g} | {mean:.2f} ± {std:.2f} | {collapsed} |"
            )
            rows.append(
                {
                    "method": name,
                    "view": view,
                    "n_seeds": len(per_seed),
                    "spread_mean": f"{spread:.6g}",
                    "accuracy_mean": f"{mean:.4f}",
                    "accuracy_std": f"{std:.4f}",
                    "spreads": ";".join(f"{v:.6g}" for v in spreads),
                    "accuracies": ";".join(f"{100 * v:.4f}" for v in accuracies),
                    "collapsed": collapsed,
                }
            )
    _write_csv(path_csv, list(rows[0]) if rows else ["method", "view"], rows)
    return "\n".join(lines) + "\n"


def write_table(
    results: ProtocolResults | Mapping[str, Sequence[float]],
    path_md: str | Path,
    path_csv: str | Path,
    dataset: str | None = None,
) -> str:
    """Write Table 4's layout (method, pairing, accuracy % mean ± sample std) as Markdown
    and CSV; returns the Markdown. ``results`` may also be a plain ``{method: [acc, ...]}``.

    A "paper" column is added when the dataset is one of :data:`PAPER_TABLE4`. Methods in
    ``results.skipped`` get their reason (:data:`NEEDS_PAIRS`) instead of an accuracy. For
    :class:`ProtocolResults` the note states the regime (preprocess, labels per class,
    disjoint; also CSV columns) and, when there are diagnostics, a second table "per-view
    diagnostics" follows (its CSV: ``<path_csv stem>_diagnostics.csv`` beside ``path_csv``).
    """
    full = results if isinstance(results, ProtocolResults) else None
    if full is not None:
        accuracies, dataset = full.accuracies, dataset or full.dataset
        skipped = full.skipped
    else:
        accuracies, skipped = dict(results), {}
    dataset = dataset or "accuracy"
    paper = PAPER_TABLE4.get(dataset, {})
    header = ["method", "pairing", f"{dataset} (%)"] + (["paper (%)"] if paper else [])
    reference = accuracies.get("independent") if "independent" not in skipped else None
    if reference is not None and len(accuracies) > 1:
        header.append("− Independent (pp, paired)")
    else:
        reference = None
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    rows = []
    regime = {
        "preprocess": full.preprocess if full else "",
        "labels_per_class": (full.labels_per_class or "all") if full else "",
        "disjoint": str(full.disjoint) if full else "",
    }
    n_seeds = 0
    for name, values in accuracies.items():
        label, pairing = METHOD_LABELS.get(name, name), METHOD_PAIRING.get(name, "")
        ref = paper.get(name)
        if name in skipped:
            mean = std = None
            cells = [label, pairing, skipped[name]]
        else:
            mean, std = accuracy_summary(values)
            n_seeds = max(n_seeds, len(values))
            cells = [label, pairing, format_accuracy(values)]
        if paper:
            cells.append(f"{ref[0]:.2f} ± {ref[1]:.2f}" if ref else "")
        difference = ""
        if reference is not None and name != "independent" and name not in skipped:
            difference = format_difference(values, reference)
        if reference is not None:
            cells.append(difference or "—")
        lines.append("| " + " | ".join(cells) + " |")
        rows.append(
            {
                "method": name,
                "label": label,
                "pairing": pairing,
                "dataset": dataset,
                "n_seeds": len(values),
                "n_diverged": sum(1 for v in values if not math.isfinite(v)),
                "mean": "" if mean is None or math.isnan(mean) else f"{mean:.4f}",
                "std": "" if std is None or math.isnan(std) else f"{std:.4f}",
                "accuracies": ";".join(
                    f"{100 * v:.4f}" if math.isfinite(v) else "diverged" for v in values
                ),
                "paper_mean": f"{ref[0]:.2f}" if ref else "",
                "paper_std": f"{ref[1]:.2f}" if ref else "",
                "minus_independent": difference if reference is not None else "",
                **regime,
                "note": skipped.get(name, ""),
            }
        )
    selected = "C and epoch" if full is not None and full.epoch_selection else "C"
    note = (
        f"\nTest accuracy (%) over {n_seeds} seeds, mean ± sample std; softmax regression "
        f"on the learnt features, {selected} selected on the validation split.\n"
    )
    if reference is not None:
        note += (
            "− Independent: mean paired difference to Independent AEs over the seeds where "
            "both finished (percentage points) ± its standard error (sample std of the "
            "differences / √n), and their ratio.\n"
        )
    if full is not None:
        note += _regime_note(full)
        note += _divergence_note(full)
    text = "\n".join(lines) + "\n" + note
    if full is not None and full.diagnostics:
        path_diag = Path(path_csv).with_name(Path(path_csv).stem + "_diagnostics.csv")
        text += _diagnostics_table(full, path_diag)
    atomic_write_text(path_md, text)
    fields = [
        "method",
        "label",
        "pairing",
        "dataset",
        "n_seeds",
        "n_diverged",
        "mean",
        "std",
        "accuracies",
        "paper_mean",
        "paper_std",
        "minus_independent",
        *regime,
        "note",
    ]
    _write_csv(path_csv, fields, rows)
    return text


def save_tsne(
    features: np.ndarray,
    labels: np.ndarray,
    path: str | Path,
    seed: int = 0,
    title: str = "t-SNE of learnt features",
) -> Path:
    """t-SNE (scikit-learn, 2-D) of ``features`` coloured by ``labels``, saved as a PNG.

    Uses matplotlib's object API (``Figure`` + Agg canvas), never pyplot's global state.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from sklearn.manifold import TSNE

    features = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels)
    perplexity = float(min(30.0, max(2.0, (len(features) - 1) / 3.0)))
    embedding = TSNE(
        n_components=2, perplexity=perplexity, init="pca", random_state=seed
    ).fit_transform(features)
    fig = Figure(figsize=(5, 5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    scatter = ax.scatter(embedding[:, 0], embedding[:, 1], c=labels, cmap="tab10", s=8)
    ax.legend(*scatter.legend_elements(), title="label", fontsize=7, loc="best")
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path
