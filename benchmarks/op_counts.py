"""Aten operations (kernel launches on a GPU) and host syncs of one training step, per model.

Measured on any machine, CPU included (:class:`otae.profiling.OpCounter`): a GPU step is
launch-bound when it runs thousands of small operations, and stalls at every host sync.
For each model, with its ``configs/mnist/<model>-paper.yaml`` settings at batch 100 on
random 28x28 images:

* ``step_ops`` / ``step_syncs``: one eager training step (critic steps included, the
  optimiser's step included), after two warm-up steps;
* ``regulariser_ops`` / ``regulariser_syncs``: forward + backward of the OT term alone on
  the batch's codes (prior samples and random directions included; GWAE: its
  relational GW term on decoded prior samples);
* with ``--compiled``: ``compiled_step_ops_outside``, the operations of a
  ``training.compile=true`` step left outside the compiled graphs (those inside, counted
  apart through otae.profiling's counting backend, are launched as fused kernels by
  inductor), and the number of graph breaks.

Writes ``benchmarks/results/op_counts.{json,md}``. Targets: 0 host syncs in a step of
every model (docs/performance.md); regulariser ops at most D-RAE 100, WAE 100, SWAE 60,
P-RAE 500, SSFG/PSSFG/max-SFG 800, MSSFG 900, SAE 600.

    python benchmarks/op_counts.py [--models drae sae] [--compiled]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import RESULTS, machine, machine_markdown, write_results  # noqa: E402

MODELS = [
    "vae", "gmvae", "vampprior", "wae", "swae", "drae", "prae", "ssfg", "mssfg", "pssfg",
    "maxsfg", "gwae", "sae",
]
#: op-count targets for the regulariser (fwd + bwd of the OT term, batch 100)
FLOORS = {"drae": 100, "wae": 100, "swae": 60, "prae": 500, "ssfg": 800, "pssfg": 800,
          "maxsfg": 800, "mssfg": 900, "sae": 600}
#: the counts before the hot-path work (the previous implementations; CHANGELOG.md)
BEFORE = {"drae": 228, "wae": 307, "swae": 48, "prae": 1608, "ssfg": 3263, "pssfg": 3021,
          "maxsfg": 2288, "mssfg": 3318, "sae": 3475}


def build_trainer(name: str, batch_size: int, overrides: list[str]):
    from otae.data import TensorImageDataset
    from otae.training import Trainer, load_config

    config = load_config(
        f"mnist/{name}-paper",
        [f"training.batch_size={batch_size}", "training.device=cpu", "training.tensorboard=false",
         "training.progress=false", *overrides],
    )
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (batch_size, 1, 28, 28), generator=gen, dtype=torch.uint8)
    data = TensorImageDataset(images, torch.zeros(batch_size, dtype=torch.long))
    trainer = Trainer.from_config(config, "/nonexistent-run-dir", train_data=data, test_data=data,
                      log=lambda m: None)
    return trainer, data.get_batch(torch.arange(batch_size))[0]


def regulariser_closure(trainer, x: torch.Tensor):
    """Forward + backward of the OT term alone (benchmarks/training_step.py's definition)."""
    from otae.models.gwae import GWAE

    model = trainer.model.train()
    gen = torch.Generator().manual_seed(1)
    if isinstance(model, GWAE):
        with torch.no_grad():
            x_prior = model.decode(model.prior.sample(x.shape[0], gen))
            z_prior = model.prior.sample(x.shape[0], gen)

        def term():
            zp = z_prior.detach().requires_grad_(True)
            xp = x_prior.detach().requires_grad_(True)
            model.gw_term(zp, xp).backward()

        return term
    with torch.no_grad():
        mean, logvar = model.encode(x)
        z = model.reparameterise(mean, logvar, gen)

    def term():
        leaves = [t.detach().requires_grad_(True) if t is not None else None
                  for t in (mean, logvar, z)]
        reg, _ = model.regulariser(x, *leaves, gen)
        model.reduce(reg).backward()

    return term


def count(fn) -> tuple[int, int, dict]:
    """Ops and syncs of ``fn`` with the input checks off, as in the training step."""
    from otae.checks import input_checks
    from otae.profiling import OpCounter

    with input_checks(False), OpCounter() as counter:
        fn()
    return counter.ops, counter.syncs, dict(counter.sync_ops)


def run_model(name: str, args) -> dict:
    trainer, x = build_trainer(name, args.batch_size, [])
    gen = torch.Generator().manual_seed(2)
    for _ in range(2):  # warm-up: optimiser state, warm starts, lazy initialisation
        trainer.step(x, gen)
    step_ops, step_syncs, step_sync_ops = count(lambda: trainer.step(x, gen))
    row = {"model": name, "step_ops": step_ops, "step_syncs": step_syncs,
           "step_sync_ops": step_sync_ops}
    if name in FLOORS or name == "gwae":
        term = regulariser_closure(trainer, x)
        term()
        ops, syncs, sync_ops = count(term)
        row.update(regulariser_ops=ops, regulariser_syncs=syncs, regulariser_sync_ops=sync_ops,
                   floor=FLOORS.get(name), before=BEFORE.get(name))
    if args.compiled:
        row.update(compiled_counts(name, args.batch_size))
    return row


def compiled_counts(name: str, batch_size: int) -> dict:
    """Ops left outside compiled graphs in a ``training.compile=true`` step, graph breaks.

    The objective is compiled with :data:`otae.profiling.COUNTING_BACKEND` (``aot_eager``
    whose graphs mark their operations), so the counter tells the graphs' operations
    (``graph_ops``) from those left outside: noise draws, the found-inf check, the
    optimiser, batch bookkeeping.
    """
    import torch._dynamo

    from otae.profiling import COUNTING_BACKEND, OpCounter

    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    trainer, x = build_trainer(
        name, batch_size, ["training.compile=true", f"training.compile_backend={COUNTING_BACKEND}"]
    )
    gen = torch.Generator().manual_seed(2)
    for _ in range(3):  # the first call of each objective records its draws, then compiles
        trainer.step(x, gen)
    breaks = sum(torch._dynamo.utils.counters["graph_break"].values())
    with OpCounter() as counter:
        trainer.step(x, gen)
    return {"compiled_step_ops_outside": counter.ops, "compiled_step_graph_ops": counter.graph_ops,
            "compiled_step_syncs": counter.syncs, "graph_breaks": breaks}


def markdown(info: dict, rows: list[dict], args) -> str:
    lines = [
        f"# Operations and host syncs of one training step, paper MNIST net, batch "
        f"{args.batch_size}",
        "",
        machine_markdown(info),
        "",
        "`step`: one eager training step (critic steps and optimiser step included); "
        "`OT term`: forward + backward of the regulariser alone on the batch's codes; "
        "`floor`: the op-count target for the OT term; `before`: the count of the previous "
        "implementation. "
        "Ops exclude views and metadata; syncs are operations that make the host wait on "
        "CUDA (`otae.profiling.SYNC_OPS`, boolean-mask indexing).",
        "",
        "| model | step ops | step syncs | OT term ops | OT term syncs | floor | before |"
        + (" compiled: ops outside graphs | graph breaks |" if args.compiled else ""),
        "|---|---|---|---|---|---|---|" + ("---|---|" if args.compiled else ""),
    ]
    for r in rows:
        line = (
            f"| {r['model']} | {r['step_ops']} | {r['step_syncs']} | "
            f"{r.get('regulariser_ops', '')} | {r.get('regulariser_syncs', '')} | "
            f"{r.get('floor') or ''} | {r.get('before') or ''} |"
        )
        if args.compiled:
            line += f" {r.get('compiled_step_ops_outside', '')} | {r.get('graph_breaks', '')} |"
        lines.append(line)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--compiled", action="store_true")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    for name in args.models:
        row = run_model(name, args)
        print(json.dumps({k: v for k, v in row.items() if not k.endswith("sync_ops")}),
              flush=True)
        rows.append(row)
    if not args.no_write:
        info = machine()
        write_results(RESULTS / "op_counts", {"machine": info, "rows": rows},
                      markdown(info, rows, args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
