"""The bench's ``report.html``: every model's figures side by side and the convergence
curves of all models on one plot."""

from __future__ import annotations

from pathlib import Path

from ._common import RATIOS


def side_by_side(paths: list[Path], labels: list[str], out: Path, pad: int = 8) -> Path:
    """One PNG with the images of ``paths`` in a row, each under its label."""
    from PIL import Image, ImageDraw

    images = [Image.open(p).convert("RGB") for p in paths]
    label_h = 16
    width = sum(im.width for im in images) + pad * (len(images) + 1)
    height = max(im.height for im in images) + label_h + 2 * pad
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    x = pad
    for image, label in zip(images, labels, strict=True):
        draw.text((x, pad // 2), label, fill="black")
        canvas.paste(image, (x, pad + label_h))
        x += image.width + pad
    canvas.save(out)
    return out


def score_curve(history: list[dict[str, float]], score: str) -> list[tuple[float, float]]:
    """``[(epoch, value)]`` of a disentanglement curve column (``mig``, ...) of a history:
    ``val_<score>`` (a run with early stopping) or else ``test_<score>``."""
    column = next((f"{split}_{score}" for split in ("val", "test")
                   if any(f"{split}_{score}" in h for h in history)), None)
    return [(h["epoch"], h[column]) for h in history if column in h]


def write_bench_report(bench, records, rows, out_dir: Path) -> None:
    """``report.html`` of a bench in ``out_dir``: the convergence curves of every model,
    its figures side by side (first seed) and the rows (:func:`summarise`) of the table."""
    from ..evaluation.figures import convergence_plot
    from ..evaluation.report import write_report

    curves = {}
    for name in dict.fromkeys(r["run"] for r in records):
        first = next(r for r in records if r["run"] == name)
        curves[name] = [
            (h["epoch"], h["test_rec_loss"]) for h in first["_history"] if "test_rec_loss" in h
        ]
    figures: dict[str, Path] = {}
    if any(curves.values()):
        figures["Test reconstruction loss per epoch (first seed of each model)"] = convergence_plot(
            curves, out_dir / "convergence.png", ylabel="test reconstruction loss"
        )
    # the disentanglement curve (evaluation.disentanglement_every), where the runs logged it
    for score, label in (("mig", "MIG"), ("dci_disentanglement", "DCI disentanglement")):
        curves = {
            name: score_curve(next(r for r in records if r["run"] == name)["_history"], score)
            for name in dict.fromkeys(r["run"] for r in records)
        }
        if any(curves.values()):
            figures[f"{label} per epoch (first seed of each model)"] = convergence_plot(
                curves, out_dir / f"convergence_{score}.png", ylabel=label
            )
    firsts = {}
    for record in records:
        firsts.setdefault(record["run"], record)
    for stem, caption in (
        ("conditional", "Conditional generation, one row per prior component"),
        ("samples", "Samples from the prior"),
        ("reconstructions", "Reconstructions (rows of test images, then their reconstructions)"),
        ("traversals", "Latent traversals, one row per factor (its most important dimension)"),
        ("latent_clusters", "Latent codes coloured by cluster (prior components or k-means)"),
    ):
        found = [
            (name, Path(r["run_dir"]) / "figures" / f"{stem}.png") for name, r in firsts.items()
        ]
        found = [(name, path) for name, path in found if path.exists()]
        if found:
            names, paths = zip(*found, strict=True)
            figures[f"{caption}, every model side by side (first seed)"] = side_by_side(
                list(paths), list(names), out_dir / f"{stem}_all.png"
            )
    metrics = {
        row["run"]: {
            k: row[k]
            for k in (
                "test_rec_loss",
                "classifier_fd",
                "fid",
                "seconds_per_epoch",
                "regulariser_share",
                *RATIOS,
            )
            if k in row
        }
        for row in rows
    }
    write_report(
        out_dir,
        title=f"otae bench: {bench.name}",
        config={
            "bench": bench.name,
            "seeds": sorted({r["seed"] for r in records}),
            "overrides": bench.overrides,
        },
        metrics=metrics,
        figures=figures,
        history=[],
    )
