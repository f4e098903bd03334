"""GWAE training step on otae's small conv net and on the authors' conv nets (``gwae_conv``).

The authors' setting of GWAE (``mnist/gwae-quick`` with the ``factorised_neural``
meta-prior, batch 64, 5 critic steps) on ``shapes_fine`` at 32 x 32, latent 10, in three
variants whose full training steps (critic steps included) run in rotation on the same
batch, so a drift of the machine's speed falls on all of them:

* ``small_conv``: otae's net, batch-normalised, so every critic step decodes the batch's
  posterior codes beside the prior samples (one pass, the same batch statistics);
* ``gwae_conv``: the authors' nets (no normalisation): the critic steps decode the prior
  samples alone;
* ``gwae_conv, both decoded``: the same nets, made to decode both code sets in the critic
  steps as a batch-normalised decoder must (what every decoder did before).

Reported: each variant's median step and the median [min, max] per-round ratio of
``gwae_conv, both decoded`` to ``gwae_conv``: the saving of decoding only what is used.

    python benchmarks/gwae_networks.py [--rounds 12] [--threads 1]

Writes ``benchmarks/results/gwae_networks.{json,md}``.
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

SETTING = [
    "data.name=shapes_fine", "data.image_size=32", "model.latent_dim=10",
    "model.prior=factorised_neural", "training.device=cpu", "training.tensorboard=false",
    "training.progress=false",
]  # fmt: skip
#: the authors' four layers (the quick configs give small_conv two)
GWAE_CONV = ["network.architecture=gwae_conv", "network.options.channels=[32,64,128,256]"]
#: name -> (extra overrides, decode both code sets in the critic steps)
VARIANTS = {
    "small_conv": ([], False),
    "gwae_conv": (GWAE_CONV, False),
    "gwae_conv, both decoded": (GWAE_CONV, True),
}


def build(overrides: list[str], both: bool):
    from otae.training import Trainer, build_split, load_config

    config = load_config("mnist/gwae-quick", [*SETTING, *overrides])
    n = config.training.batch_size
    config.data.train_subset = config.data.test_subset = n
    train, test = build_split(config.data, "train"), build_split(config.data, "test")
    trainer = Trainer.from_config(config, "/nonexistent-run-dir", train_data=train,
                                  test_data=test, log=lambda m: None)  # fmt: skip
    if both:
        trainer.model.decoder_mixes_batch = lambda: True
    batch = next(trainer._iterate(trainer.train_data, [torch.arange(n)]))[0]
    return trainer, batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    runs = {name: build(*spec) for name, spec in VARIANTS.items()}
    generators = {name: torch.Generator().manual_seed(0) for name in runs}
    times: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for i in range(args.warmup + args.rounds):
        order = names[i % len(names):] + names[: i % len(names)]
        for name in order:
            trainer, batch = runs[name]
            start = time.perf_counter()
            trainer.step(batch, generators[name])
            if i >= args.warmup:
                times[name].append(time.perf_counter() - start)
    ratios = [a / b for a, b in zip(times["gwae_conv, both decoded"], times["gwae_conv"],
                                    strict=True)]  # fmt: skip
    rows = [
        {"variant": name, "step_s": statistics.median(t), "batch_size": int(runs[name][1].shape[0]),
         "parameters": sum(p.numel() for p in runs[name][0].model.parameters())}
        for name, t in times.items()
    ]  # fmt: skip
    saving = {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}
    for row in rows:
        print(row, flush=True)
    print("speed-up of decoding only the prior samples:", saving, flush=True)
    info = machine()
    lines = [
        "# GWAE training step: otae's small conv net against the authors' conv nets",
        "",
        machine_markdown(info),
        "",
        "`mnist/gwae-quick` with the `factorised_neural` meta-prior (the authors' setting: "
        "RMSprop 1e-4, batch 64, 5 critic steps), `shapes_fine` 32 x 32, latent 10; full "
        f"training steps in rotation, {args.rounds} rounds after {args.warmup} warm-up "
        "rounds, median seconds per step.",
        "",
        "| variant | parameters | s/step |",
        "|---|---|---|",
        *(f"| {r['variant']} | {r['parameters']:,} | {r['step_s']:.3f} |" for r in rows),
        "",
        "Decoding only the prior samples in the critic steps (a decoder without batch "
        "statistics): `gwae_conv, both decoded` / `gwae_conv` per round = "
        f"{saving['median']:.2f} [{saving['min']:.2f}, {saving['max']:.2f}].",
    ]
    write_results("gwae_networks", {"machine": info, "rows": rows, "speedup": saving},
                  "\n".join(lines) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
