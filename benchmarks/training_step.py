"""Time per training step of the paper's MNIST net, and the regulariser's share of it.

For each model (default: WAE, SWAE, D-RAE, P-RAE, SSFG-RAE, PSSFG-RAE, GWAE, SAE),
with its ``configs/mnist/<model>-paper.yaml`` settings at batch 100:

* ``step_s``: the fastest full training step (critic steps included for GWAE);
* ``ae_step_s``: the fastest plain autoencoder step on the same model and batch
  (the same networks, reconstruction only);
* ``share_step``: ``1 - ae_step_s / step_s``, the overhead as a user sees it. On a
  loaded CPU this difference is noisy (a few %), so also:
* ``regulariser_s``: forward + backward of the OT term alone, on the batch's codes
  (for GWAE: the relational GW term on decoded prior samples; its critic steps and
  the decoding of prior samples, network passes the method needs, are timed
  separately as ``gwae_critic_s`` and counted in ``share_step``);
* ``share_direct``: ``regulariser_s / step_s``.

With ``--compile`` the trainer runs ``training.compile=true`` (the whole objective as one
graph per objective, ``--compile-backend``/``--compile-mode``) and the OT term alone is
compiled the same way (its random draws made outside the graph, as the trainer does).
The input checks of the discrepancies are off, as in the trainer's hot path.

Writes ``benchmarks/results/training_step[_<device>][_<precision>][_compiled].{json,md}``.
Targets: every OT regulariser adds < 3% to the step on CPU (docs/results.md); on a GPU
(docs/performance.md), the OT term is <= 5% of the step (WAE, SWAE, D-RAE, P-RAE), <= 10%
(spherical family, SAE).

    python benchmarks/training_step.py [--device cuda] [--models drae sae] [--steps 5]
        [--compile [--compile-mode reduce-overhead]] [--precision bf16]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import RESULTS, machine, machine_markdown, write_results  # noqa: E402

MODELS = [
    "wae",
    "swae",
    "drae",
    "prae",
    "ssfg",
    "pssfg",
    "gwae",
    "gwae:model.critic_samples=shared",
    "sae",
]
LABELS = {
    "wae": "WAE (MMD)",
    "swae": "SWAE (sliced W)",
    "drae": "D-RAE (sliced FGW)",
    "prae": "P-RAE (hierarchical FGW)",
    "ssfg": "SSFG-RAE",
    "pssfg": "PSSFG-RAE",
    "gwae": "GWAE",
    "sae": "SAE (Sinkhorn)",
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _fastest(fn, device, repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return min(times)


def _compiled_term(term, leaves, gen, args):
    """``term(leaves, generator)`` compiled like the trainer's objective: the draws are
    recorded once, then made outside the graph and passed in."""
    from otae.noise import DrawRecorder, DrawTape, draw_all
    from otae.training.compiled import compile_options

    recorder = DrawRecorder(gen)
    term(leaves, recorder)
    graph = torch.compile(lambda leaves, draws: term(leaves, DrawTape(draws)),
                          **compile_options(args.compile_backend, args.compile_mode))

    def run():
        graph([t.detach().requires_grad_(True) if t is not None else None for t in leaves],
              draw_all(recorder.specs, gen)).backward()

    return run


def regulariser_time(trainer, x: torch.Tensor, args) -> dict[str, float]:
    """Forward + backward of the OT term alone on this batch's codes (module docstring)."""
    from otae.checks import input_checks
    from otae.models.gwae import GWAE

    repeats, warmup = args.steps, args.warmup

    model = trainer.model.train()
    device = trainer.device
    gen = torch.Generator(device=device).manual_seed(0)
    out: dict[str, float] = {}
    if isinstance(model, GWAE):
        with torch.no_grad():
            z_prior = model.prior.sample(x.shape[0], gen)
            x_prior = model.decode(z_prior)

        leaves = (z_prior, x_prior)

        def value(leaves, generator):
            return model.gw_term(*leaves)

        def critic():
            for step in range(model.config.n_critic):
                trainer.critic_optimizer.zero_grad(set_to_none=True)
                model.critic_loss(x, gen, reuse_samples=step > 0)["total"].backward()
                trainer.critic_optimizer.step()

        out["gwae_critic_s"] = _fastest(critic, device, repeats, warmup)
    else:
        with torch.no_grad():
            mean, logvar = model.encode(x)
            z = model.reparameterise(mean, logvar, gen)

        leaves = (mean, logvar, z)

        def value(leaves, generator):
            return model.reduce(model.regulariser(x, *leaves, generator)[0])

    if args.compile:
        term = _compiled_term(value, leaves, gen, args)
    else:

        def term():
            value([t.detach().requires_grad_(True) if t is not None else None for t in leaves],
                  gen).backward()

    with input_checks(False):
        out["regulariser_s"] = _fastest(term, device, repeats, warmup)
    return out


def run_model(name: str, args) -> dict:
    from otae.data import build_dataset
    from otae.training import Trainer, load_config

    overrides = [
        f"training.batch_size={args.batch_size}",
        f"training.device={args.device}",
        f"training.precision={args.precision}",
        "training.tensorboard=false",
        "training.progress=false",
        f"training.compile={str(args.compile).lower()}",
        f"training.compile_backend={args.compile_backend}",
        f"training.compile_mode={args.compile_mode}",
    ]
    name, *extra = name.split(":")  # e.g. gwae:model.critic_samples=shared
    config = load_config(f"mnist/{name}-{args.config}", overrides + extra)
    train = build_dataset("mnist", "train", subset=args.batch_size)
    test = build_dataset("mnist", "test", subset=args.batch_size)
    trainer = Trainer.from_config(
        config, "/nonexistent-run-dir", train_data=train, test_data=test, log=lambda m: None
    )
    share = trainer.regulariser_share(args.steps, args.warmup)
    x = train.get_batch(torch.arange(args.batch_size))[0].to(trainer.device)
    row = {
        "model": name,
        "overrides": extra,
        "label": LABELS.get(name, name) + "".join(f" ({e.split('.')[-1]})" for e in extra),
        "architecture": config.network.architecture,
        "batch_size": args.batch_size,
        "step_s": share["step_time_s"],
        "ae_step_s": share["step_time_without_regulariser_s"],
        "share_step": share["regulariser_share"],
        "share_step_min": share["regulariser_share_min"],
        "share_step_quartiles": share["regulariser_share_quartiles"],
        "step_times_s": share["step_times_s"],
        "ae_step_times_s": share["step_times_without_regulariser_s"],
    }
    row.update(regulariser_time(trainer, x, args))
    row["share_direct"] = row["regulariser_s"] / row["step_s"]
    return row


def merge_rows(old: list[dict], new: list[dict]) -> list[dict]:
    """``old`` with the rows of the same (model, overrides) replaced by ``new``'s."""

    def key(row: dict) -> tuple:
        return row["model"], tuple(row["overrides"])

    replaced = {key(r): r for r in new}
    merged = [replaced.pop(key(r), r) for r in old]
    return merged + list(replaced.values())


def markdown(info: dict, rows: list[dict], args) -> str:
    lines = [
        f"# Training step of the paper's MNIST net, batch {args.batch_size} "
        f"({args.device}, {args.precision}"
        + (f", compiled: {args.compile_backend} {args.compile_mode}" if args.compile else "")
        + ")",
        "",
        machine_markdown(info),
        "",
        f"{args.steps} pairs of steps (a full training step and a reconstruction-only "
        f"step of the same networks, alternating order) after {args.warmup} warm-up pairs. "
        "`step` / `AE step`: the fastest of each; `share (step)`: the median paired "
        "difference of each order, averaged over the two orders, / median full step "
        "(Trainer.regulariser_share), with the quartiles of the paired differences in "
        "brackets (the machine's noise: step times on a shared CPU vary by several %); "
        "`OT term`: forward + backward of the regulariser alone on the batch's codes, "
        "which is all the regulariser adds to a step (its gradient joins the "
        "reconstruction's at the codes); `share (direct)`: OT term / step.",
        "",
        "| model | step (s) | AE step (s) | share (step) | OT term (ms) | share (direct) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        low, high = (100 * q for q in r["share_step_quartiles"])
        lines.append(
            f"| {r['label']} | {r['step_s']:.3f} | {r['ae_step_s']:.3f} | "
            f"{100 * r['share_step']:.1f}% [{low:.1f}, {high:.1f}] | "
            f"{1000 * r['regulariser_s']:.2f} | {100 * r['share_direct']:.2f}% |"
        )
    for r in rows:
        if "gwae_critic_s" in r:
            lines += [
                "",
                f"{r['label']}: the critic steps take {r['gwae_critic_s']:.3f} s per batch and "
                "the generator step decodes the batch's prior samples (a second decoder pass, "
                "forward and backward): network passes the method needs, which `share (step)` "
                "counts. The relational GW term itself is the `OT term` column.",
            ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--config", default="paper", help="paper or quick (small conv net)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--compile", action="store_true", help="training.compile=true")
    parser.add_argument("--compile-backend", default="inductor")
    parser.add_argument("--compile-mode", default="default")
    parser.add_argument("--name", default=None, help="results file name")
    parser.add_argument(
        "--update", action="store_true", help="replace these models' rows in the results file"
    )
    parser.add_argument("--render", type=Path, help="only rewrite the Markdown of a results JSON")
    args = parser.parse_args()
    if args.render:
        payload = json.loads(args.render.read_text())
        settings = argparse.Namespace(
            **{"compile": False, "compile_backend": "inductor", "compile_mode": "default",
               **payload["settings"]})
        args.render.with_suffix(".md").write_text(
            markdown(payload["machine"], payload["rows"], settings)
        )
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    info = machine()
    rows = []
    for name in args.models:
        row = run_model(name, args)
        print(
            f"{name:6s} step {row['step_s']:.3f}s  AE {row['ae_step_s']:.3f}s  "
            f"share(step) {100 * row['share_step']:.1f}%  "
            f"OT term {1000 * row['regulariser_s']:.2f}ms "
            f"share(direct) {100 * row['share_direct']:.2f}%",
            flush=True,
        )
        rows.append(row)
        # written after every model: a run cut short (a job's time limit) keeps its rows
        paths = write_step_results(args, info, rows)
    print("wrote", *paths)


def write_step_results(args, info: dict, rows: list[dict]):
    name = args.name or (
        "training_step"
        + ("" if args.device == "cpu" else f"_{args.device.split(':')[0]}")
        + ("" if args.precision == "fp32" else f"_{args.precision}")
        + ("" if args.config == "paper" else f"_{args.config}")
        + ("_compiled" if args.compile else "")
    )
    if args.update and (RESULTS / f"{name}.json").exists():
        rows = merge_rows(json.loads((RESULTS / f"{name}.json").read_text())["rows"], rows)
    payload = {
        "machine": info,
        "settings": vars(args),
        "rows": rows,
        "median_share_direct": statistics.median(r["share_direct"] for r in rows),
    }
    return write_results(name, payload, markdown(info, rows, args))


if __name__ == "__main__":
    main()
