"""Runs at once: how many (:func:`default_jobs`), the CPU threads of each
(:func:`threads_per_run`), and the worker processes that train them
(:func:`train_in_parallel`)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from ..training import load_config
from ._common import device_of, slug
from .cells import Cell, CellFailure
from .config import BenchConfig

#: runs at once per GPU by default: on one H200 (torch 2.11, paper MNIST nets, eager
#: fp32), 7 runs at once trained 1.85x the epochs per minute of one run at a time
#: (benchmarks/results/mnist-paper/runtime.md); more were not measured
RUNS_PER_GPU = 7
#: seconds a terminated worker gets to exit before it is killed
WORKER_GRACE_S = 30


def default_jobs(bench: BenchConfig, tasks, overrides: list[str]) -> int:
    """Runs at once when ``--jobs`` is not given: one on a CPU (runs there compete for
    the same cores), up to :data:`RUNS_PER_GPU` per GPU when the runs train on CUDA."""
    if not tasks:
        return 1
    run, _ = tasks[0]
    config = load_config(run.config, [*bench.overrides, *run.overrides, *overrides])
    if device_of(config).type != "cuda":
        return 1
    return max(1, min(len(tasks), RUNS_PER_GPU * torch.cuda.device_count()))


def threads_per_run(jobs: int) -> int:
    """CPU threads of each of ``jobs`` runs at once: an even share (one run: torch's own)."""
    import os

    if jobs <= 1:
        return torch.get_num_threads()
    return max(1, (os.cpu_count() or 1) // jobs)


def train_in_parallel(cells: list[Cell], jobs: int, log, on_done=None) -> list[CellFailure]:
    """Train and measure the cells in ``jobs`` worker processes at once; the failed ones.

    Each worker is ``otae bench SET --models NAME --seeds S --worker``: it trains and
    measures one cell and writes its ``metrics.json``; its output goes to
    ``OUT/<run>/seed<S>.log``. CPU threads are shared out evenly (OMP/MKL and torch),
    and with several GPUs each worker gets the next one (``CUDA_VISIBLE_DEVICES``).
    ``on_done(cell)`` is called here as each worker finishes well. If this process is
    interrupted or terminated (SIGTERM), its workers are terminated too, and waited for:
    none goes on training unseen (their checkpoints of finished epochs are kept). On
    Linux a worker is also sent SIGTERM when this process dies without that chance
    (SIGKILL, the out-of-memory killer): :func:`_terminated_with_parent`.
    """
    import os
    import signal
    import subprocess
    import threading

    threads = threads_per_run(jobs)
    die_with_parent = _terminated_with_parent(os.getpid())
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    pending = list(cells)
    running: list[tuple[subprocess.Popen, Cell, Any, int]] = []
    failures: list[CellFailure] = []
    slot = 0
    # SIGTERM only sets a flag, read between the pool's own steps: raised from the
    # handler, the exit could fall between starting a worker and recording it
    terminated: list[int] = []
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, lambda signum, frame: terminated.append(signum))
    try:
        while pending or running:
            if terminated:
                raise SystemExit(128 + terminated[0])
            while pending and len(running) < jobs:
                cell = pending.pop(0)
                out_dir = Path(cell.out_dir)
                log_path = out_dir / slug(cell.run.name) / f"seed{cell.seed}.log"
                log_path.parent.mkdir(parents=True, exist_ok=True)
                env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
                if gpus > 1:
                    env["CUDA_VISIBLE_DEVICES"] = str(slot % gpus)
                slot += 1
                command = _worker_command(cell, threads)
                # appended: a cell that restarts (a time limit, a failure) keeps the log
                # of its earlier starts, each after a line that dates it
                handle = log_path.open("a")
                started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
                handle.write(f"[bench] {cell.name}: worker started {started}\n")
                handle.flush()
                offset = handle.tell()  # this start's output begins here
                process = subprocess.Popen(
                    command, stdout=handle, stderr=subprocess.STDOUT, env=env,
                    preexec_fn=die_with_parent,
                )
                running.append((process, cell, handle, offset))
                log(f"[bench] {cell.name}: started ({threads} threads, log {log_path})")
            time.sleep(0.5)
            for entry in list(running):
                process, cell, handle, offset = entry
                if process.poll() is None:
                    continue
                running.remove(entry)
                handle.close()
                if process.returncode != 0:
                    output = Path(handle.name).read_bytes()[offset:].decode(errors="replace")
                    tail = output.strip().splitlines()[-1:] or [""]
                    error = tail[0].removeprefix("otae: error: ") or f"exit {process.returncode}"
                    failures.append(CellFailure(cell.name, error, handle.name))
                    log(f"[bench] {cell.name}: worker failed (exit {process.returncode})")
                else:
                    log(f"[bench] {cell.name}: worker done")
                    if on_done is not None:
                        on_done(cell)
        if terminated:  # during the last worker's end: its cell is done, nothing to stop
            raise SystemExit(128 + terminated[0])
    finally:
        if running:
            log(f"[bench] stopping {len(running)} worker(s); rerun the same command to "
                "continue their cells from their last finished epoch")  # fmt: skip
        for process, *_ in running:
            process.terminate()
        for process, _, handle, _ in running:
            try:
                process.wait(timeout=WORKER_GRACE_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            handle.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return failures


def _terminated_with_parent(parent: int):
    """A ``preexec_fn`` that asks Linux to send the worker SIGTERM when its parent dies
    (``prctl(PR_SET_PDEATHSIG)``), so that a coordinator killed without the chance to
    stop its workers (SIGKILL) leaves none training; None elsewhere, or without libc.

    The C function is looked up here, in the parent: between fork and exec the child
    only calls it (loading a library there could wait on a lock held by another thread).
    """
    import ctypes
    import os
    import signal
    import sys

    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def arm() -> None:
        prctl(pr_set_pdeathsig, int(signal.SIGTERM))
        if os.getppid() != parent:  # the parent died before the request was made
            os.kill(os.getpid(), signal.SIGTERM)

    return arm


def _worker_command(cell: Cell, threads: int) -> list[str]:
    """The ``otae bench ... --worker`` command line that trains one cell."""
    import sys

    options = cell.options
    source = getattr(cell.bench, "source", None) or cell.bench.name
    command = [
        sys.executable, "-m", "otae", "bench", str(source), *options.overrides,
        "--models", cell.run.name, "--seeds", str(cell.seed), "--out", str(cell.out_dir),
        "--worker", "--threads", str(threads), "--concurrent-runs", str(options.concurrent_runs),
    ]  # fmt: skip
    if options.deadline is not None:
        command += ["--deadline", repr(options.deadline)]
    if options.save_samples:
        command.append("--save-samples")
    if options.inception_weights:
        command += ["--inception-weights", options.inception_weights]
    return command
