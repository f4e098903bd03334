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

:func:`run_protocol` returns per-method test accuracies (plus what was selected, the
timings and the diagnostics); :func:`write_table` writes them in the layout of Table 4
(mean ± sample std in %, with the paper's value where the dataset is one of Table 4's)
followed by the per-view diagnostics; :func:`save_tsne` draws a t-SNE of learnt features
coloured by label.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.multiview import (
    PREPROCESSING,
    labelled_subset,
    preprocess_views,
    split_indices,
    stratified_parts,
)
from .baselines import METHOD_LABELS, METHOD_PAIRING, METHODS, AESettings, make_method

__all__ = [
    "COLLAPSE_SPREAD",
    "NEEDS_PAIRS",
    "PAPER_TABLE4",
    "ProtocolConfig",
    "ProtocolResults",
    "applicable_methods",
    "run_protocol",
    "save_tsne",
    "split_views",
    "write_table",
]

#: A view whose latent-mean spread (module docstring, step 8) is below this is "collapsed".
COLLAPSE_SPREAD = 0.05

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
            start = time.perf_counter()
            method = make_method(name, config.ae, seed=seed, view_names=view_names)
            method.fit(train_views)
            results.epoch_selection |= len(method.checkpoints) > 1
            val, epoch, c, test, feats = _select_and_test(method, splits, ys, config, labelled)
            seconds = time.perf_counter() - start
            results.accuracies[name].append(test)
            results.val_accuracies[name].append(val)
            results.selected[name].append((int(epoch), float(c)))
            results.seconds[name].append(seconds)
            log(
                f"seed {seed} {name}: test {100 * test:.2f}% (val {100 * val:.2f}%, "
                f"epoch {epoch}, C {c:g}) in {seconds:.1f} s"
            )
            if hasattr(method, "view_features"):
                diag = _view_diagnostics(method, splits, ys, epoch, view_names, config, labelled)
                results.diagnostics.setdefault(name, []).append(diag)
                log(
                    f"seed {seed} {name} per view: "
                    + ", ".join(
                        f"{v} spread {d['spread']:.3g} acc {100 * d['accuracy']:.2f}%"
                        for v, d in diag.items()
                    )
                )
            if name == "aes_gw" and seed_index == 0 and config.tsne_path is not None:
                save_tsne(
                    feats[2],
                    ys[2],
                    config.tsne_path,
                    seed=seed,
                    title=f"AEs+GW test features ({config.dataset}, seed {seed})",
                )
    return results


def _summary(values: Sequence[float]) -> tuple[float, float]:
    a = 100.0 * np.asarray(values, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


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


def _write_csv(path: str | Path, fields: list[str], rows: list[dict]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


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
            mean, std = _summary(accuracies)
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
            mean, std = _summary(values)
            n_seeds = max(n_seeds, len(values))
            cells = [label, pairing, f"{mean:.2f} ± {std:.2f}"]
        if paper:
            cells.append(f"{ref[0]:.2f} ± {ref[1]:.2f}" if ref else "")
        lines.append("| " + " | ".join(cells) + " |")
        rows.append(
            {
                "method": name,
                "label": label,
                "pairing": pairing,
                "dataset": dataset,
                "n_seeds": len(values),
                "mean": "" if mean is None else f"{mean:.4f}",
                "std": "" if std is None else f"{std:.4f}",
                "accuracies": ";".join(f"{100 * v:.4f}" for v in values),
                "paper_mean": f"{ref[0]:.2f}" if ref else "",
                "paper_std": f"{ref[1]:.2f}" if ref else "",
                **regime,
                "note": skipped.get(name, ""),
            }
        )
    selected = "C and epoch" if full is not None and full.epoch_selection else "C"
    note = (
        f"\nTest accuracy (%) over {n_seeds} seeds, mean ± sample std; softmax regression "
        f"on the learnt features, {selected} selected on the validation split.\n"
    )
    if full is not None:
        note += _regime_note(full)
    text = "\n".join(lines) + "\n" + note
    if full is not None and full.diagnostics:
        path_diag = Path(path_csv).with_name(Path(path_csv).stem + "_diagnostics.csv")
        text += _diagnostics_table(full, path_diag)
    Path(path_md).parent.mkdir(parents=True, exist_ok=True)
    Path(path_md).write_text(text, encoding="utf-8")
    fields = [
        "method",
        "label",
        "pairing",
        "dataset",
        "n_seeds",
        "mean",
        "std",
        "accuracies",
        "paper_mean",
        "paper_std",
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
