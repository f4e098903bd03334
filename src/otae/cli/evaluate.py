"""``otae eval``: evaluate a run directory (metrics.json and report.html).

The module is not named ``eval``: a submodule is an attribute of its package, and that
name would hide the builtin there.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import CHECKPOINT_HELP, count_option, device_option


def add_parser(sub) -> None:
    ev = sub.add_parser("eval", help="evaluate a run directory: metrics.json and report.html")
    ev.add_argument("run_dir", type=Path, help="a run directory written by `otae train`")
    ev.add_argument("--checkpoint", choices=("last", "best"), help=CHECKPOINT_HELP)
    ev.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ... (default: cpu)")
    ev.add_argument(
        "--no-report",
        action="store_true",
        help="write metrics.json only, not the figures and report.html (written by "
        "default, also for a run trained with --no-report)",
    )
    ev.add_argument(
        "--classifier-fd",
        type=int,
        default=None,
        metavar="N",
        help="classifier Fréchet distance on N generated vs N test images",
    )
    ev.add_argument(
        "--fid",
        type=int,
        default=None,
        metavar="N",
        help="FID (Inception-v3) on N generated vs N test images; ~0.13 s/image on CPU",
    )
    ev.add_argument(
        "--inception-weights",
        metavar="PATH",
        help="Inception weights for --fid (default: $OTAE_INCEPTION_WEIGHTS, else the package's)",
    )


def run(args: argparse.Namespace) -> int:
    count_option(args.classifier_fd, "--classifier-fd")
    count_option(args.fid, "--fid")
    weights = None
    if args.inception_weights is not None:
        from ..evaluation.fid import resolve_inception_weights

        weights = resolve_inception_weights(args.inception_weights)  # a bad path fails now
    from ..experiment import evaluate_run

    result = evaluate_run(
        args.run_dir,
        args.checkpoint,
        report=not args.no_report,
        device=device_option(args.device),
        classifier_fd_samples=args.classifier_fd,
        fid_samples=args.fid,
        inception_weights=weights,
    )
    keys = ("test_rec_loss", "test_mse_per_pixel", "mean_image_baseline_rec_loss")
    for key in (*keys, "classifier_fd", "fid"):
        if key in result.metrics:
            print(f"{key}: {result.metrics[key]:.4f}")
    if "classifier_fd" in result.metrics:
        accuracy = result.metrics.get("classifier_test_accuracy")
        print(
            f"classifier FD features: {result.metrics['classifier_name']}, trained on "
            f"{result.metrics['classifier_trained_on']}"
            + ("" if accuracy is None else f" (test accuracy {accuracy:.4f})")
        )
    print(f"metrics: {result.run_dir / 'metrics.json'}")
    if result.report is not None:
        print(f"report: {result.report.resolve()}")
    return 0
