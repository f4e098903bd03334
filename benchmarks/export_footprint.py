"""Size of an exported model and the time to reload it, for the RAE paper's conv nets.

For each (model, architecture): build it (untrained: the sizes and load times do not
depend on the values), ``save_pretrained`` into a temporary folder, and time
``from_pretrained`` (a fresh build plus loading the tensors) as the best and median of
``--repeats`` loads. A critic (GWAE, FactorVAE) is left out of the folder as
``otae export`` leaves it out; its parameters are counted apart. Writes
``benchmarks/results/export_footprint.{json,md}``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from _machine import machine, write_results

from otae.models import build_model, from_pretrained, model_config_from_dict

CASES = [
    ("drae", "paper_mnist", (1, 28, 28), 8),
    ("prae", "paper_mnist", (1, 28, 28), 8),
    ("gwae", "paper_mnist", (1, 28, 28), 8),
    ("drae", "paper_celeba", (3, 64, 64), 64),
    ("wae", "paper_celeba", (3, 64, 64), 64),
    # the disentanglement bench's setting: the discriminator is most of a FactorVAE
    ("factorvae", "small_conv", (1, 32, 32), 10),
    ("gwae", "small_conv", (1, 32, 32), 10),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rows = []
    for name, architecture, shape, latent in CASES:
        torch.manual_seed(0)
        config = model_config_from_dict({"name": name, "latent_dim": latent, "n_components": 10})
        model = build_model(config, shape, architecture)
        with tempfile.TemporaryDirectory() as folder:
            model.save_pretrained(folder)
            sizes = {p.name: p.stat().st_size for p in Path(folder).iterdir()}
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                from_pretrained(folder)
                times.append(time.perf_counter() - start)
        rows.append({
            "model": name, "architecture": architecture, "image_shape": list(shape),
            "latent_dim": latent,
            "parameters": sum(p.numel() for p in model.parameters()),
            "critic_parameters": sum(p.numel() for p in model.critic_parameters()),
            "folder_mb": sum(sizes.values()) / 1e6,
            "weights_mb": sizes["model.safetensors"] / 1e6,
            "reload_s_best": min(times), "reload_s_median": statistics.median(times),
        })  # fmt: skip
        print(rows[-1])
    info = machine()
    lines = [
        "# Exported model size and reload time",
        "",
        f"`benchmarks/export_footprint.py`; {info['cpu']}, torch {info['torch']}, "
        f"{info['date']}. Folder = config.json + model.safetensors (float32, every parameter "
        "and buffer but a critic's, which `otae export` leaves out; 'parameters' counts "
        "them all, 'of which critic' the ones left out); reload = "
        f"`otae.models.from_pretrained` (build + load), best / median of {args.repeats}.",
        "",
        "| model | networks | image | latent | parameters | of which critic | folder (MB) "
        "| reload best (s) | reload median (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['architecture']} | {'x'.join(map(str, r['image_shape']))} | "
            f"{r['latent_dim']} | {r['parameters']:,} | {r['critic_parameters']:,} | "
            f"{r['folder_mb']:.1f} | "
            f"{r['reload_s_best']:.3f} | {r['reload_s_median']:.3f} |"
        )
    write_results("export_footprint", {"machine": info, "rows": rows}, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
