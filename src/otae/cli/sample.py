"""``otae sample``: decode prior samples of a trained run into a PNG grid."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import CHECKPOINT_HELP, count_option, device_option


def add_parser(sub) -> None:
    sample = sub.add_parser("sample", help="decode prior samples of a trained run into a PNG grid")
    sample.add_argument(
        "run_dir", type=Path, help="a run directory of `otae train`, or an `otae export` folder"
    )
    sample.add_argument("-n", type=int, default=64, help="number of images (default: 64)")
    sample.add_argument(
        "--component",
        type=int,
        help="sample from this prior component only (0-based; default: the whole prior)",
    )
    sample.add_argument(
        "--seed", type=int, default=0, help="seed of the prior draws (default: 0)"
    )
    sample.add_argument("--checkpoint", choices=("last", "best"), help=CHECKPOINT_HELP)
    sample.add_argument("--out", type=Path, help="PNG path (default: RUN_DIR/samples-*.png)")
    sample.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ... (default: cpu)")


def run(args: argparse.Namespace) -> int:
    import torch

    from ..evaluation.figures import save_image_grid
    from ..export import load_model

    count_option(args.n, "-n", 1)
    count_option(args.seed, "--seed")
    device = device_option(args.device)
    model = load_model(args.run_dir, args.checkpoint).to(device)
    gen = torch.Generator(device=device).manual_seed(args.seed)
    with torch.no_grad():
        if args.component is None:
            images = model.sample(args.n, gen)
            default = f"samples-seed{args.seed}.png"
        else:
            images = model.sample_component(args.component, args.n, gen)
            default = f"samples-component{args.component}-seed{args.seed}.png"
    # a Hub repo id is no local folder: its samples go to the working directory
    folder = Path(args.run_dir) if Path(args.run_dir).is_dir() else Path(".")
    out = args.out or folder / default
    save_image_grid(images.cpu(), out, nrow=max(1, int(round(args.n**0.5))))
    print(out)
    return 0
