"""``otae tune``: a hyper-parameter search with Optuna (``pip install 'otae[tune]'``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._common import count_option

EXAMPLES = """examples:
  otae tune mnist/drae-quick model.gamma=loguniform:0.01:10 model.beta=uniform:0.01:0.5 \\
      training.epochs=3 --trials 20 --out runs/tune-drae
  # a second worker (another terminal, GPU or machine with the folder shared): the same line
  otae tune mnist/vae-quick --space space.yaml --metric cluster_acc_kmeans --direction maximize
  otae tune mnist/drae-quick ... --storage postgresql://user@host/db --study drae
"""


def add_parser(sub) -> None:
    tune = sub.add_parser(
        "tune",
        help="search hyper-parameters with Optuna; several workers share one study",
        description="Train the config once per trial, with values sampled from the search\n"
        "space, into OUT/trial-NNNN; optimise a number of the trials' metrics.json.\n"
        "Workers started with the same --out (or --storage and --study) share the study\n"
        "and its --trials budget. Writes OUT/trials.csv, OUT/best.yaml (`otae train\n"
        "OUT/best.yaml` reruns the best trial) and OUT/report.html. See docs/scaling.md.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    tune.add_argument("config", help="config file or shipped config name (see `otae list`)")
    tune.add_argument(
        "overrides",
        nargs="*",
        help="section.key=value overrides fixed in every trial, and search dimensions "
        "section.key=DIST: loguniform:LOW:HIGH, uniform:LOW:HIGH, int:LOW:HIGH or "
        "choice:A,B,C",
    )
    tune.add_argument(
        "--space",
        type=Path,
        metavar="FILE",
        help="a YAML file with a `search:` mapping of config keys to DIST strings (added "
        "to the dimensions given on the command line)",
    )
    tune.add_argument(
        "--metric",
        default="test_rec_loss",
        help="the objective: a number of the trials' metrics.json (default: test_rec_loss; "
        "e.g. classifier_fd, fid, cluster_acc_kmeans, mig)",
    )
    tune.add_argument(
        "--direction",
        choices=("minimize", "maximize"),
        default="minimize",
        help="minimize (default) or maximize the metric",
    )
    tune.add_argument(
        "--trials",
        type=int,
        default=20,
        help="the study's total number of trials, all workers together (default 20); "
        "a worker stops when the study has that many trials, finished or running",
    )
    tune.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="start no new trial after SECONDS (this worker; the running trial finishes)",
    )
    tune.add_argument(
        "--out",
        type=Path,
        help="folder of the trials, the study's journal and the outputs "
        "(default: output_dir/tune-NAME)",
    )
    tune.add_argument(
        "--storage",
        help="the study's storage: a journal file (default OUT/study.journal; on a shared "
        "file system for workers on several machines) or a database URL "
        "(postgresql://..., mysql://..., sqlite:///...)",
    )
    tune.add_argument(
        "--study", help="the study's name in the storage (default: the config's name)"
    )
    tune.add_argument(
        "--pruner",
        default="median",
        help="stop unpromising trials at an epoch boundary: median[:STARTUP[:WARMUP]] "
        "(default median:5:1), halving[:MIN_EPOCHS[:FACTOR]] (successive halving) or none",
    )
    tune.add_argument(
        "--prune-metric",
        metavar="COLUMN",
        help="the per-epoch history column the pruner reads, in the direction of the "
        "objective (default: --metric when the history has it, e.g. test_rec_loss; "
        "val_rec_loss with training.early_stopping.enabled=true)",
    )
    tune.add_argument(
        "--sampler-seed",
        type=int,
        help="seed of the TPE sampler (default: random; give each worker its own)",
    )
    tune.add_argument(
        "--startup-trials",
        type=int,
        help="random trials before the sampler models the results (default: a third of "
        "--trials, at most 10)",
    )
    tune.add_argument("--device", help="cpu, cuda, cuda:1 ... for every trial (default: config)")
    tune.add_argument(
        "--trial-reports",
        action="store_true",
        help="write each trial's figures and report.html too (off: faster; best.yaml keeps "
        "the config's report setting)",
    )


def run(args: argparse.Namespace) -> int:
    from .. import tune as tuning

    overrides, space = tuning.split_arguments(args.overrides)
    if args.space is not None:
        for key, dim in tuning.load_space(args.space).items():
            if key in space:
                raise ValueError(f"search space: {key} is in {args.space} and on the command line")
            space[key] = dim
    if args.device:
        overrides.append(f"training.device={args.device}")
    count_option(args.trials, "--trials")
    count_option(args.startup_trials, "--startup-trials")
    optuna = tuning.require_optuna()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # otae prints its own lines
    try:
        result = tuning.tune(
            args.config,
            space,
            overrides=overrides,
            out=args.out,
            metric=args.metric,
            direction=args.direction,
            n_trials=args.trials,
            timeout=args.timeout,
            storage=args.storage,
            study_name=args.study,
            pruner=args.pruner,
            prune_metric=args.prune_metric,
            sampler_seed=args.sampler_seed,
            startup_trials=args.startup_trials,
            trial_reports=args.trial_reports,
        )
    except KeyboardInterrupt:
        print(
            "otae: interrupted; the running trial is marked FAIL (it counts as one of "
            "--trials): the same command again continues the study",
            file=sys.stderr,
        )
        return 130
    states = ", ".join(f"{n} {s.lower()}" for s, n in sorted(result.states.items()))
    print(f"study {result.study_name!r} in {result.storage}: {states or 'no trials'}; "
          f"this worker ran {len(result.ran)}")  # fmt: skip
    if result.best_number is not None:
        params = ", ".join(f"{k}={v!r}" for k, v in result.best_params.items())
        print(f"best: trial {result.best_number}, {args.metric} = "
              f"{result.best_value:.6g} ({params})")
    for name in ("trials", "best", "report"):
        if name in result.files:
            print(f"{name}: {result.files[name]}")
    return 0
