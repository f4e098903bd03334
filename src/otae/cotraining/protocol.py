"""The multi-view classification protocol of the RAE paper (§6.2, Table 4).

For each seed:

1. a stratified 80/10/10 train/validation/test split
   (:func:`otae.data.multiview.split_indices` when available, else an equivalent
   stratified split with ``numpy.random.default_rng(seed)``);
2. every view z-scored with TRAINING statistics only (constant columns keep scale 1);
3. unsupervised training of each method on the training rows (labels unused);
4. features of every split (for autoencoders: the concatenated latent means);
5. a softmax (multinomial logistic) regression on the training features and labels,
   features z-scored with training statistics (``StandardScaler`` in the pipeline);
6. model selection on the VALIDATION split only: the inverse regularisation ``C`` of the
   regression from ``ProtocolConfig.c_grid`` and, when ``AESettings.checkpoints`` lists
   epochs, the training epoch; ties keep the earlier epoch, then the earlier grid ``C``;
7. the test accuracy of the selected (epoch, C).

:func:`run_protocol` returns per-method test accuracies (plus what was selected and the
timings); :func:`write_table` writes them in the layout of Table 4 (mean ± sample std in
%, with the paper's value where the dataset is one of Table 4's); :func:`save_tsne` draws
a t-SNE of learnt features coloured by label.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.multiview import split_indices, standardise
from .baselines import METHOD_LABELS, METHOD_PAIRING, METHODS, AESettings, make_method

__all__ = [
    "PAPER_TABLE4",
    "ProtocolConfig",
    "ProtocolResults",
    "run_protocol",
    "save_tsne",
    "split_views",
    "write_table",
]

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
    """

    ae: AESettings = field(default_factory=AESettings)
    c_grid: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0, 100.0)
    logreg_max_iter: int = 5000
    tsne_path: str | Path | None = None
    dataset: str = "Handwritten"
    log: Callable[[str], None] | None = None


@dataclass
class ProtocolResults:
    """``accuracies[method]``: test accuracy (fraction) per seed, in the order of ``seeds``.

    ``val_accuracies`` the validation accuracy of the selected model, ``selected`` the
    selected ``(epoch, C)`` per seed, ``seconds`` the wall time of fit + selection.
    """

    dataset: str
    seeds: list[int]
    accuracies: dict[str, list[float]] = field(default_factory=dict)
    val_accuracies: dict[str, list[float]] = field(default_factory=dict)
    selected: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    seconds: dict[str, list[float]] = field(default_factory=dict)


def split_views(views: Mapping[str, np.ndarray], labels: np.ndarray, seed: int):
    """(train, val, test) lists of standardised views and the three label arrays."""
    labels = np.asarray(labels)
    tr, va, te = split_indices(len(labels), labels, seed)
    splits: list[list[np.ndarray]] = [[], [], []]
    for array in views.values():
        array = np.asarray(array, dtype=np.float32)
        for k, part in enumerate(standardise(array[tr], array[va], array[te])):
            splits[k].append(part)
    return splits, (labels[tr], labels[va], labels[te])


def _classifier(c: float, max_iter: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    # lbfgs fits the multinomial (softmax) model for more than two classes.
    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=max_iter))


def _select_and_test(method, splits, ys, config: ProtocolConfig):
    best = None
    for epoch in method.checkpoints:
        feats = [method.transform(split, epoch=epoch) for split in splits]
        for c in config.c_grid:
            clf = _classifier(c, config.logreg_max_iter).fit(feats[0], ys[0])
            val = float(clf.score(feats[1], ys[1]))
            if best is None or val > best[0]:
                best = (val, epoch, c, float(clf.score(feats[2], ys[2])), feats[2])
    return best


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
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; choose from {METHODS}")
    log = config.log or (lambda _: None)
    results = ProtocolResults(config.dataset, [int(s) for s in seeds])
    for method_name in methods:
        for store in (
            results.accuracies,
            results.val_accuracies,
            results.selected,
            results.seconds,
        ):
            store[method_name] = []
    for seed_index, seed in enumerate(results.seeds):
        splits, ys = split_views(views, labels, seed)
        for name in methods:
            start = time.perf_counter()
            method = make_method(name, config.ae, seed=seed, view_names=list(views))
            method.fit(splits[0])
            val, epoch, c, test, test_features = _select_and_test(method, splits, ys, config)
            seconds = time.perf_counter() - start
            results.accuracies[name].append(test)
            results.val_accuracies[name].append(val)
            results.selected[name].append((int(epoch), float(c)))
            results.seconds[name].append(seconds)
            log(
                f"seed {seed} {name}: test {100 * test:.2f}% (val {100 * val:.2f}%, "
                f"epoch {epoch}, C {c:g}) in {seconds:.1f} s"
            )
            if name == "aes_gw" and seed_index == 0 and config.tsne_path is not None:
                save_tsne(
                    test_features,
                    ys[2],
                    config.tsne_path,
                    seed=seed,
                    title=f"AEs+GW test features ({config.dataset}, seed {seed})",
                )
    return results


def _summary(values: Sequence[float]) -> tuple[float, float]:
    a = 100.0 * np.asarray(values, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def write_table(
    results: ProtocolResults | Mapping[str, Sequence[float]],
    path_md: str | Path,
    path_csv: str | Path,
    dataset: str | None = None,
) -> str:
    """Write Table 4's layout (method, pairing, accuracy % mean ± sample std) as Markdown
    and CSV; returns the Markdown. ``results`` may also be a plain ``{method: [acc, ...]}``.
    A "paper" column is added when the dataset is one of :data:`PAPER_TABLE4`."""
    if isinstance(results, ProtocolResults):
        accuracies, dataset = results.accuracies, dataset or results.dataset
    else:
        accuracies = dict(results)
    dataset = dataset or "accuracy"
    paper = PAPER_TABLE4.get(dataset, {})
    header = ["method", "pairing", f"{dataset} (%)"] + (["paper (%)"] if paper else [])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    rows = []
    for name, values in accuracies.items():
        mean, std = _summary(values)
        label, pairing = METHOD_LABELS.get(name, name), METHOD_PAIRING.get(name, "")
        cells = [label, pairing, f"{mean:.2f} ± {std:.2f}"]
        ref = paper.get(name)
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
                "mean": f"{mean:.4f}",
                "std": f"{std:.4f}",
                "accuracies": ";".join(f"{100 * v:.4f}" for v in values),
                "paper_mean": f"{ref[0]:.2f}" if ref else "",
                "paper_std": f"{ref[1]:.2f}" if ref else "",
            }
        )
    note = (
        f"\nTest accuracy (%) over {len(next(iter(accuracies.values()), []))} seeds, "
        "mean ± sample std; softmax regression on the learnt features, C (and epoch) "
        "selected on the validation split.\n"
    )
    text = "\n".join(lines) + "\n" + note
    Path(path_md).parent.mkdir(parents=True, exist_ok=True)
    Path(path_md).write_text(text, encoding="utf-8")
    Path(path_csv).parent.mkdir(parents=True, exist_ok=True)
    with open(path_csv, "w", newline="", encoding="utf-8") as f:
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
        ]
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
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
