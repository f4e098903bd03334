"""``otae bench``'s orchestration: every cell (run, seed) not finished yet trained and
measured by an executor (here, in worker processes or as Slurm jobs), under a time
limit, then the tables rebuilt from the run directories."""

from __future__ import annotations

import json
import time
from pathlib import Path

from .._io import FolderLock
from .cells import (
    BenchCellsFailed,
    Cell,
    StaleCellError,
    cell_config,
    scan_records,
    stale_cell_message,
)
from .config import BenchConfig, RunOptions, bench_tasks, run_dir_of
from .executors import Executor, LocalExecutor
from .jobs import default_jobs
from .measure import cell_complete
from .tables import append_throughput, merge_records, write_tables

#: how long an update of a results folder waits for another bench's update to finish
#: (seconds; an update rewrites the tables and figures, which takes seconds)
RESULTS_WAIT_S = 600.0


def _results_lock(results_dir: Path) -> FolderLock:
    """The lock under which a bench reads and rewrites ``results_dir``: benches that share
    it keep each other's rows instead of overwriting them with what they read before."""
    return FolderLock(results_dir, "bench results folder").acquire(wait=RESULTS_WAIT_S)


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
    executor: Executor | None = None,
    log=print,
) -> Path:
    """Train and measure every cell (run, seed); merge the rows into the tables of ``results_dir``.

    Cells are idempotent (:mod:`otae.bench.cells`): a finished one is skipped, a partial
    one resumes from its checkpoint, and a run directory trained with other settings
    is refused before anything runs (:class:`~otae.bench.cells.StaleCellError`).
    ``executor`` runs the others (default :class:`~otae.bench.executors.LocalExecutor`
    with ``jobs``): ``jobs`` > 1 trains that many cells at once, each in its own process
    with a fair share of the CPU threads (and, on a machine with several GPUs, its own
    GPU in turn); None picks :func:`default_jobs`. ``time_limit`` (seconds from now)
    ends training at the last epoch boundary that fits (:meth:`Trainer.fit`): such a
    row records the epochs it has and is marked as short of the protocol; running the
    bench again continues it.
    The tables are rebuilt from the run directories under ``out_dir`` (every cell of the
    set with metrics of the same settings, wherever it was trained) and written to
    ``results_dir`` (default ``out_dir``) after every cell that finishes and at the end:
    rows there of cells not under ``out_dir`` are kept as they are, so benches on subsets
    accumulate, also when they run at the same time with their own ``out_dir``: each
    update of ``results_dir`` reads and rewrites it under a lock (:data:`RESULTS_WAIT_S`).
    ``save_samples`` also writes each run's FID samples as uint8 ``samples.npz``.

    Raises :class:`~otae.bench.cells.BenchCellsFailed` (after writing the tables of the
    cells that finished) when the executor reports failed cells.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results_dir = Path(results_dir) if results_dir is not None else out_dir
    if jobs is not None and jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {jobs}")
    if time_limit is not None and time_limit <= 0:
        raise ValueError(f"--time-limit must be > 0 seconds, got {time_limit}")
    tasks = bench_tasks(bench, only, seeds)
    overrides = list(overrides)
    # refused before anything runs: a run directory of other settings is never reused
    stale = [
        message
        for run, seed in tasks
        if (message := stale_cell_message(
            run, seed, run_dir_of(out_dir, run, seed), cell_config(bench, run, seed, overrides)
        )) is not None
    ]  # fmt: skip
    if stale:
        for message in stale[1:]:
            log(f"[bench] {message}")
        more = f" (and {len(stale) - 1} more cell(s), listed above)" if len(stale) > 1 else ""
        raise StaleCellError(stale[0] + more)
    deadline = None if time_limit is None else time.time() + time_limit
    options = RunOptions(
        overrides=overrides,
        retime=retime,
        deadline=deadline,
        save_samples=save_samples,
        inception_weights=None if inception_weights is None else str(inception_weights),
    )
    todo = []
    for run, seed in tasks:
        if cell_complete(bench, run, seed, out_dir, options):
            log(f"[bench] {run.name} seed {seed}: finished in {run_dir_of(out_dir, run, seed)}; "
                "skipped")  # fmt: skip
        else:
            todo.append((run, seed))
    if executor is None:
        if jobs is None:
            jobs = default_jobs(bench, todo, overrides)
        executor = LocalExecutor(jobs)
    options.concurrent_runs = executor.concurrency(len(todo))
    cells = [
        Cell(bench, run, seed, str(out_dir), options, threads=executor.threads(len(todo)),
             time_min=executor.time_min())
        for run, seed in todo
    ]  # fmt: skip
    start = time.perf_counter()
    epochs_before = {
        (run.name, seed): _recorded_epochs(run_dir_of(out_dir, run, seed)) for run, seed in todo
    }
    def tables_so_far(cell: Cell) -> None:
        # after every finished cell, so that a long bench's results can be read (and kept)
        # before it ends; the throughput of the invocation is added at its end
        rows = scan_records(bench, out_dir, overrides)
        with _results_lock(results_dir):
            write_tables(bench, merge_records(results_dir, rows), results_dir)
        log(f"[bench] {cell.name}: tables updated in {results_dir}")

    failures = executor.run(cells, log=log, on_done=tables_so_far) if cells else []
    # the tables: every cell of the set under out_dir, wherever and whenever it finished
    records = scan_records(bench, out_dir, overrides)
    done = {(r["run"], r["seed"]): r for r in records}
    failed = {f.cell for f in failures}
    for cell in cells:
        record = done.get((cell.run.name, cell.seed))
        if record is None and cell.name not in failed:
            log(f"[bench] {cell.name}: no metrics in {cell.run_dir}; left out of the table")
        elif record is not None and _short(record):
            log(f"[bench] {cell.name}: stopped after epoch {record.get('epochs')} of "
                f"{record['protocol_epochs']} (time limit); rerun the same command to "
                "continue it")  # fmt: skip
    fresh = [done[key] for key in epochs_before if key in done]
    trained = sum(
        max(0, int(r.get("epochs") or 0) - epochs_before[(r["run"], r["seed"])]) for r in fresh
    )
    with _results_lock(results_dir):
        append_throughput(results_dir, fresh, trained, options, time.perf_counter() - start)
        write_tables(bench, merge_records(results_dir, records), results_dir)
    if failures:
        raise BenchCellsFailed(failures)
    return results_dir


def _short(record) -> bool:
    """Whether a cell stopped before its protocol's epochs (a time limit, not early
    stopping)."""
    return (
        int(record.get("epochs") or 0) < int(record["protocol_epochs"])
        and record.get("early_stopping_stopped_epoch") is None
    )


def _recorded_epochs(run_dir: Path) -> int:
    try:
        return int(json.loads((run_dir / "metrics.json").read_text()).get("epochs") or 0)
    except (OSError, ValueError, AttributeError, TypeError):
        return 0
