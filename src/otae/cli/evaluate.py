"""``otae eval``: evaluate a run directory (metrics.json and report.html), or an export
folder of ``otae export`` on a dataset (metrics.json: :func:`otae.export.evaluate_export`).

The module is not named ``eval``: a submodule is an attribute of its package, and that
name would hide the builtin there.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import CHECKPOINT_HELP, count_option, device_option


def add_parser(sub) -> None:
    ev = sub.add_parser(
        "eval",
        help="evaluate a run directory (metrics.json and report.html) or an export folder",
        description="Evaluate a run directory of `otae train` (metrics.json and report.html "
        "in it), or an export folder of `otae export` (or a Hub repo id, user/name): "
        "reconstruction, clustering where the data has labels, disentanglement where it "
        "has generative factors, on the test split of --data (default: the dataset in its "
        "config.json), written to --out (default FOLDER/eval)/metrics.json.",
    )
    ev.add_argument(
        "run_dir",
        type=Path,
        help="a run directory written by `otae train`, or an export folder of `otae export`",
    )
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
    folder = ev.add_argument_group("an export folder")
    folder.add_argument(
        "--data", help="dataset name (default: the one its config.json names), e.g. mnist"
    )
    folder.add_argument("--root", help="folder of the dataset's files (datasets read from disk)")
    folder.add_argument("--split", default="test", help="train, test, ... (default: test)")
    folder.add_argument(
        "--subset", type=int, metavar="N", help="the first N images of the split only"
    )
    folder.add_argument(
        "--out", type=Path, help="the folder to write metrics.json to (default: FOLDER/eval)"
    )
    folder.add_argument(
        "--batch-size", type=int, default=500, help="images per batch (default: 500)"
    )


#: options of an export folder's evaluation, with their defaults (not for a run directory)
FOLDER_OPTIONS = {"data": None, "root": None, "split": "test", "subset": None, "out": None,
                  "batch_size": 500}  # fmt: skip
#: options of a run directory's evaluation (not for an export folder)
RUN_OPTIONS = {"checkpoint": None, "no_report": False, "classifier_fd": None, "fid": None,
               "inception_weights": None}  # fmt: skip


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def _is_export_folder(path: Path) -> bool:
    from ..models.pretrained import CONFIG_FILE, is_hub_repo_id

    if path.is_dir():
        return (path / CONFIG_FILE).is_file() and not (path / "checkpoints").is_dir()
    return not path.exists() and is_hub_repo_id(path)


def run_folder(args: argparse.Namespace) -> int:
    from ..export import evaluate_export

    given = [_option(k) for k, default in RUN_OPTIONS.items() if getattr(args, k) != default]
    if given:
        raise ValueError(
            f"{', '.join(given)}: for a run directory, not an export folder ({args.run_dir})"
        )
    count_option(args.subset, "--subset", 1)
    count_option(args.batch_size, "--batch-size", 1)
    out, metrics = evaluate_export(
        args.run_dir,
        data=args.data,
        out=args.out,
        root=args.root,
        split=args.split,
        subset=args.subset,
        batch_size=args.batch_size,
        device=device_option(args.device),
    )
    keys = ("test_rec_loss", "test_mse_per_pixel", "mean_image_baseline_rec_loss",
            "cluster_acc_kmeans", "cluster_nmi_kmeans", "cluster_acc_prior", "mig", "mig_posterior",
            "dci_disentanglement", "factorvae_score")  # fmt: skip
    for key in keys:
        if isinstance(metrics.get(key), (int, float)):
            print(f"{key}: {metrics[key]:.4f}")
    print(f"metrics: {out / 'metrics.json'}")
    return 0


def run(args: argparse.Namespace) -> int:
    if _is_export_folder(args.run_dir):
        return run_folder(args)
    given = [_option(k) for k, default in FOLDER_OPTIONS.items() if getattr(args, k) != default]
    if given:
        raise ValueError(
            f"{', '.join(given)}: for an export folder, not a run directory ({args.run_dir})"
        )
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
