"""The bench's tables: ``runs.csv``, ``table.md`` / ``table.csv`` (mean ± std over
seeds; table.md ± the standard error with ``spread: se``), ``runtime.md`` and the
aggregate throughput of each invocation (``throughput.csv``)."""

from __future__ import annotations

import csv
import math
import statistics
from pathlib import Path
from typing import Any

import torch

from .._io import atomic_write, atomic_write_text, write_csv_rows
from ..evaluation.traversals import MIG_FACTOR_PREFIX, POSTERIOR_MIG_FACTOR_PREFIX
from ._common import COUNTS, DISENTANGLEMENT, RATIOS, SOURCE, read_history, slug
from .config import BenchConfig, RunOptions
from .jobs import threads_per_run
from .report import write_bench_report

#: what table.md says follows ±, by BenchConfig.spread
SPREADS = {"std": "std", "se": "standard error (std / sqrt(seeds))"}


def _mean_std(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _fewer_seeds(row: dict[str, Any], key: str, seeds: int) -> str:
    """`` (k of n seeds)`` where only some of a row's seeds measured ``key``."""
    have = row.get(f"{key}_n")
    return f" ({have} of {seeds} seeds)" if have and have < seeds else ""


def _fmt(mean: float, std: float, digits: int = 2) -> str:
    if math.isnan(mean):
        return "—"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def summarise(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per run name: mean and std over seeds of every numeric metric.

    A metric is averaged over the seeds that have it (any seed's keys count, not only
    the first's); ``{key}_n`` is how many did, so a table can say when it is fewer
    than the row's seeds."""
    rows = []
    for name in dict.fromkeys(r["run"] for r in records):
        group = [r for r in records if r["run"] == name]
        row: dict[str, Any] = {"run": name, "encoder": group[0]["encoder"], "seeds": len(group)}
        keys = dict.fromkeys(
            k for r in group for k, v in r.items() if isinstance(v, (int, float)) and k != "seed"
        )
        for key in keys:
            values = [r[key] for r in group if isinstance(r.get(key), (int, float))]
            mean, std = _mean_std(values)
            row[key] = mean
            row[f"{key}_std"] = std
            row[f"{key}_n"] = sum(not math.isnan(v) for v in values)
        rows.append(row)
    return rows


def merge_records(results_dir: Path, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``records`` merged into the rows already in ``results_dir/runs.csv``.

    A (run, seed) measured now replaces its old row; every other old row is kept as
    it was (values read back as numbers where they are), with its convergence curve
    from ``results_dir/histories/`` when there is one. New curves are stored there.
    """
    results_dir = Path(results_dir)
    histories = results_dir / "histories"
    for record in records:
        if record.get("_history"):
            histories.mkdir(parents=True, exist_ok=True)
            path = histories / f"{slug(record['run'])}-seed{record['seed']}.csv"
            _write_history(path, record["_history"])
    fresh = {(r["run"], int(r["seed"])) for r in records}
    kept = []
    path = results_dir / "runs.csv"
    if path.exists():
        with path.open(newline="") as handle:
            for row in csv.DictReader(handle):
                record = {k: _parse_cell(v) for k, v in row.items() if v not in ("", None)}
                record["run"], record["seed"] = row["run"], int(row["seed"])
                if (record["run"], record["seed"]) in fresh:
                    continue
                record["_history"] = read_history(
                    histories / f"{slug(record['run'])}-seed{record['seed']}.csv"
                )
                kept.append(record)
    return kept + list(records)


def _overrides_notes(records: list[dict[str, Any]]) -> list[str]:
    """Lines naming the command-line overrides rows were trained with (they change the
    protocol the set's description states), and which rows."""
    by_overrides: dict[str, list[str]] = {}
    for r in records:
        text = str(r.get("command_overrides") or "").strip()
        if text:
            by_overrides.setdefault(text, []).append(f"{r['run']} seed {r['seed']}")
    notes = []
    for text, rows in by_overrides.items():
        which = "every row" if len(rows) == len(records) else ", ".join(rows)
        notes.append(f"Trained with command-line overrides `{text}` ({which}): they take "
                     "precedence over the protocol described above.")
    return notes


def _parse_cell(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"True": True, "False": False}.get(text, text)


def _write_history(path: Path, history: list[dict[str, float]]) -> None:
    write_csv_rows(path, history)


def _in_bench_order(bench: BenchConfig, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    order = {run.name: i for i, run in enumerate(bench.runs)}
    return sorted(records, key=lambda r: (order.get(r["run"], len(order)), r["seed"]))


def _epochs_cell(group: list[dict[str, Any]]) -> tuple[str, bool]:
    """``"done/protocol"`` epochs of a row (its shortest seed) and whether it is short
    (a seed stopped by a time limit; one stopped by early stopping is complete)."""
    done = min(int(r.get("epochs") or 0) for r in group)
    protocol = max(int(r.get("protocol_epochs") or r.get("epochs") or 0) for r in group)
    short = any(
        int(r.get("epochs") or 0) < protocol and r.get("early_stopping_stopped_epoch") is None
        for r in group
    )
    return f"{done}/{protocol}", short


def _number(value: Any, form: str) -> str:
    """``value`` formatted, or a dash where it was not measured."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return form.format(value)


def _run_on(group: list[dict[str, Any]]) -> str:
    """Where a row was measured: accelerator (or device), torch version and date."""
    cells = []
    for r in group:
        where = r.get("accelerator") or r.get("device", "?")
        cell = f"{where}, torch {r.get('torch_version', '?')}, {r.get('date', 'date ?')}"
        if int(r.get("concurrent_runs") or 1) > 1:
            cell += f", {int(r['concurrent_runs'])} runs at once"
        if cell not in cells:
            cells.append(cell)
    return "; ".join(cells)


def write_tables(bench: BenchConfig, records: list[dict[str, Any]], out_dir: Path) -> None:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    records = _in_bench_order(bench, records)
    plain = [{k: v for k, v in r.items() if not k.startswith("_")} for r in records]
    write_csv_rows(out_dir / "runs.csv", plain)
    rows = summarise(records)
    groups = {row["run"]: [r for r in records if r["run"] == row["run"]] for row in rows}
    metric_cols = [("test_rec_loss", "Rec. loss")]
    if any("classifier_fd" in r for r in rows):
        metric_cols.append(("classifier_fd", "classifier FD"))
    if any("fid" in r for r in rows):
        metric_cols.append(("fid", "FID"))
    for source in ("kmeans", "prior"):  # clustering of the test codes, where measured
        if any(f"cluster_acc_{source}" in r for r in rows):
            metric_cols += [(f"cluster_{m}_{source}", f"{m.upper()} {SOURCE[source]}")
                            for m in ("acc", "nmi", "ari")]  # fmt: skip
    if any(r.get("cluster_prior_components_used") is not None for r in records):
        metric_cols.append(("cluster_prior_components_used", "prior comps used"))
    metric_cols += [(k, c) for k, c in DISENTANGLEMENT if any(k in r for r in rows)]
    seeds = sorted({r["seed"] for r in records})
    lines = [
        f"# {bench.name}: reconstruction and generation",
        "",
        bench.description.strip(),
        "",
        f"Mean ± {SPREADS[bench.spread]} over seeds {seeds} (column 'seeds': how many "
        "each row has). "
        "Rec. loss: mean per-image sum of squared errors on "
        "the test images (pixels in [0, 1], the RAE paper's unit). classifier FD: Fréchet "
        "distance between generated and test images in the 128-d feature space of a small "
        "classifier of the dataset (NOT comparable with FID). FID: Inception-v3 pool3. "
        "ACC / NMI / ARI (where present): clustering of the test codes against the "
        "labels, by k-means with as many clusters as classes, and by the model's own "
        "mixture prior (highest-responsibility component; — where the prior has no "
        "components); see docs/evaluation.md. "
        "MIG, DCI D / C / I, FactorVAE (where the data has generative factors): "
        "disentanglement scores of the test codes (docs/disentanglement.md). "
        "'epochs': epochs trained / the protocol's; a row marked † stopped short of the "
        "protocol and does not stand for it.",
        "",
        "| method | encoder | seeds | epochs | "
        + " | ".join(c for _, c in metric_cols)
        + (" | paper rec. | paper FID" if bench.paper else "")
        + " | run on |",
        "|---|---|---|---|"
        + "---|" * len(metric_cols)
        + ("---|---|" if bench.paper else "")
        + "---|",
    ]
    short_rows = 0
    for row in rows:
        group = groups[row["run"]]
        epochs, short = _epochs_cell(group)
        short_rows += short
        cells = [
            _fmt(row.get(k, math.nan), _spread(row, k, bench.spread),
                 3 if k in RATIOS else 1 if k in COUNTS else 2)
            + _fewer_seeds(row, k, len(group))
            for k, _ in metric_cols
        ]
        paper = bench.paper.get(row["run"], {})
        extra = [str(paper.get("rec", "—")), str(paper.get("fid", "—"))] if bench.paper else []
        label = row["run"] + (" †" if short else "")
        lines.append(
            "| "
            + " | ".join(
                [label, row["encoder"], str(len(group)), epochs, *cells, *extra, _run_on(group)]
            )
            + " |"
        )
    baseline = _mean_std([r.get("mean_image_baseline_rec_loss") for r in records])[0]
    lines += ["", f"Mean-image baseline reconstruction loss: {baseline:.2f}."]
    lines += _overrides_notes(records)
    if short_rows:
        lines.append(
            f"† {short_rows} row(s) trained fewer epochs than the protocol (a time limit): "
            "not the protocol's result; running the bench again continues them."
        )
    acc = [r.get("classifier_test_accuracy") for r in records if r.get("classifier_test_accuracy")]
    trained_on = sorted(
        {r["classifier_trained_on"] for r in records if r.get("classifier_trained_on")}
    )
    if acc:
        on = f", trained on {' / '.join(trained_on)}" if trained_on else ""
        lines.append(f"Classifier of the classifier FD: test accuracy {acc[0]:.4f}{on}.")
    atomic_write_text(out_dir / "table.md", "\n".join(lines) + "\n")
    provenance_keys = ("machine", "accelerator", "torch_version", "date", "concurrent_runs")

    def write_table_csv(handle) -> None:
        writer = csv.writer(handle)
        header = ["method", "encoder", "seeds", "epochs", "protocol_epochs"]
        for key, _ in metric_cols:
            header += [f"{key}_mean", f"{key}_std"]
        writer.writerow(header + ["seconds_per_epoch", "regulariser_share", *provenance_keys])
        for row in rows:
            group = groups[row["run"]]
            values = [
                row["run"],
                row["encoder"],
                len(group),
                min(int(r.get("epochs") or 0) for r in group),
                max(int(r.get("protocol_epochs") or r.get("epochs") or 0) for r in group),
            ]
            for key, _ in metric_cols:
                values += [row.get(key, ""), row.get(f"{key}_std", "")]
            first = group[0]
            writer.writerow(
                values
                + [row.get("seconds_per_epoch", ""), row.get("regulariser_share", "")]
                + [first.get(k, "") for k in provenance_keys]
            )

    atomic_write(out_dir / "table.csv", write_table_csv, mode="w")
    runtime = [
        f"# {bench.name}: runtime",
        "",
        "Seconds per training epoch (mean over seeds; 'runs at once': how many this bench "
        "trained concurrently on the machine, which slows each), and seconds per training "
        "step on one batch with and without the regulariser: the fastest of repeated, "
        "alternated steps on a copy of the trained model (share = 1 - without / with). "
        "Load: the machine's 15-minute load average when training ended (mean over "
        "seeds). It counts all work on the machine, other benches included, so a load "
        "above a run's threads times the runs at once means the cores were shared.",
        "",
        "| method | s / epoch | s / step | s / step without regulariser | regulariser share "
        "| load | run on |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        cells = [
            _number(row.get("seconds_per_epoch"), "{:.2f}"),
            _number(row.get("step_time_s"), "{:.4f}"),
            _number(row.get("step_time_without_regulariser_s"), "{:.4f}"),
            _number(row.get("regulariser_share"), "{:.1%}"),
            _number(row.get("load_average_15min"), "{:.1f}"),
        ]
        runtime.append(f"| {row['run']} | {' | '.join(cells)} | {_run_on(groups[row['run']])} |")
    runtime += _throughput_lines(out_dir / "throughput.csv")
    atomic_write_text(out_dir / "runtime.md", "\n".join(runtime) + "\n")
    per_factor = _per_factor_lines(bench, rows, groups)
    if per_factor:
        atomic_write_text(out_dir / "per_factor.md", "\n".join(per_factor) + "\n")
    write_bench_report(bench, records, rows, out_dir)


def _spread(row: dict[str, Any], key: str, kind: str) -> float:
    """What follows ± for ``key`` (:data:`SPREADS`): the std over seeds, or its standard error."""
    return _standard_error(row, key) if kind == "se" else row.get(f"{key}_std", math.nan)


def _standard_error(row: dict[str, Any], key: str) -> float:
    n = row.get(f"{key}_n") or 0
    std = row.get(f"{key}_std", math.nan)
    return std / math.sqrt(n) if n else math.nan


def _per_factor_lines(
    bench: BenchConfig, rows: list[dict[str, Any]], groups: dict[str, list[dict[str, Any]]]
) -> list[str]:
    """``per_factor.md``: each factor's MIG gap per method, mean ± standard error over
    seeds, for the binned posterior means and, where measured, the posteriors (none
    where no run has per-factor gaps)."""
    estimators = (
        (MIG_FACTOR_PREFIX, "mig", "MIG of the binned posterior means (disentanglement_lib)"),
        (POSTERIOR_MIG_FACTOR_PREFIX, "mig_posterior",
         "MIG (q) of the encoder's posteriors (Chen et al.'s estimator)"),
    )  # fmt: skip
    lines: list[str] = []
    for prefix, total, title in estimators:
        keys = list(dict.fromkeys(
            k for r in rows for k in r
            if k.startswith(prefix) and not k.endswith(("_std", "_n"))
        ))  # fmt: skip
        if not keys:
            continue
        names = [k[len(prefix):] for k in keys]
        lines += [
            "",
            f"## {title}",
            "",
            "| method | seeds | " + " | ".join([*names, "mean"]) + " |",
            "|---|---|" + "---|" * (len(names) + 1),
        ]
        for row in rows:
            if not any(k in row for k in keys):
                continue
            group = groups[row["run"]]
            cells = [
                _fmt(row.get(k, math.nan), _standard_error(row, k), 3)
                + _fewer_seeds(row, k, len(group))
                for k in [*keys, total]
            ]
            label = row["run"] + (" †" if _epochs_cell(group)[1] else "")
            lines.append(f"| {label} | {len(group)} | " + " | ".join(cells) + " |")
    if not lines:
        return []
    return [
        f"# {bench.name}: MIG per factor",
        "",
        "Each factor's normalised gap between the two code dimensions most informative of "
        "it, (I(z_(1); v) - I(z_(2); v)) / H(v), on the test codes; MIG is their mean. "
        "Mean ± standard error over seeds (std / sqrt(seeds)): which factors a model "
        "carries in one dimension of its code. Two estimators of the mutual information "
        "(docs/disentanglement.md): the binned posterior means, and the encoder's "
        "posteriors, where a dimension that transmits nothing has none.",
        *lines,
    ]


def _throughput_lines(path: Path) -> list[str]:
    """``throughput.csv`` as a Markdown table (aggregate epochs per minute per invocation)."""
    if not path.exists():
        return []
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return []
    lines = [
        "",
        "Aggregate throughput of each bench invocation (epochs trained by all its runs per "
        "minute of wall time, evaluation included):",
        "",
        "| date | accelerator | torch | runs at once | threads per run | runs | epochs | "
        "wall s | epochs / min |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['date']} | {r['accelerator']} | {r['torch_version']} | {r['concurrent_runs']} "
            f"| {r.get('threads_per_run', '')} | {r['runs']} | {r['epochs']} "
            f"| {r['wall_time_s']} | {r['epochs_per_minute']} |"
        )
    return lines


def append_throughput(
    results_dir: Path, records, epochs: int, options: RunOptions, wall: float
) -> None:
    """Add this invocation's aggregate throughput (``epochs`` trained in ``wall`` seconds,
    evaluation included) to ``throughput.csv``."""
    import datetime
    import platform

    if epochs == 0:
        return
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / "throughput.csv"
    row = {
        "date": datetime.date.today().isoformat(),
        "machine": platform.node(),
        "accelerator": records[0].get("accelerator", "") if records else "",
        "torch_version": torch.__version__,
        "concurrent_runs": options.concurrent_runs,
        "threads_per_run": threads_per_run(options.concurrent_runs),
        "runs": len(records),
        "epochs": epochs,
        "wall_time_s": round(wall, 1),
        "epochs_per_minute": round(60 * epochs / wall, 2),
    }
    new = not path.exists()
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)
