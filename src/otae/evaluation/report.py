"""A self-contained HTML report of one run.

:func:`write_report` writes ``run_dir/report.html``: one file that can be
mailed (every figure embedded as a base64 ``data:`` URI, no external assets)
holding a metrics table, the clustering and disentanglement scores where measured,
the resolved config as YAML-like text, the per-epoch history and the figures with
captions. Every piece
of text goes through :func:`html.escape`. :func:`generate_report` makes the standard figures of a
trained model into ``run_dir/figures/`` and then calls :func:`write_report`.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as _dt
import html
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .._io import atomic_write_text
from .figures import (
    conditional_caption,
    conditional_grid,
    interpolation_grid,
    latent_plot,
    loss_curves,
    reconstruction_grid,
    sample_grid,
    traversal_grid,
)
from .traversals import MIG_FACTOR_PREFIX, POSTERIOR_MIG_FACTOR_PREFIX, mig_factor_key

__all__ = ["format_value", "generate_report", "to_yaml", "write_report"]

PathLike = str | os.PathLike

_MIME = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".svg": "image/svg+xml",
}

_STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 1.8em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f2f2f2; } td.key, th.key { text-align: left; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
figure { margin: 1.2em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 0.9em; color: #444; margin-top: 0.3em; }
.scroll { max-height: 480px; overflow: auto; display: inline-block; }
.missing { color: #a00; }
"""


# ---------------------------------------------------------------------- formatting
def _plain(value: Any) -> Any:
    """Tensors, numpy scalars/arrays, dataclasses and paths as plain Python values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def format_value(value: Any) -> str:
    """How a value appears in the tables: floats with 6 significant digits."""
    value = _plain(value)
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        return f"{value:.6g}"
    return str(value)


def _yaml_scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value)
    if text == "" or text != text.strip() or any(ch in text for ch in ":#{}[],&*!|>'\"%@`\n"):
        return repr(text)
    return text


def to_yaml(value: Any, indent: int = 0) -> str:
    """YAML-like text of nested dicts / lists / scalars (for display, not for parsing)."""
    value = _plain(value)
    pad = "  " * indent
    if isinstance(value, Mapping):
        if not value:
            return pad + "{}"
        lines = []
        for key, item in value.items():
            item = _plain(item)
            if isinstance(item, Mapping) and item:
                lines.append(f"{pad}{key}:")
                lines.append(to_yaml(item, indent + 1))
            elif (
                isinstance(item, (list, tuple))
                and item
                and not all(
                    isinstance(_plain(v), (int, float, str, bool, type(None))) for v in item
                )
            ):
                lines.append(f"{pad}{key}:")
                lines.append(to_yaml(item, indent + 1))
            else:
                lines.append(f"{pad}{key}: {to_yaml(item).strip()}")
        return "\n".join(lines)
    if isinstance(value, (list, tuple)):
        items = [_plain(v) for v in value]
        if all(isinstance(v, (int, float, str, bool, type(None))) for v in items):
            return pad + "[" + ", ".join(_yaml_scalar(v) for v in items) + "]"
        lines = []
        for item in items:
            body = to_yaml(item, indent + 1).lstrip()
            lines.append(f"{pad}- {body}")
        return "\n".join(lines)
    return pad + _yaml_scalar(value)


def _flatten(metrics: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows = []
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        value = _plain(value)
        if isinstance(value, Mapping):
            rows.extend(_flatten(value, name + "."))
        else:
            rows.append((name, value))
    return rows


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _cell(value: Any, key: bool = False) -> str:
    plain = _plain(value)
    shown = format_value(plain)
    full = repr(plain) if isinstance(plain, float) else shown
    cls = ' class="key"' if key or not isinstance(plain, (int, float)) else ""
    tip = f' title="{_esc(full)}"' if full != shown else ""
    return f"<td{cls}{tip}>{_esc(shown)}</td>"


def _metrics_table(metrics: Mapping[str, Any]) -> str:
    rows = _flatten(metrics)
    if not rows:
        return "<p>No metrics recorded.</p>"
    body = "\n".join(
        f'<tr><td class="key">{_esc(name)}</td>{_cell(value)}</tr>' for name, value in rows
    )
    return f'<table>\n<tr><th class="key">metric</th><th>value</th></tr>\n{body}\n</table>'


def _clustering_html(metrics: Mapping[str, Any]) -> str:
    """The clustering section: ACC / NMI / ARI per source (:mod:`.clustering`), or its note."""
    sources = [
        (source, name)
        for source, name in (("kmeans", "k-means"), ("prior", "prior components"))
        if metrics.get(f"cluster_acc_{source}") is not None
    ]
    if not sources:
        note = metrics.get("clustering")
        return "" if note is None else f"<h2>Clustering</h2>\n<p>{_esc(note)}</p>"
    head = "".join(f"<th>{_esc(m)}</th>" for m in ("ACC", "NMI", "ARI"))
    rows = [
        f'<tr><td class="key">{_esc(name)}</td>'
        + "".join(_cell(metrics.get(f"cluster_{m}_{source}")) for m in ("acc", "nmi", "ari"))
        + "</tr>"
        for source, name in sources
    ]
    k = metrics.get("cluster_prior_components")
    used = metrics.get("cluster_prior_components_used")
    prior = (
        f"; prior: each code to its most responsible of the {k} prior components"
        + (f" ({used} of them are for some code)" if used is not None else "")
        if k else ""
    )
    caption = (
        f"Test codes (posterior means, {metrics.get('cluster_points')} images) clustered "
        f"without labels and scored against the {metrics.get('cluster_classes')} classes. "
        f"k-means: as many clusters as classes{prior}. ACC: best one-to-one matching of "
        "clusters to classes; NMI: arithmetic-mean normalisation; ARI: adjusted Rand index."
    )
    return (
        f'<h2>Clustering</h2>\n<table>\n<tr><th class="key">clusters</th>{head}</tr>\n'
        + "\n".join(rows)
        + f"\n</table>\n<p>{_esc(caption)}</p>"
    )


def _disentanglement_html(metrics: Mapping[str, Any]) -> str:
    """The disentanglement section (:mod:`.traversals`), where the data has factors."""
    if metrics.get("mig") is None:
        note = metrics.get("disentanglement")
        return "" if note is None else f"<h2>Disentanglement</h2>\n<p>{_esc(note)}</p>"
    names = (
        ("mig", "MIG"),
        ("mig_posterior", "MIG (q)"),
        ("dci_disentanglement", "DCI disentanglement"),
        ("dci_completeness", "DCI completeness"),
        ("dci_informativeness", "DCI informativeness"),
        ("factorvae_score", "FactorVAE score"),
    )
    head = "".join(f"<th>{_esc(name)}</th>" for _, name in names)
    row = "".join(_cell(metrics.get(key)) for key, _ in names)
    factors = ", ".join(str(f) for f in metrics.get("disentanglement_factors") or [])
    caption = (
        f"Test codes (posterior means, {metrics.get('disentanglement_points')} images) scored "
        f"against the generative factors ({factors}). MIG (Chen et al. 2018): mean "
        "normalised gap between the two code dimensions most informative of each factor, "
        "20 bins. DCI (Eastwood & Williams 2018): random forests on 80% of the codes; "
        "informativeness is their accuracy on the other 20%. FactorVAE score (Kim & Mnih "
        "2018): accuracy of the majority-vote classifier; dimensions with std under "
        f"{format_value(metrics.get('factorvae_active_threshold'))} (0.05 x the codes' RMS "
        f"std) count as collapsed, {metrics.get('factorvae_active_dims')} active. "
        f"Computed in {format_value(metrics.get('disentanglement_time_s'))} s."
    )
    per_factor = ""
    names_of = metrics.get("disentanglement_factors") or []
    estimators = (
        (MIG_FACTOR_PREFIX, "binned means"),
        (POSTERIOR_MIG_FACTOR_PREFIX, "posteriors (q)"),
    )
    gap_rows = []
    for prefix, label in estimators:
        keys = [mig_factor_key(name, prefix) for name in names_of]
        if keys and all(key in metrics for key in keys):
            cells = "".join(_cell(metrics[key]) for key in keys)
            gap_rows.append(f'<tr><td class="key">{_esc(label)}</td>{cells}</tr>')
    if gap_rows:
        factor_head = "".join(f"<th>{_esc(str(n))}</th>" for n in names_of)
        per_factor = (
            f'<table>\n<tr><th class="key">MIG per factor</th>{factor_head}</tr>\n'
            + "\n".join(gap_rows)
            + "\n</table>\n<p>Each factor's normalised gap between its two most informative "
            "code dimensions (MIG is their mean): which factors the code carries in one "
            "dimension. Binned means: the histogram estimate of disentanglement_lib; "
            "posteriors: Chen et al.'s estimator on the encoder's Gaussian posteriors, "
            "where a dimension that transmits nothing has no information.</p>\n"
        )
    return (
        f"<h2>Disentanglement</h2>\n<table>\n<tr>{head}</tr>\n<tr>{row}</tr>\n</table>\n"
        f"<p>{_esc(caption)}</p>\n{per_factor}"
    )


def _history_table(history: Sequence[Mapping[str, Any]]) -> str:
    if not history:
        return "<p>No history recorded.</p>"
    columns: list[str] = []
    for entry in history:
        for key in entry:
            if key not in columns:
                columns.append(key)
    head = "".join(f"<th>{_esc(c)}</th>" for c in columns)
    rows = []
    for entry in history:
        cells = "".join(_cell(entry[c]) if c in entry else "<td></td>" for c in columns)
        rows.append(f"<tr>{cells}</tr>")
    return f'<div class="scroll"><table>\n<tr>{head}</tr>\n' + "\n".join(rows) + "\n</table></div>"


def _figure_html(caption: str, path: PathLike, run_dir: Path) -> str:
    path = Path(path)
    if not path.is_file():
        return (
            f'<figure><p class="missing">figure file missing: {_esc(path)}</p>'
            f"<figcaption>{_esc(caption)}</figcaption></figure>"
        )
    mime = _MIME.get(path.suffix.lower(), "application/octet-stream")
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    try:
        link = os.path.relpath(path, run_dir)
    except ValueError:  # different drives on Windows
        link = str(path)
    return (
        f'<figure><img src="data:{mime};base64,{data}" alt="{_esc(caption)}">'
        f"<figcaption>{_esc(caption)} "
        f'(<a href="{_esc(Path(link).as_posix())}">{_esc(path.name)}</a>)</figcaption></figure>'
    )


# ---------------------------------------------------------------------- reports
def write_report(
    run_dir: PathLike,
    *,
    title: str,
    config: Mapping[str, Any] | Any,
    metrics: Mapping[str, Any],
    figures: Mapping[str, PathLike],
    history: Sequence[Mapping[str, Any]],
) -> Path:
    """Write ``run_dir/report.html`` and return its path.

    ``figures`` maps captions to image files; each image is embedded as a base64
    ``data:`` URI (a link to the file next to it is kept too). A figure whose
    file does not exist is reported as missing instead of failing the report.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now().isoformat(timespec="seconds")
    figures_html = "\n".join(_figure_html(c, p, run_dir) for c, p in figures.items())
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{_esc(title)}</title>
<style>{_STYLE}</style>
</head>
<body>
<h1>{_esc(title)}</h1>
<p>Generated {_esc(stamp)} in {_esc(run_dir)}.</p>
<h2>Metrics</h2>
{_metrics_table(metrics)}
{_clustering_html(metrics)}
{_disentanglement_html(metrics)}
<h2>Figures</h2>
{figures_html or "<p>No figures.</p>"}
<h2>Training history</h2>
{_history_table(history)}
<h2>Configuration</h2>
<pre>{_esc(to_yaml(config))}</pre>
</body>
</html>
"""
    path = run_dir / "report.html"
    atomic_write_text(path, page)
    return path


def generate_report(
    model: nn.Module,
    run_dir: PathLike,
    test_images: Any,
    test_labels: Tensor | Sequence[int] | None,
    *,
    metrics: Mapping[str, Any],
    history: Sequence[Mapping[str, Any]],
    config: Mapping[str, Any] | Any,
    generator: torch.Generator | None = None,
    latent_method: str = "pca",
    max_points: int = 2000,
    title: str | None = None,
    n_samples: int = 64,
    n_reconstructions: int = 32,
    n_per_component: int = 10,
    clusters: tuple[Sequence[int], str] | None = None,
    traversal: tuple[Tensor | np.ndarray, Sequence[tuple[str, int]]] | None = None,
) -> Path:
    """Make the standard figures into ``run_dir/figures/`` and write the report.

    Figures: prior samples, conditional generation (one row per prior
    component), test reconstructions, the latent plot (``latent_method``, at
    most ``max_points`` test codes) and, if ``history`` is not empty, the loss
    curves. Random draws use ``generator`` in that order (the latent plot's
    subsampling / t-SNE seed is drawn from it too), so a seeded generator makes
    the report reproducible.

    ``clusters``: ``(cluster of each test image, source)`` (source ``"kmeans"`` or
    ``"prior"``, :func:`otae.evaluation.clustering.cluster_assignments`) adds the latent
    plot coloured by cluster, ``figures/latent_clusters.png``. ``traversal``: ``(codes,
    rows)`` adds ``figures/traversals.png`` (:func:`traversal_grid` of the codes, one
    row per ``(label, code dimension)``).
    """
    run_dir = Path(run_dir)
    fig_dir = run_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    device = generator.device
    figures: dict[str, Path] = {}
    figures[f"{n_samples} samples from the prior"] = sample_grid(
        model, fig_dir / "samples.png", n=n_samples, generator=generator
    )
    figures[conditional_caption(model, n_per_component)] = conditional_grid(
        model, fig_dir / "conditional.png", n_per_component=n_per_component, generator=generator
    )
    figures[
        "Reconstructions of test images: each row of originals is followed by a row of "
        "their reconstructions (decoded posterior means)"
    ] = reconstruction_grid(
        model, test_images, fig_dir / "reconstructions.png", n=n_reconstructions
    )
    figures[
        "Interpolations: each row decodes the straight line between the codes of two test "
        "images (first and last tile)"
    ] = interpolation_grid(model, test_images, fig_dir / "interpolations.png")
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator, device=device).item())
    method_name = {"pca": "PCA", "tsne": "t-SNE"}.get(latent_method, latent_method)
    latent_dim = getattr(getattr(model, "config", None), "latent_dim", None)
    projection = "no projection (2-D latent)" if latent_dim == 2 else method_name
    figures[
        f"Latent codes of test images (posterior means, at most {max_points}), coloured by "
        f"label, projection: {projection}; black crosses: prior component means"
    ] = latent_plot(
        model,
        test_images,
        test_labels,
        fig_dir / f"latent_{latent_method}.png",
        method=latent_method,
        max_points=max_points,
        seed=seed,
    )
    if clusters is not None:
        found, source = clusters
        by = {"kmeans": "k-means clusters (as many as classes)",
              "prior": "prior component of highest responsibility"}.get(source, source)  # fmt: skip
        figures[
            f"The same latent codes and projection coloured by cluster: {by}"
        ] = latent_plot(
            model,
            test_images,
            torch.as_tensor(np.asarray(found)),
            fig_dir / "latent_clusters.png",
            method=latent_method,
            max_points=max_points,
            seed=seed,
        )
    if traversal is not None:
        codes, rows = traversal
        labels = "; ".join(f"{label}: z{dim}" for label, dim in rows)
        figures[
            "Latent traversals: each row decodes one test image's code (the one nearest the "
            "median code) with one dimension swept from its 5% to its 95% quantile over the "
            f"test codes; rows: {labels}"
        ] = traversal_grid(
            model, torch.as_tensor(codes), [dim for _, dim in rows], fig_dir / "traversals.png"
        )
    if history:
        figures["Loss curves per epoch"] = loss_curves(history, fig_dir / "loss_curves.png")
    if title is None:
        name = getattr(model, "model_name", type(model).__name__)
        title = f"Run report: {name}"
    return write_report(
        run_dir, title=title, config=config, metrics=metrics, figures=figures, history=history
    )
