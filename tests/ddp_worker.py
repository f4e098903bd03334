"""One data-parallel step per model, run by ``torchrun`` from tests/test_distributed.py.

``python -m torch.distributed.run --standalone --nproc_per_node=2 tests/ddp_worker.py OUT
MODEL...`` writes rank 0's results to ``OUT``; :func:`run_case` with no process group
gives the one-process reference the test compares them with.
"""

from __future__ import annotations

import sys
import tempfile

import torch

from otae.data import TensorImageDataset
from otae.training import Trainer, distributed, load_config

GLOBAL_BATCH = 8
N_IMAGES = 16  # two global batches per epoch


def tiny_config(model: str, mode: str = "global"):
    """The model's quick config with a tiny conv net (batch norm included) at batch 8."""
    overrides = [
        "network.options={channels: [4, 8], hidden: 16}",
        f"training.batch_size={GLOBAL_BATCH}",
        "training.device=cpu",
        "training.progress=false",
        "training.tensorboard=false",
        f"training.regulariser_mode={mode}",
    ]
    if model == "gwae":
        overrides += ["model.n_critic=2", "model.critic_hidden=[16]", "model.sampler_hidden=[8]"]
    if model == "factorvae":
        overrides += ["model.discriminator_depth=2", "model.discriminator_width=16"]
    return load_config(f"mnist/{model}-quick", overrides)


def images() -> TensorImageDataset:
    gen = torch.Generator().manual_seed(0)
    data = torch.randint(0, 256, (N_IMAGES, 1, 28, 28), generator=gen, dtype=torch.uint8)
    return TensorImageDataset(data, torch.arange(N_IMAGES) % 10)


def _rank_mean(terms: dict[str, torch.Tensor]) -> dict[str, float]:
    """Each rank's terms are its share; their average over ranks is the global value."""
    keys = sorted(terms)
    values = torch.stack([terms[k].detach().float() for k in keys])
    values = distributed.sum_over_ranks(values) / distributed.world()[0]
    return dict(zip(keys, values.tolist(), strict=True))


def run_case(model: str, mode: str = "global") -> dict:
    """Loss terms and gradients of one global batch, then one epoch (two steps)."""
    world_size, rank = distributed.world()
    data = images()
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer.from_config(
            tiny_config(model, mode), run_dir, train_data=data, test_data=data, log=lambda m: None
        )
    x = data.get_batch(torch.arange(GLOBAL_BATCH))[0][rank::world_size]
    gen = torch.Generator().manual_seed(123)
    out: dict = {}
    named = dict(trainer.model.named_parameters())
    if trainer.critic_optimizer is not None:
        trainer.critic_optimizer.zero_grad(set_to_none=True)
        terms, _ = trainer.backward(x, gen, "critic")
        out["critic_terms"] = _rank_mean(terms)
        critic = {id(p) for p in trainer.model.critic_parameters()}
        out["critic_grads"] = {
            n: p.grad.clone() for n, p in named.items() if id(p) in critic and p.grad is not None
        }
    trainer.model.zero_grad(set_to_none=True)
    terms, finite = trainer.backward(x, gen, "loss")
    out["finite"] = finite
    out["terms"] = _rank_mean(terms)
    out["grads"] = {n: p.grad.clone() for n, p in named.items() if p.grad is not None}
    trainer.model.zero_grad(set_to_none=True)
    out["epoch"] = trainer.train_epoch(1)
    out["state"] = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    return out


def nan_on_last_rank(model: str) -> dict:
    """The last rank's loss is not finite (its loss is patched), the others' is: every
    rank must skip the step together (no rank may wait in a collective)."""
    world_size, rank = distributed.world()
    data = images()
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer.from_config(tiny_config(model), run_dir, train_data=data, test_data=data)
    if rank == world_size - 1:
        loss = trainer.model.loss

        def non_finite_loss(x, generator=None):
            terms = loss(x, generator)
            return {**terms, "total": terms["total"] * float("nan")}

        trainer.model.loss = non_finite_loss
    x = data.get_batch(torch.arange(GLOBAL_BATCH))[0][rank::world_size]
    before = {k: v.detach().clone() for k, v in trainer.model.named_parameters()}
    terms, _ = trainer.step(x, torch.Generator().manual_seed(0))
    unchanged = all(torch.equal(v, before[k]) for k, v in trainer.model.named_parameters())
    return {
        "local_total_finite": bool(torch.isfinite(terms["total"])),
        "stepped": trainer.last_step_finite,
        "weights_unchanged": unchanged,
    }


def failure_on_rank_0(model: str) -> dict:
    """Rank 0's end of epoch (evaluation, checkpoints) fails: every rank must stop at once,
    rank 0 with its own error, the others with RunStoppedOnAnotherRank (none may wait).
    The failure is planted in ``evaluate``, the first thing rank 0 alone does then."""
    rank = distributed.world()[1]
    data = images()
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer.from_config(tiny_config(model), run_dir, train_data=data, test_data=data)
        if rank == 0:

            def failing_evaluate(*args, **kwargs):
                raise OSError(28, "No space left on device (planted)")

            trainer.evaluate = failing_evaluate
        try:
            trainer.fit()
        except Exception as err:
            return {"error": type(err).__name__, "message": str(err), "epoch": trainer.epoch}
    return {"error": None, "message": "", "epoch": trainer.epoch}


def main(argv: list[str]) -> None:
    out_path, mode, models = argv[0], argv[1], argv[2:]
    torch.set_num_threads(1)
    with distributed.distributed_session("cpu"):
        if mode == "nan":
            results = {name: nan_on_last_rank(name) for name in models}
        elif mode == "end_epoch_failure":
            results = {name: failure_on_rank_0(name) for name in models}
        else:
            results = {name: run_case(name, mode) for name in models}
        results["_world"] = distributed.world()
        results["_backend_threads_during"] = distributed.backend_threads()
    # the session has released the group: no backend thread may outlive it (they would
    # race the interpreter's exit and could abort the process)
    results["_backend_threads_after"] = distributed.backend_threads()
    if results["_world"][1] == 0:
        torch.save(results, out_path)
    elif mode == "end_epoch_failure":  # the test needs every rank's outcome
        torch.save(results, f"{out_path}.rank{results['_world'][1]}")


if __name__ == "__main__":
    main(sys.argv[1:])
