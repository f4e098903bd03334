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
from .config import BenchConfig, BenchRun, RunOptions

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
    if device_of(config).type != "cuda":
        return 1
    return max(1, min(len(tasks), RUNS_PER_GPU * torch.cuda.device_count()))


def threads_per_run(jobs: int) -> int:
    """CPU threads of each of ``jobs`` runs at once: an even share (one run: torch's own)."""
    import os

    if jobs <= 1:
        return torch.get_num_threads()
    return max(1, (os.cpu_count() or 1) // jobs)


def train_in_parallel(bench, tasks, out_dir: Path, options: RunOptions, log) -> None:
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
                log_path = out_dir / slug(run.name) / f"seed{seed}.log"
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
