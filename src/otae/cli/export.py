"""``otae export`` (a run as a shareable folder) and ``otae encode`` (a dataset's codes)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import CHECKPOINT_HELP, count_option


def add_parser(sub) -> None:
    export = sub.add_parser(
        "export",
        help="write a trained run as config.json + model.safetensors + a model card",
        description="Write the run's model as a folder that `otae.models.from_pretrained` "
        "(or `otae encode`, `otae sample`) loads anywhere: config.json, model.safetensors "
        "(no pickles), samples.png and a README.md model card with the run's metrics.",
    )
    export.add_argument("run_dir", type=Path, help="a run directory written by `otae train`")
    export.add_argument("out_dir", type=Path, help="the folder to write (created if needed)")
    export.add_argument(
        "--checkpoint",
        choices=("last", "best"),
        help="which checkpoint to export: best (best.pt: the lowest held-out loss, or early "
        "stopping's best epoch; the default where the run has one) or last (last.pt)",
    )
    export.add_argument(
        "--push",
        metavar="USER/NAME",
        help="then upload the folder's config.json, model.safetensors, README.md and "
        "samples.png to this Hugging Face Hub model repo (created if needed); needs "
        "`pip install 'otae[hub]'` and a token (`hf auth login` or HF_TOKEN)",
    )
    export.add_argument(
        "--private", action="store_true", help="with --push: create the repo as private"
    )
    export.add_argument(
        "--with-critic",
        action="store_true",
        help="keep the modules only training uses (GWAE's critic, FactorVAE's "
        "discriminator); left out by default: encoding, decoding and sampling never read them",
    )

    encode = sub.add_parser(
        "encode",
        help="write the codes of a dataset under a trained model to an .npz file",
        description="Encode a dataset with a trained model (an export folder or a run "
        "directory): codes (posterior means), optionally posterior samples, with the labels "
        "and generative factors where the data has them.",
    )
    encode.add_argument(
        "model", type=Path, help="an export folder, a run directory or a Hub repo id (user/name)"
    )
    encode.add_argument(
        "--data", required=True, help="dataset name (see `otae list datasets`), e.g. mnist"
    )
    encode.add_argument("--split", default="test", help="train, test, ... (default: test)")
    encode.add_argument("--root", help="folder of the dataset's files (datasets read from disk)")
    encode.add_argument("--out", type=Path, required=True, help="the .npz file to write")
    encode.add_argument(
        "--sample", action="store_true", help="also one posterior draw per image ('samples')"
    )
    encode.add_argument("--seed", type=int, default=0, help="seed of --sample (default: 0)")
    encode.add_argument(
        "--batch-size", type=int, default=500, help="images per batch (default: 500)"
    )
    encode.add_argument("--checkpoint", choices=("last", "best"), help=CHECKPOINT_HELP)


def run(args: argparse.Namespace) -> int:
    from ..export import export_run, push_to_hub
    from ..models.pretrained import is_hub_repo_id

    if args.private and not args.push:
        raise ValueError("--private goes with --push")
    if args.push is not None and not is_hub_repo_id(args.push):
        raise ValueError(f"--push needs a Hub repo id, user/name; got {args.push!r}")
    out = export_run(args.run_dir, args.out_dir, args.checkpoint, repo_id=args.push,
                     with_critic=args.with_critic)  # fmt: skip
    for name in ("config.json", "model.safetensors", "samples.png", "README.md"):
        print(out / name)
    if args.push is not None:
        url = push_to_hub(out, args.push, private=True if args.private else None)
        print(f"pushed to {url}")
    return 0


def run_encode(args: argparse.Namespace) -> int:
    from ..export import encode_dataset_to_file, load_model

    count_option(args.batch_size, "--batch-size", 1)
    count_option(args.seed, "--seed")
    if args.out.suffix != ".npz":
        raise ValueError(f"--out must be an .npz file, got {args.out}")
    model = load_model(args.model, args.checkpoint)
    shapes = encode_dataset_to_file(
        model,
        args.data,
        args.out,
        split=args.split,
        root=args.root,
        sample=args.sample,
        seed=args.seed,
        batch_size=args.batch_size,
    )
    print(args.out, ", ".join(f"{k} {v}" for k, v in shapes.items()))
    return 0
