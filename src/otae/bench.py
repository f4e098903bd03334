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

from ._io import atomic_write, atomic_write_text, write_csv_rows
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
    config.source = str(path)  # what worker processes load (``--jobs``)
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
    jobs: int | None = 1,
    time_limit: float | None = None,
    results_dir: str | Path | None = None,
    save_samples: bool = False,
    inception_weights: str | Path | None = None,
    log=print,
) -> Path:
    """Train and measure every (run, seed); merge the rows into the tables of ``results_dir``.

    ``jobs`` > 1 trains that many (run, seed) pairs at once, each in its own process
    with a fair share of the CPU threads (and, on a machine with several GPUs, its own
    GPU in turn); None picks :func:`default_jobs`. ``time_limit`` (seconds from now)
    ends training at the last epoch boundary that fits (:meth:`Trainer.fit`): such a
    row records the epochs it has and is marked as short of the protocol; running the
    bench again continues it.
    ``results_dir`` (default ``out_dir``) holds the tables: rows of (run, seed) pairs
    not measured now are kept as they are, so benches on subsets accumulate.
    ``save_samples`` also writes each run's FID samples as uint8 ``samples.npz``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results_dir = Path(results_dir) if results_dir is not None else out_dir
    if jobs is not None and jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {jobs}")
    if time_limit is not None and time_limit <= 0:
        raise ValueError(f"--time-limit must be > 0 seconds, got {time_limit}")
    tasks = bench_tasks(bench, only, seeds)
    if jobs is None:
        jobs = default_jobs(bench, tasks, list(overrides))
    deadline = None if time_limit is None else time.time() + time_limit
    options = RunOptions(
        overrides=list(overrides),
        retime=retime,
        deadline=deadline,
        save_samples=save_samples,
        inception_weights=None if inception_weights is None else str(inception_weights),
        concurrent_runs=min(jobs, len(tasks)),
    )
    start = time.perf_counter()
    epochs_before = {
        (run.name, seed): _recorded_epochs(run_dir_of(out_dir, run, seed)) for run, seed in tasks
    }
    if options.concurrent_runs > 1:
        _train_in_parallel(bench, tasks, out_dir, options, log)
    records = []
    for run, seed in tasks:
        record = measure_run(
            bench, run, seed, out_dir, options, train=options.concurrent_runs == 1, log=log
        )
        if record is not None:
            records.append(record)
    trained = sum(
        max(0, int(r.get("epochs") or 0) - epochs_before[(r["run"], r["seed"])]) for r in records
    )
    _append_throughput(results_dir, records, trained, options, time.perf_counter() - start)
    write_tables(bench, merge_records(results_dir, records), results_dir)
    return results_dir


@dataclass
class RunOptions:
    """How :func:`measure_run` trains and measures one (run, seed) of a bench."""

    overrides: list[str] = field(default_factory=list)
    retime: bool = False
    #: ``time.time()`` value by which training stops at an epoch boundary (None: no limit)
    deadline: float | None = None
    save_samples: bool = False
    inception_weights: str | None = None
    #: runs trained at once on this machine (recorded next to the epoch times)
    concurrent_runs: int = 1


def bench_tasks(
    bench: BenchConfig, only: list[str] | None = None, seeds: list[int] | None = None
) -> list[tuple[BenchRun, int]]:
    """The (run, seed) pairs a bench measures, in table order."""
    runs = [r for r in bench.runs if only is None or r.name in only or _slug(r.name) in only]
    if only is not None and not runs:
        raise ValueError(f"--models {only} matches none of {[r.name for r in bench.runs]}")
    seeds = list(seeds) if seeds is not None else list(bench.seeds)
    return [
        (run, seed)
        for run in runs
        for seed in (seeds if run.seeds is None else [s for s in run.seeds if s in seeds])
    ]


def run_dir_of(out_dir: Path, run: BenchRun, seed: int) -> Path:
    return Path(out_dir) / _slug(run.name) / f"seed{seed}"


def measure_run(
    bench: BenchConfig,
    run: BenchRun,
    seed: int,
    out_dir: Path,
    options: RunOptions,
    *,
    train: bool = True,
    log=print,
) -> dict[str, Any] | None:
    """Train (unless finished; resuming an interrupted run), measure, and return its record.

    With ``train=False`` (the runs were trained by worker processes) a run without
    metrics is reported and left out (None). Metrics are written to the run's
    ``metrics.json`` after each stage, so an interrupted bench loses nothing done.
    """
    from .experiment import run_experiment
    from .training import build_split, load_run

    run_dir = run_dir_of(out_dir, run, seed)
    all_overrides = [
        *bench.overrides,
        *run.overrides,
        *options.overrides,
        f"training.seed={seed}",
        f"name={_slug(run.name)}-seed{seed}",
    ]
    config = load_config(run.config, all_overrides)
    metrics_path = run_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else None
    # an early-stopped run is finished before training.epochs
    finished = metrics is not None and (
        metrics.get("epochs") == config.training.epochs
        or metrics.get("early_stopping_stopped_epoch") is not None
    )
    if train and not finished:
        _check_frechet_possible(bench, config)
        if options.deadline is not None and time.time() >= options.deadline:
            log(f"[bench] {run.name} seed {seed}: time limit reached before it started")
        else:
            log(f"[bench] {run.name} seed {seed}: training in {run_dir}")
            start = time.perf_counter()
            resume = (run_dir / "checkpoints" / "last.pt").exists()
            result = run_experiment(
                config, run_dir, resume=resume, report=True, deadline=options.deadline
            )
            metrics = result.metrics
            metrics["bench_wall_time_s"] = time.perf_counter() - start
            metrics.update(provenance(config, options.concurrent_runs))
            # the protocol the set's description states, changed on the command line
            metrics["command_overrides"] = " ".join(options.overrides)
            atomic_write_text(metrics_path, json.dumps(metrics, indent=2) + "\n")
    if metrics is None:
        log(f"[bench] {run.name} seed {seed}: no metrics in {run_dir}; left out of the table")
        return None
    if options.retime:
        metrics.update(_retime(config, run_dir))
        atomic_write_text(metrics_path, json.dumps(metrics, indent=2) + "\n")
    if not _has_frechet(metrics, bench) or (options.save_samples and not _has_samples(run_dir)):
        _, model, _ = load_run(run_dir, None, device=str(_device(config)))
        test_data = build_split(config.data, "test")
        metrics.update(
            frechet_metrics_of_run(model, config, test_data, bench, options, run_dir, log)
        )
        atomic_write_text(metrics_path, json.dumps(metrics, indent=2) + "\n")
    if _lacks_clustering(metrics, config):  # a run measured before clustering was
        from .evaluation.clustering import dataset_clustering_metrics

        _, model, _ = load_run(run_dir, None, device=str(_device(config)))
        metrics.update(
            dataset_clustering_metrics(
                model,
                build_split(config.data, "test"),
                config.training.eval_batch_size,
                codes_path=run_dir / "test_codes.npz",
            )
        )
        atomic_write_text(metrics_path, json.dumps(metrics, indent=2) + "\n")
    log(
        f"[bench] {run.name} seed {seed}: rec {metrics['test_rec_loss']:.2f}"
        + "".join(f", {k} {metrics[k]:.2f}" for k in ("classifier_fd", "fid") if k in metrics)
        + f" ({metrics.get('epochs')}/{config.training.epochs} epochs)"
    )
    return {
        "run": run.name,
        "seed": seed,
        "run_dir": str(run_dir),
        "encoder": _encoder_kind(config),
        "protocol_epochs": config.training.epochs,
        **metrics,
        "_history": _read_history(run_dir / "history.csv"),
    }


def _check_frechet_possible(bench: BenchConfig, config) -> None:
    """Refuse before training a set's classifier FD that the data cannot give."""
    import copy

    from .experiment import check_frechet_possible

    wanted = copy.deepcopy(config)
    wanted.evaluation.classifier_fd_samples = bench.classifier_fd_samples
    check_frechet_possible(wanted)


def frechet_metrics_of_run(model, config, test_data, bench, options, run_dir, log):
    """The set's Fréchet distances of one trained run (and its saved samples if asked)."""
    from .experiment import frechet_metrics

    samples_path = run_dir / "samples.npz" if options.save_samples else None
    return frechet_metrics(
        model,
        config,
        test_data,
        bench.classifier_fd_samples,
        bench.fid_samples,
        log=log,
        inception_weights=options.inception_weights,
        samples_path=samples_path,
    )


def _has_samples(run_dir: Path) -> bool:
    return (run_dir / "samples.npz").is_file()


def provenance(config, concurrent_runs: int = 1) -> dict[str, Any]:
    """Where and how a row was measured: machine, accelerator, torch, date, concurrency."""
    import datetime
    import platform

    device = _device(config)
    accelerator = (
        torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    )
    return {
        "machine": platform.node(),
        "accelerator": accelerator,
        "torch_version": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "concurrent_runs": concurrent_runs,
        "precision": config.training.precision,
        "compiled": bool(config.training.compile),
        "date": datetime.date.today().isoformat(),
    }


# ---------------------------------------------------------------------- parallel runs
#: runs at once per GPU by default: on one H200 (torch 2.11, paper MNIST nets, eager
#: fp32), 7 runs at once trained 1.85x the epochs per minute of one run at a time
#: (benchmarks/results/mnist-paper/runtime.md); more were not measured
RUNS_PER_GPU = 7


def default_jobs(bench: BenchConfig, tasks, overrides: list[str]) -> int:
    """Runs at once when ``--jobs`` is not given: one on a CPU (runs there compete for
    the same cores), up to :data:`RUNS_PER_GPU` per GPU when the runs train on CUDA."""
    if not tasks:
        return 1
    run, _ = tasks[0]
    config = load_config(run.config, [*bench.overrides, *run.overrides, *overrides])
    if _device(config).type != "cuda":
        return 1
    return max(1, min(len(tasks), RUNS_PER_GPU * torch.cuda.device_count()))


def threads_per_run(jobs: int) -> int:
    """CPU threads of each of ``jobs`` runs at once: an even share (one run: torch's own)."""
    import os

    if jobs <= 1:
        return torch.get_num_threads()
    return max(1, (os.cpu_count() or 1) // jobs)


def _train_in_parallel(bench, tasks, out_dir: Path, options: RunOptions, log) -> None:
    """Train the (run, seed) pairs in ``options.concurrent_runs`` worker processes at once.

    Each worker is ``otae bench SET --models NAME --seeds S --worker``: it trains and
    measures one pair and writes its ``metrics.json``; its output goes to
    ``OUT/<run>/seed<S>.log``. CPU threads are shared out evenly (OMP/MKL and torch),
    and with several GPUs each worker gets the next one (``CUDA_VISIBLE_DEVICES``).
    """
    import os
    import subprocess

    jobs = options.concurrent_runs
    threads = threads_per_run(jobs)
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    source = getattr(bench, "source", None) or bench.name
    pending = list(tasks)
    running: list[tuple[subprocess.Popen, BenchRun, int, Any]] = []
    slot = 0
    try:
        while pending or running:
            while pending and len(running) < jobs:
                run, seed = pending.pop(0)
                log_path = out_dir / _slug(run.name) / f"seed{seed}.log"
                log_path.parent.mkdir(parents=True, exist_ok=True)
                env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
                if gpus > 1:
                    env["CUDA_VISIBLE_DEVICES"] = str(slot % gpus)
                slot += 1
                command = _worker_command(source, run, seed, out_dir, options, threads)
                handle = log_path.open("w")
                process = subprocess.Popen(
                    command, stdout=handle, stderr=subprocess.STDOUT, env=env
                )
                log(f"[bench] {run.name} seed {seed}: started ({threads} threads, log {log_path})")
                running.append((process, run, seed, handle))
            time.sleep(0.5)
            for entry in list(running):
                process, run, seed, handle = entry
                if process.poll() is None:
                    continue
                running.remove(entry)
                handle.close()
                if process.returncode != 0:
                    tail = Path(handle.name).read_text().strip().splitlines()[-1:] or [""]
                    log(
                        f"[bench] {run.name} seed {seed}: worker failed (exit "
                        f"{process.returncode}): {tail[0]} (log: {handle.name})"
                    )
                else:
                    log(f"[bench] {run.name} seed {seed}: worker done")
    finally:
        for process, *_ in running:
            process.terminate()


def _worker_command(source, run, seed, out_dir, options: RunOptions, threads: int) -> list[str]:
    """The ``otae bench ... --worker`` command line that trains one (run, seed)."""
    import sys

    command = [
        sys.executable, "-m", "otae", "bench", str(source), *options.overrides,
        "--models", run.name, "--seeds", str(seed), "--out", str(out_dir),
        "--worker", "--threads", str(threads), "--concurrent-runs", str(options.concurrent_runs),
    ]  # fmt: skip
    if options.deadline is not None:
        command += ["--deadline", repr(options.deadline)]
    if options.save_samples:
        command.append("--save-samples")
    if options.inception_weights:
        command += ["--inception-weights", options.inception_weights]
    return command


def _recorded_epochs(run_dir: Path) -> int:
    try:
        return int(json.loads((run_dir / "metrics.json").read_text()).get("epochs") or 0)
    except (OSError, ValueError, AttributeError, TypeError):
        return 0


def _append_throughput(
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


def _retime(config, run_dir: Path) -> dict[str, float]:
    """Time the training step of a finished run again (e.g. on an otherwise idle machine)."""
    from .training import Trainer

    trainer = Trainer.from_config(config, run_dir, log=lambda m: None)
    trainer.resume()
    return trainer.regulariser_share(max(config.evaluation.timing_steps, 20))


def _device(config) -> torch.device:
    from .training import select_device

    return select_device(config.training.device)


def _has_frechet(metrics: dict[str, Any], bench: BenchConfig) -> bool:
    wanted = [("classifier_fd", bench.classifier_fd_samples), ("fid", bench.fid_samples)]
    return all(n == 0 or metrics.get(f"{key}_samples") == n for key, n in wanted)


def _lacks_clustering(metrics: dict[str, Any], config) -> bool:
    """Whether a run's metrics miss the clustering scores (or their note) that it wants,
    or one of them (a run scored before ``cluster_prior_components_used`` existed)."""
    wanted = config.evaluation.clustering
    return wanted and "cluster_prior_components_used" not in metrics and "clustering" not in metrics


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
            path = histories / f"{_slug(record['run'])}-seed{record['seed']}.csv"
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
                record["_history"] = _read_history(
                    histories / f"{_slug(record['run'])}-seed{record['seed']}.csv"
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


#: clustering columns of the tables (scores in [0, 1], or [-0.5, 1] for ARI: 3 digits)
_SOURCE = {"kmeans": "k-means", "prior": "prior"}
_CLUSTER = tuple(f"cluster_{m}_{s}" for s in _SOURCE for m in ("acc", "nmi", "ari"))
#: disentanglement columns (runs on data with factors, :mod:`otae.evaluation.traversals`)
_DISENTANGLEMENT = (
    ("mig", "MIG"),
    ("dci_disentanglement", "DCI D"),
    ("dci_completeness", "DCI C"),
    ("dci_informativeness", "DCI I"),
    ("factorvae_score", "FactorVAE"),
)
#: scores shown with 3 digits
_RATIOS = (*_CLUSTER, *(key for key, _ in _DISENTANGLEMENT))
#: counts, shown with one decimal (a mean over seeds)
_COUNTS = ("cluster_prior_components_used",)


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
            metric_cols += [(f"cluster_{m}_{source}", f"{m.upper()} {_SOURCE[source]}")
                            for m in ("acc", "nmi", "ari")]  # fmt: skip
    if any(r.get("cluster_prior_components_used") is not None for r in records):
        metric_cols.append(("cluster_prior_components_used", "prior comps used"))
    metric_cols += [(k, c) for k, c in _DISENTANGLEMENT if any(k in r for r in rows)]
    seeds = sorted({r["seed"] for r in records})
    lines = [
        f"# {bench.name}: reconstruction and generation",
        "",
        bench.description.strip(),
        "",
        f"Mean ± std over seeds {seeds} (column 'seeds': how many each row has). "
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
            _fmt(row.get(k, math.nan), row.get(f"{k}_std", math.nan),
                 3 if k in _RATIOS else 1 if k in _COUNTS else 2)
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
        "Seconds per training epoch (mean over seeds; 'runs at once': how many trained "
        "concurrently on the machine, which slows each), and seconds per training step on "
        "one batch with and without the regulariser: the fastest of repeated, alternated "
        "steps on a copy of the trained model (share = 1 - without / with).",
        "",
        "| method | s / epoch | s / step | s / step without regulariser | regulariser share "
        "| run on |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        cells = [
            _number(row.get("seconds_per_epoch"), "{:.2f}"),
            _number(row.get("step_time_s"), "{:.4f}"),
            _number(row.get("step_time_without_regulariser_s"), "{:.4f}"),
            _number(row.get("regulariser_share"), "{:.1%}"),
        ]
        runtime.append(f"| {row['run']} | {' | '.join(cells)} | {_run_on(groups[row['run']])} |")
    runtime += _throughput_lines(out_dir / "throughput.csv")
    atomic_write_text(out_dir / "runtime.md", "\n".join(runtime) + "\n")
    _write_bench_report(bench, records, rows, out_dir)


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


def _score_curve(history: list[dict[str, float]], score: str) -> list[tuple[float, float]]:
    """``[(epoch, value)]`` of a disentanglement curve column (``mig``, ...) of a history:
    ``val_<score>`` (a run with early stopping) or else ``test_<score>``."""
    column = next((f"{split}_{score}" for split in ("val", "test")
                   if any(f"{split}_{score}" in h for h in history)), None)
    return [(h["epoch"], h[column]) for h in history if column in h]


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
    # the disentanglement curve (evaluation.disentanglement_every), where the runs logged it
    for score, label in (("mig", "MIG"), ("dci_disentanglement", "DCI disentanglement")):
        curves = {
            name: _score_curve(next(r for r in records if r["run"] == name)["_history"], score)
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
                *_RATIOS,
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
