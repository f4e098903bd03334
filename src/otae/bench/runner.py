"""``otae bench``'s orchestration: every (run, seed) trained, in worker processes or
here, under a time limit, then measured and merged into the tables."""

from __future__ import annotations

import json
import time
from pathlib import Path

from .config import BenchConfig, RunOptions, bench_tasks, run_dir_of
from .jobs import default_jobs, train_in_parallel
from .measure import measure_run
from .tables import append_throughput, merge_records, write_tables


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
        concurrent_runs=max(1, min(jobs, len(tasks))),  # 1 where no task is left
    )
    start = time.perf_counter()
    epochs_before = {
        (run.name, seed): _recorded_epochs(run_dir_of(out_dir, run, seed)) for run, seed in tasks
    }
    if options.concurrent_runs > 1:
        train_in_parallel(bench, tasks, out_dir, options, log)
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
    append_throughput(results_dir, records, trained, options, time.perf_counter() - start)
    write_tables(bench, merge_records(results_dir, records), results_dir)
    return results_dir


def _recorded_epochs(run_dir: Path) -> int:
    try:
        return int(json.loads((run_dir / "metrics.json").read_text()).get("epochs") or 0)
    except (OSError, ValueError, AttributeError, TypeError):
        return 0
