"""``otae bench SET``: train a set of models under one protocol and tabulate them.

A bench set is a YAML file (shipped ones in ``configs/bench/``) naming the runs
(a row label and a model config each), the seeds, overrides applied to every
run, and how many samples the Fréchet distances use. For each (model, seed) the
bench trains the model (``otae train`` machinery; an interrupted bench resumes:
finished runs are skipped, interrupted ones continue from their checkpoint),
measures it, and finally writes into the bench directory:

* ``runs.csv``: one row per (model, seed) with every metric;
* ``table.md`` / ``table.csv``: the paper's Table 2 layout, mean ± std over seeds
  of the test reconstruction loss and the Fréchet distances;
* ``runtime.md``: the paper's Table 3 layout, seconds per epoch, plus seconds per
  training step with and without the regulariser and the regulariser's share;
* ``report.html``: samples and conditional generation of every model side by
  side, and the test-loss convergence curves of all models on one plot.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .training import load_config, resolve_config_path, shipped_configs
from .training.config import read_yaml_mapping
from .typed_config import from_dict


@dataclass
class BenchRun:
    #: row label in the tables (e.g. "RAE (D)")
    name: str
    #: model config: shipped name or path
    config: str
    overrides: list[str] = field(default_factory=list)
    #: seeds of this run only (None: the set's seeds)
    seeds: list[int] | None = None


@dataclass
class BenchConfig:
    name: str
    runs: list[BenchRun]
    description: str = ""
    seeds: list[int] = field(default_factory=lambda: [0])
    #: overrides applied to every run (before the run's own)
    overrides: list[str] = field(default_factory=list)
    #: generated and real test images for the classifier Fréchet distance (0: skip)
    classifier_fd_samples: int = 0
    #: generated and real test images for FID with Inception-v3 (0: skip)
    fid_samples: int = 0
    #: the paper's numbers to print next to ours: row name -> {column: value}
    paper: dict[str, dict[str, float]] = field(default_factory=dict)

    def validate(self) -> None:
        if not self.runs:
            raise ValueError("a bench set needs at least one entry in 'runs'")
        names = [r.name for r in self.runs]
        if len(set(names)) != len(names):
            raise ValueError(f"bench run names must be unique, got {names}")
        if not self.seeds:
            raise ValueError("a bench set needs at least one seed")
        if self.classifier_fd_samples < 0 or self.fid_samples < 0:
            raise ValueError("sample counts must be >= 0")


def load_bench(name_or_path: str | Path) -> BenchConfig:
    path = _resolve_bench(name_or_path)
    values = read_yaml_mapping(path, "a bench set (a mapping with runs:, seeds:, ...)")
    config = from_dict(BenchConfig, values, "bench")
    config.validate()
    return config


def _resolve_bench(name_or_path: str | Path) -> Path:
    path = Path(name_or_path)
    if path.is_file():
        return path
    stem = str(name_or_path).removesuffix(".yaml")
    if not stem.startswith("bench/"):
        stem = f"bench/{stem}"
    try:
        return resolve_config_path(stem)
    except FileNotFoundError:
        shipped = ", ".join(n.removeprefix("bench/") for n in shipped_configs(bench_sets=True))
        raise FileNotFoundError(
            f"bench set {str(name_or_path)!r} not found: not a file, and not one of the "
            f"shipped sets ({shipped})"
        ) from None


def _slug(text: str) -> str:
    from .experiment import slug

    return slug(text)


# ---------------------------------------------------------------------- measuring
def run_bench(
    bench: BenchConfig,
    out_dir: str | Path,
    *,
    overrides: list[str] = (),
    only: list[str] | None = None,
    seeds: list[int] | None = None,
    retime: bool = False,
    log=print,
) -> Path:
    """Train and measure every (run, seed); write the tables and the report."""
    from .experiment import frechet_metrics, run_experiment
    from .training import build_split, load_run

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = [r for r in bench.runs if only is None or r.name in only or _slug(r.name) in only]
    if only is not None and not runs:
        raise ValueError(f"--models {only} matches none of {[r.name for r in bench.runs]}")
    seeds = list(seeds) if seeds is not None else list(bench.seeds)
    records: list[dict[str, Any]] = []
    for run in runs:
        run_seeds = seeds if run.seeds is None else [s for s in run.seeds if s in seeds]
        for seed in run_seeds:
            run_dir = out_dir / _slug(run.name) / f"seed{seed}"
            all_overrides = [
                *bench.overrides,
                *run.overrides,
                *overrides,
                f"training.seed={seed}",
                f"name={_slug(run.name)}-seed{seed}",
            ]
            config = load_config(run.config, all_overrides)
            metrics_path = run_dir / "metrics.json"
            metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else None
            if metrics is None or metrics.get("epochs") != config.training.epochs:
                log(f"[bench] {run.name} seed {seed}: training in {run_dir}")
                start = time.perf_counter()
                resume = (run_dir / "checkpoints" / "last.pt").exists()
                result = run_experiment(config, run_dir, resume=resume, report=True)
                metrics = result.metrics
                metrics["bench_wall_time_s"] = time.perf_counter() - start
                metrics_path.write_text(json.dumps(metrics, indent=2) + "\n")
            if retime:
                metrics.update(_retime(config, run_dir))
                metrics_path.write_text(json.dumps(metrics, indent=2) + "\n")
            if not _has_frechet(metrics, bench):
                _, model, _ = load_run(run_dir, "last", device=str(_device(config)))
                test_data = build_split(config.data, "test")
                metrics.update(
                    frechet_metrics(
                        model,
                        config,
                        test_data,
                        bench.classifier_fd_samples,
                        bench.fid_samples,
                        log=log,
                    )
                )
                metrics_path.write_text(json.dumps(metrics, indent=2) + "\n")
            history = _read_history(run_dir / "history.csv")
            records.append(
                {
                    "run": run.name,
                    "seed": seed,
                    "run_dir": str(run_dir),
                    "encoder": _encoder_kind(config),
                    **metrics,
                    "_history": history,
                }
            )
            log(
                f"[bench] {run.name} seed {seed}: rec {metrics['test_rec_loss']:.2f}"
                + "".join(
                    f", {k} {metrics[k]:.2f}" for k in ("classifier_fd", "fid") if k in metrics
                )
            )
    write_tables(bench, records, out_dir)
    return out_dir


def _retime(config, run_dir: Path) -> dict[str, float]:
    """Time the training step of a finished run again (e.g. on an otherwise idle machine)."""
    from .training import Trainer

    trainer = Trainer(config, run_dir, log=lambda m: None)
    trainer.resume()
    return trainer.regulariser_share(max(config.evaluation.timing_steps, 20))


def _device(config) -> torch.device:
    from .training import select_device

    return select_device(config.training.device)


def _has_frechet(metrics: dict[str, Any], bench: BenchConfig) -> bool:
    wanted = [("classifier_fd", bench.classifier_fd_samples), ("fid", bench.fid_samples)]
    return all(n == 0 or metrics.get(f"{key}_samples") == n for key, n in wanted)


def _encoder_kind(config) -> str:
    from .models import get_model_class

    return "P" if get_model_class(config.model.name).probabilistic else "D"


def _read_history(path: Path) -> list[dict[str, float]]:
    if not path.exists():
        return []
    with path.open() as handle:
        return [
            {k: float(v) for k, v in row.items() if v not in ("", None)}
            for row in csv.DictReader(handle)
        ]


# ---------------------------------------------------------------------- tables
def _mean_std(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _fmt(mean: float, std: float, digits: int = 2) -> str:
    if math.isnan(mean):
        return "—"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def summarise(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per run name: mean and std over seeds of every numeric metric."""
    rows = []
    for name in dict.fromkeys(r["run"] for r in records):
        group = [r for r in records if r["run"] == name]
        row: dict[str, Any] = {"run": name, "encoder": group[0]["encoder"], "seeds": len(group)}
        keys = [k for k, v in group[0].items() if isinstance(v, (int, float)) and k != "seed"]
        for key in keys:
            mean, std = _mean_std([r.get(key) for r in group])
            row[key] = mean
            row[f"{key}_std"] = std
        rows.append(row)
    return rows


def write_tables(bench: BenchConfig, records: list[dict[str, Any]], out_dir: Path) -> None:
    out_dir = Path(out_dir)
    plain = [{k: v for k, v in r.items() if not k.startswith("_")} for r in records]
    keys: list[str] = []
    for r in plain:
        keys += [k for k in r if k not in keys]
    with (out_dir / "runs.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        writer.writerows(plain)
    rows = summarise(records)
    metric_cols = [("test_rec_loss", "Rec. loss")]
    if any("classifier_fd" in r for r in rows):
        metric_cols.append(("classifier_fd", "classifier FD"))
    if any("fid" in r for r in rows):
        metric_cols.append(("fid", "FID"))
    seeds = sorted({r["seed"] for r in records})
    seed_counts = {r["run"]: sum(1 for x in records if x["run"] == r["run"]) for r in records}
    lines = [
        f"# {bench.name}: reconstruction and generation",
        "",
        bench.description.strip(),
        "",
        f"Mean ± std over seeds {seeds} (column 'seeds': how many each row has). "
        "Rec. loss: mean per-image sum of squared errors on "
        "the test images (pixels in [0, 1], the RAE paper's unit). classifier FD: Fréchet "
        "distance between generated and test images in the 128-d feature space of a small "
        "MNIST classifier (NOT comparable with FID). FID: Inception-v3 pool3.",
        "",
        "| method | encoder | seeds | "
        + " | ".join(c for _, c in metric_cols)
        + (" | paper rec. | paper FID" if bench.paper else "")
        + " |",
        "|---|---|---|" + "---|" * len(metric_cols) + ("---|---|" if bench.paper else ""),
    ]
    for row in rows:
        cells = [_fmt(row.get(k, math.nan), row.get(f"{k}_std", math.nan)) for k, _ in metric_cols]
        paper = bench.paper.get(row["run"], {})
        extra = [str(paper.get("rec", "—")), str(paper.get("fid", "—"))] if bench.paper else []
        count = str(seed_counts[row["run"]])
        lines.append("| " + " | ".join([row["run"], row["encoder"], count, *cells, *extra]) + " |")
    baseline = _mean_std([r.get("mean_image_baseline_rec_loss") for r in records])[0]
    lines += ["", f"Mean-image baseline reconstruction loss: {baseline:.2f}."]
    acc = [r.get("classifier_test_accuracy") for r in records if r.get("classifier_test_accuracy")]
    trained_on = sorted(
        {r["classifier_trained_on"] for r in records if r.get("classifier_trained_on")}
    )
    if acc:
        on = f", trained on {' / '.join(trained_on)}" if trained_on else ""
        lines.append(f"Classifier of the classifier FD: test accuracy {acc[0]:.4f}{on}.")
    lines.append(_machine_line(records))
    (out_dir / "table.md").write_text("\n".join(lines) + "\n")
    with (out_dir / "table.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        header = ["method", "encoder"]
        for key, _ in metric_cols:
            header += [f"{key}_mean", f"{key}_std"]
        writer.writerow(header + ["seconds_per_epoch", "regulariser_share"])
        for row in rows:
            values = [row["run"], row["encoder"]]
            for key, _ in metric_cols:
                values += [row.get(key, ""), row.get(f"{key}_std", "")]
            writer.writerow(
                values + [row.get("seconds_per_epoch", ""), row.get("regulariser_share", "")]
            )
    runtime = [
        f"# {bench.name}: runtime",
        "",
        "Seconds per training epoch (mean over seeds; epochs ran while other jobs shared "
        "the machine, so they vary), and seconds per training step on one batch with and "
        "without the regulariser: the fastest of repeated, alternated steps on a copy of the "
        "trained model (share = 1 - without / with).",
        "",
        "| method | s / epoch | s / step | s / step without regulariser | regulariser share |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        runtime.append(
            f"| {row['run']} | {row.get('seconds_per_epoch', math.nan):.2f} | "
            f"{row.get('step_time_s', math.nan):.4f} | "
            f"{row.get('step_time_without_regulariser_s', math.nan):.4f} | "
            f"{100 * row.get('regulariser_share', math.nan):.1f}% |"
        )
    runtime.append(_machine_line(records))
    (out_dir / "runtime.md").write_text("\n".join(runtime) + "\n")
    _write_bench_report(bench, records, rows, out_dir)


def _machine_line(records: list[dict[str, Any]]) -> str:
    import platform

    devices = sorted({str(r.get("device", "?")) for r in records})
    cpu = platform.processor() or platform.machine()
    threads = torch.get_num_threads()
    gpu = ""
    if any(d.startswith("cuda") for d in devices) and torch.cuda.is_available():
        gpu = f", GPU {torch.cuda.get_device_name(0)}"
    return (
        f"\nMachine: {platform.node()} ({cpu}, {threads} torch threads{gpu}); "
        f"devices {devices}; torch {torch.__version__}."
    )


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


def _write_bench_report(bench, records, rows, out_dir: Path) -> None:
    from .evaluation.figures import convergence_plot
    from .evaluation.report import write_report

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
    firsts = {}
    for record in records:
        firsts.setdefault(record["run"], record)
    for stem, caption in (
        ("conditional", "Conditional generation, one row per prior component"),
        ("samples", "Samples from the prior"),
        ("reconstructions", "Reconstructions (rows of test images, then their reconstructions)"),
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
