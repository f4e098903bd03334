"""Training step time in the contiguous (NCHW) and channels_last (NHWC) layouts.

For each model of the ``shapes-fine-disentanglement`` bench set (its batch size and
settings, ``shapes_fine`` at 32 x 32, the small conv net, latent 10), and for D-RAE on
the RAE paper's MNIST net (batch 100), two trainers with
the same seed differ only in ``training.memory_format``; their full training steps
(critic steps included) run in alternation, pair by pair, on the same batch, so a
drift of the machine's speed falls on both. Reported: each layout's median step, and
the median and range of the per-pair ratio contiguous / channels_last (> 1: channels_last
is faster).

    python benchmarks/memory_format.py [--pairs 12] [--threads 1] [--models betatcvae gwae]

Writes ``benchmarks/results/memory_format.{json,md}``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine, machine_markdown, write_results  # noqa: E402

SHAPES = ["data.name=shapes_fine", "data.image_size=32", "model.latent_dim=10"]
#: name -> (config, overrides): the shapes-fine-disentanglement bench set's rows, and
#: D-RAE on the RAE paper's MNIST net (128-1024 channels)
MODELS = {
    "betatcvae": ("mnist/betatcvae-quick",
                  [*SHAPES, "model.dataset_size=61236", "training.batch_size=256"]),
    "factorvae": ("mnist/factorvae-quick", [*SHAPES, "training.batch_size=64"]),
    "vae": ("mnist/vae-quick", SHAPES),
    "gwae": ("mnist/gwae-quick", [*SHAPES, "model.prior=factorised_neural"]),
    "drae-paper": ("mnist/drae-paper", []),
}  # fmt: skip
COMMON = ["training.device=cpu", "training.tensorboard=false", "training.progress=false"]


def measure(name: str, pairs: int, warmup: int) -> dict:
    from otae.training import Trainer, build_split, load_config

    config_name, overrides = MODELS[name]
    trainers, batch = {}, None
    for layout in ("contiguous", "channels_last"):
        config = load_config(config_name, [*COMMON, *overrides, f"training.memory_format={layout}"])
        n = config.training.batch_size
        config.data.train_subset = config.data.test_subset = n
        train, test = build_split(config.data, "train"), build_split(config.data, "test")
        trainer = Trainer.from_config(config, "/nonexistent-run-dir", train_data=train,
                                      test_data=test, log=lambda m: None)  # fmt: skip
        trainers[layout] = trainer
        batch = torch.arange(n)
    generators = {k: torch.Generator().manual_seed(0) for k in trainers}
    inputs = {k: next(t._iterate(t.train_data, [batch]))[0] for k, t in trainers.items()}
    times: dict[str, list[float]] = {k: [] for k in trainers}
    for i in range(warmup + pairs):
        order = list(trainers) if i % 2 == 0 else list(reversed(trainers))
        for layout in order:
            start = time.perf_counter()
            trainers[layout].step(inputs[layout], generators[layout])
            if i >= warmup:
                times[layout].append(time.perf_counter() - start)
    ratios = [a / b for a, b in zip(times["contiguous"], times["channels_last"], strict=True)]
    return {
        "model": name,
        "batch_size": int(batch.numel()),
        "contiguous_step_s": statistics.median(times["contiguous"]),
        "channels_last_step_s": statistics.median(times["channels_last"]),
        "speedup_median": statistics.median(ratios),
        "speedup_min": min(ratios),
        "speedup_max": max(ratios),
        "pairs": pairs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--pairs", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--name", default="memory_format")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for name in args.models:
        rows.append(measure(name, args.pairs, args.warmup))
        print(rows[-1], flush=True)
    info = machine()
    lines = [
        "# Training step: contiguous (NCHW) against channels_last (NHWC)",
        "",
        machine_markdown(info),
        "",
        "`shapes_fine` 32 x 32, small conv net, latent 10, each model's settings of the "
        "`shapes-fine-disentanglement` bench set, and `drae-paper` (the RAE paper's MNIST "
        "net, 128-1024 channels, batch 100); full training steps (critic steps "
        f"included) in alternation, {args.pairs} pairs after {args.warmup} warm-up pairs. "
        "Speed-up: contiguous / channels_last per pair (median [min, max]).",
        "",
        "| model | batch | contiguous s/step | channels_last s/step | speed-up |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['batch_size']} | {r['contiguous_step_s']:.3f} "
            f"| {r['channels_last_step_s']:.3f} | {r['speedup_median']:.2f} "
            f"[{r['speedup_min']:.2f}, {r['speedup_max']:.2f}] |"
        )
    write_results(args.name, {"machine": info, "rows": rows}, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
