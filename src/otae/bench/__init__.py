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

The package holds one module per job: :mod:`~otae.bench.config` (bench sets and run
options), :mod:`~otae.bench.cells` (a cell's identity and state, records from run
directories), :mod:`~otae.bench.runner` (:func:`run_bench`), :mod:`~otae.bench.measure`
(one run trained and measured), :mod:`~otae.bench.executors` (where cells run),
:mod:`~otae.bench.jobs` (runs at once in worker processes), :mod:`~otae.bench.tables`
and :mod:`~otae.bench.report`.
"""

from .cells import (
    BenchCellsFailed,
    Cell,
    CellFailure,
    StaleCellError,
    cell_config,
    cell_identity,
    scan_records,
)
from .config import (
    BenchConfig,
    BenchRun,
    RunOptions,
    SlurmResources,
    bench_tasks,
    load_bench,
    run_dir_of,
)
from .executors import Executor, LocalExecutor, SubmititExecutor, run_cell
from .jobs import RUNS_PER_GPU, default_jobs, threads_per_run
from .measure import cell_complete, frechet_metrics_of_run, measure_run, provenance
from .report import side_by_side
from .runner import run_bench
from .tables import merge_records, summarise, write_tables

__all__ = [
    "BenchRun",
    "BenchConfig",
    "load_bench",
    "run_bench",
    "RunOptions",
    "SlurmResources",
    "bench_tasks",
    "run_dir_of",
    "Cell",
    "CellFailure",
    "BenchCellsFailed",
    "StaleCellError",
    "cell_config",
    "cell_identity",
    "cell_complete",
    "scan_records",
    "Executor",
    "LocalExecutor",
    "SubmititExecutor",
    "run_cell",
    "measure_run",
    "frechet_metrics_of_run",
    "provenance",
    "RUNS_PER_GPU",
    "default_jobs",
    "threads_per_run",
    "summarise",
    "merge_records",
    "write_tables",
    "side_by_side",
]
