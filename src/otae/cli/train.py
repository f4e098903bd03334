"""``otae train``: train a model from a YAML config, or resume a run."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(sub) -> None:
    train = sub.add_parser(
        "train",
        help="train a model from a YAML config",
        description="Train a model from a YAML config. Several GPUs or nodes: launch with "
        "`torchrun --nproc_per_node=N -m otae train CONFIG` (training.batch_size is then the "
        "global batch; see docs/distributed.md).",
    )
    train.add_argument(
        "config", help="config file, shipped config name (see `otae list`), or a run directory"
    )
    train.add_argument("overrides", nargs="*", help="section.key=value overrides (YAML values)")
    train.add_argument(
        "--run-dir", type=Path, help="where to write the run (default: output_dir/name)"
    )
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --run-dir (or the config's output_dir/name) from its "
        "last checkpoint, RUN_DIR/checkpoints/last.pt; a run directory given as CONFIG is "
        "resumed without it",
    )
    train.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    train.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: config, auto)")
    train.add_argument(
        "--no-report",
        action="store_true",
        help="skip figures and report.html; kept in the run's config (evaluation.report="
        "false), so resuming the run skips them too: resume with evaluation.report=true "
        "to have them again",
    )
    train.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from ..experiment import run_experiment
    from ..training import load_config
    from ..training.config import resolve_config_path

    target = Path(args.config)
    overrides = list(args.overrides)
    run_dir = args.run_dir
    resume = args.resume
    if target.is_dir():  # a run directory: its resolved config, resumed by default
        if not (target / "config.yaml").is_file():
            what = "--resume: " if resume else ""
            raise FileNotFoundError(
                f"{what}{target} is a folder without config.yaml: it holds no otae run "
                "(a run directory is the folder `otae train` printed as `run directory:`)"
            )
        config_source = target / "config.yaml"
        run_dir = run_dir or target
        if not resume and not args.overwrite:
            resume = True
    else:
        config_source = args.config
        if resume and run_dir is None:
            try:  # a config (file or shipped name): resume its default run directory
                resolve_config_path(args.config)
            except FileNotFoundError:
                raise FileNotFoundError(
                    f"--resume: no run directory at {target} (and no config file or shipped "
                    "config of that name); check the path, or drop --resume to start a new run"
                ) from None
    if args.device:
        overrides.append(f"training.device={args.device}")
    if args.no_progress:
        overrides.append("training.progress=false")
    if args.no_report:
        # in the run's config.yaml: a resumed run keeps the choice (an explicit
        # evaluation.report=true on the command line wins, as the later override)
        overrides.insert(0, "evaluation.report=false")
    # a resumed run keeps the name in its config.yaml (not its folder's name)
    config = load_config(config_source, overrides)
    from ..training.distributed import distributed_session

    with distributed_session(config.training.device):
        result = run_experiment(
            config, run_dir, resume=resume, overwrite=args.overwrite,
            report=config.evaluation.report,
        )  # fmt: skip
    if result is None:  # a torchrun rank other than 0: rank 0 reports
        return 0
    m = result.metrics
    print(f"run directory: {result.run_dir}")
    print(
        f"test reconstruction loss: {m['test_rec_loss']:.3f} (per-image sum of squared errors; "
        f"mean-image baseline {m['mean_image_baseline_rec_loss']:.3f})"
    )
    if result.report is not None:
        print(f"report: {result.report.resolve()}")
    elif (result.run_dir / "report.html").is_file():
        print(
            f"note: {result.run_dir / 'report.html'} is from an earlier evaluation (this one "
            f"wrote no report); `otae eval {result.run_dir}` writes it again",
            file=sys.stderr,
        )
    return 0
