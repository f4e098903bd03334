"""Where a bench's cells run, behind one small interface (:class:`Executor`).

* :class:`LocalExecutor` (the default): this machine, one cell at a time in this
  process, or ``jobs`` at once in worker processes (``--jobs``).
* :class:`SubmititExecutor` (``--executor submitit``): one job per cell, submitted as a
  Slurm job array through `submitit <https://github.com/facebookincubator/submitit>`_
  (``pip install 'otae[slurm]'``), or submitit's local executor where there is no Slurm.

Every job runs :func:`run_cell` on a :class:`~otae.bench.cells.Cell` (plain data), which
trains the cell, resuming its ``last.pt``, and measures it into its ``metrics.json``;
cells are idempotent (:mod:`otae.bench.cells`), so the executors only run them and
report the ones that failed (:class:`~otae.bench.cells.CellFailure`), and running the
same command again retries those.
"""

from __future__ import annotations

import dataclasses
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .cells import Cell, CellFailure
from .config import DEFAULT_TIME_MIN, SlurmResources
from .jobs import threads_per_run, train_in_parallel
from .measure import measure_run

#: called with each cell that finished well, in the bench's process
CellDone = Callable[[Cell], None]


def run_cell(cell: Cell, log=print) -> dict[str, Any]:
    """Train (or resume) and measure one cell: what each job of an executor runs.

    A module-level function of plain data, so that submitit can pickle it by reference.
    ``cell.threads`` sets torch's CPU threads; ``cell.time_min`` (the job's time limit)
    ends training at the last epoch boundary that leaves a tenth of it (at most 10
    minutes) for the evaluation, so a job that runs out of time leaves a row short of
    the protocol that the next invocation continues, not a killed job.
    """
    import torch

    if cell.threads:
        torch.set_num_threads(cell.threads)
    options = cell.options
    if cell.time_min is not None:
        budget = 60.0 * cell.time_min
        deadline = time.time() + budget - min(0.1 * budget, 600.0)
        if options.deadline is not None:
            deadline = min(deadline, options.deadline)
        options = dataclasses.replace(options, deadline=deadline)
    record = measure_run(
        cell.bench, cell.run, cell.seed, Path(cell.out_dir), options, train=True, log=log
    )
    return {"cell": cell.name, "epochs": None if record is None else record.get("epochs")}


class Executor(ABC):
    """Runs a bench's cells and reports the ones that failed."""

    #: how the executor is named in messages
    name = "executor"

    def concurrency(self, cells: int) -> int:
        """How many of ``cells`` cells train at once on one machine (recorded next to the
        epoch times of each)."""
        return 1

    def threads(self, cells: int) -> int | None:
        """torch CPU threads of each of ``cells`` cells (None: torch's default)."""
        return None

    def time_min(self) -> float | None:
        """The time limit of each cell in minutes (None: none)."""
        return None

    @abstractmethod
    def run(self, cells: list[Cell], log=print, on_done: CellDone | None = None
            ) -> list[CellFailure]:  # fmt: skip
        """Run every cell to its end (:func:`run_cell`); the failed ones, in order.
        ``on_done(cell)`` is called in this process as each cell finishes well (the bench
        rewrites its tables then)."""


class LocalExecutor(Executor):
    """This machine: one cell at a time in this process (an error stops the bench, as a
    one-line error), or ``jobs`` at once, each an ``otae bench ... --worker`` process with
    an even share of the CPU threads (a failed one is reported, the others go on)."""

    name = "local"

    def __init__(self, jobs: int = 1):
        if jobs < 1:
            raise ValueError(f"--jobs must be >= 1, got {jobs}")
        self.jobs = jobs

    def concurrency(self, cells: int) -> int:
        return max(1, min(self.jobs, cells))

    def run(self, cells: list[Cell], log=print, on_done: CellDone | None = None
            ) -> list[CellFailure]:  # fmt: skip
        jobs = self.concurrency(len(cells))
        if jobs == 1:
            for cell in cells:
                run_cell(cell, log=log)
                if on_done is not None:
                    on_done(cell)
            return []
        # the step times of --retime are taken here afterwards, one run at a time
        untimed = [dataclasses.replace(c, options=dataclasses.replace(c.options, retime=False))
                   for c in cells]  # fmt: skip
        failures = train_in_parallel(untimed, jobs, log, on_done)
        failed = {f.cell for f in failures}
        for cell in cells:
            if cell.options.retime and cell.name not in failed:
                measure_run(cell.bench, cell.run, cell.seed, Path(cell.out_dir), cell.options,
                            train=False, log=log)  # fmt: skip
        return failures


#: values of ``--submitit-cluster``: auto (Slurm where ``srun`` is, else local)
SUBMITIT_CLUSTERS = ("auto", "slurm", "local")


class SubmititExecutor(Executor):
    """One job per cell through submitit: a Slurm job array (``executor.map_array``) with
    ``resources`` per cell, or submitit's local executor (every cell at once, as a
    process of this machine) where there is no Slurm or ``cluster="local"``.

    Job files and logs go to ``folder`` (the bench's ``OUT/submitit``). The driver waits
    for the jobs; a job that raised, was killed or timed out is a
    :class:`~otae.bench.cells.CellFailure` naming the cell and its first error line (on
    Slurm, submitit requeues a pre-empted job, whose cell then resumes from its
    checkpoint). Interrupting the wait (Ctrl-C) cancels the jobs still pending or running.
    """

    name = "submitit"

    def __init__(
        self,
        folder: str | Path,
        resources: SlurmResources | None = None,
        cluster: str = "auto",
        job_name: str = "otae-bench",
    ):
        if cluster not in SUBMITIT_CLUSTERS:
            raise ValueError(
                f"--submitit-cluster must be one of {', '.join(SUBMITIT_CLUSTERS)}, got {cluster!r}"
            )
        self.folder = Path(folder)
        self.resources = resources or SlurmResources()
        self.resources.validate()
        self.cluster = cluster
        self.job_name = job_name

    def _cluster(self) -> str:
        import shutil

        slurm = shutil.which("srun") is not None
        if self.cluster == "slurm" and not slurm:
            raise ValueError(
                "--submitit-cluster slurm: no Slurm here (srun not found on PATH); run on a "
                "Slurm login node, or use --submitit-cluster local"
            )
        if self.cluster != "auto":
            return self.cluster
        return "slurm" if slurm else "local"

    def concurrency(self, cells: int) -> int:
        # submitit's local executor starts every job at once; on Slurm each has its node
        return max(1, cells) if self._cluster() == "local" else 1

    def threads(self, cells: int) -> int | None:
        if self.resources.cpus_per_cell:
            return self.resources.cpus_per_cell
        return threads_per_run(self.concurrency(cells)) if self._cluster() == "local" else None

    def time_min(self) -> float | None:
        return self.resources.time_min or DEFAULT_TIME_MIN

    def _executor(self):
        from .._optional import require

        submitit = require("submitit", feature="otae bench --executor submitit",
                           install="otae[slurm]")  # fmt: skip
        cluster = self._cluster()
        executor = submitit.AutoExecutor(folder=self.folder, cluster=cluster)
        r = self.resources
        gpus = r.gpus_per_cell
        if gpus is None and cluster == "local":  # the local executor hides unasked GPUs
            import torch

            gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        parameters: dict[str, Any] = {
            "name": self.job_name,
            "timeout_min": int(self.time_min()),
            "stderr_to_stdout": True,
            "gpus_per_node": gpus,
            "cpus_per_task": r.cpus_per_cell,
            "mem_gb": r.mem_gb,
            "slurm_partition": r.partition,
            "slurm_array_parallelism": r.array_parallelism,
        }
        executor.update_parameters(**{k: v for k, v in parameters.items() if v is not None})
        return executor, cluster

    def run(self, cells: list[Cell], log=print, on_done: CellDone | None = None
            ) -> list[CellFailure]:  # fmt: skip
        if not cells:
            return []
        executor, cluster = self._executor()
        jobs = executor.map_array(run_cell, cells)
        where = "a Slurm job array" if cluster == "slurm" else "submitit's local executor"
        log(f"[bench] {len(cells)} cell(s) submitted to {where} (job files: {self.folder})")
        for cell, job in zip(cells, jobs, strict=True):
            log(f"[bench] {cell.name}: job {job.job_id} (log {job.paths.stdout})")
        pending = dict(zip(jobs, cells, strict=True))
        failures: dict[str, CellFailure] = {}
        try:
            while pending:
                for job, cell in list(pending.items()):
                    if not job.done():
                        continue
                    del pending[job]
                    error = self._error_of(job, cluster)
                    if error is None:
                        log(f"[bench] {cell.name}: job {job.job_id} done")
                        if on_done is not None:
                            on_done(cell)
                    else:
                        failures[cell.name] = CellFailure(cell.name, error, str(job.paths.stdout))
                        log(f"[bench] {cell.name}: job {job.job_id} failed")
                if pending:
                    time.sleep(0.5 if cluster == "local" else 5.0)
        except KeyboardInterrupt:
            for job in pending:
                job.cancel(check=False)
            log(f"[bench] interrupted: {len(pending)} job(s) cancelled; rerunning the same "
                "command resumes their cells")  # fmt: skip
            raise
        return [failures[c.name] for c in cells if c.name in failures]

    @staticmethod
    def _error_of(job, cluster: str) -> str | None:
        """None for a job that returned, else the first line of what went wrong."""
        if cluster == "local" and not job.paths.result_pickle.exists():
            # a local process that ended without a result was killed (no file system lag
            # to wait for, as submitit does for Slurm's shared folders)
            return f"its job {job.job_id} ended without a result (killed or pre-empted)"
        error = job.exception()
        if error is None:
            return None
        return _first_error_line(str(error), job.state)


def _first_error_line(text: str, state: str) -> str:
    """The exception line of a failed job's traceback, or why a job left no result."""
    marker = "-" * 22
    if "failed during processing" in text and text.count(marker) >= 2:
        trace = text.split(marker)[1]
        lines = [line.strip() for line in trace.splitlines() if line.strip()]
        if lines:
            return lines[-1]
    return f"the job ended without a result (state {state}: killed, pre-empted or out of time)"
