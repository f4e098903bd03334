"""torchrun integration: the process group, each rank's device and its share of the data.

``torchrun --nproc_per_node=N -m otae train CONFIG`` starts N processes with
``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` set
(multi-node: the same command on every node with ``--nnodes`` and a rendezvous
endpoint). :func:`distributed_session` initialises the default process group from
them (NCCL for CUDA, gloo for CPU) and tears it down at the end; everything else
(:class:`~otae.training.Trainer`) asks :func:`world` whether it runs in parallel.
"""

from __future__ import annotations

import gc
import importlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.distributed as dist


def launched_by_torchrun() -> bool:
    """Whether this process is one of several started by torchrun (``WORLD_SIZE`` > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def world() -> tuple[int, int]:
    """``(world_size, rank)`` of the default process group; ``(1, 0)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def rank_device(device: torch.device) -> torch.device:
    """This rank's device: a bare ``cuda`` becomes ``cuda:LOCAL_RANK`` in a parallel run."""
    if device.type == "cuda" and device.index is None:
        index = local_rank() if world()[0] > 1 else torch.cuda.current_device()
        device = torch.device("cuda", index)
    return device


def backend_for(device_spec: str) -> str:
    """NCCL when the run trains on CUDA, gloo otherwise."""
    uses_cuda = device_spec.startswith("cuda") or (
        device_spec == "auto" and torch.cuda.is_available()
    )
    return "nccl" if uses_cuda else "gloo"


@contextmanager
def distributed_session(device_spec: str = "auto") -> Iterator[None]:
    """Initialise the default process group from torchrun's environment, if launched by it.

    A no-op for a single process or when a group already exists (the caller owns it).
    """
    if not launched_by_torchrun() or not dist.is_available() or dist.is_initialized():
        yield
        return
    backend = backend_for(device_spec)
    if backend == "nccl":
        torch.cuda.set_device(local_rank())
    # Imported *before* the group exists: importing torch._dynamo (which DDP and the
    # functional collectives do lazily) while a group exists keeps a reference to it, so
    # destroy_process_group could not free it and gloo's threads ran on into interpreter
    # shutdown, where they raced the teardown and now and then aborted a worker at exit
    # ("terminate called without an active exception", SIGABRT).
    importlib.import_module("torch._dynamo")

    dist.init_process_group(backend=backend)
    try:
        yield
    finally:
        release_process_group()


def release_process_group() -> None:
    """Destroy the default group so that its backend (gloo's threads, NCCL's communicators)
    is freed *now*, not while the interpreter shuts down.

    ``destroy_process_group`` only drops the registry's reference: anything else still
    holding the group keeps its threads running into interpreter finalisation, where they
    race the teardown and can abort the process (``terminate called without an active
    exception``). Collecting garbage first drops holders that sit in reference cycles
    (a trainer and its DistributedDataParallel wrapper, say), so the destroy frees the
    backend; :func:`distributed_session` avoids the one holder that gc cannot drop.
    """
    gc.collect()
    dist.destroy_process_group()
    gc.collect()


def backend_threads() -> list[str]:
    """Names of this process's threads that belong to a c10d backend (Linux; empty
    elsewhere): none should be left once :func:`release_process_group` has run."""
    tasks = Path("/proc/self/task")
    if not tasks.is_dir():
        return []
    names = []
    for task in tasks.iterdir():
        try:
            names.append((task / "comm").read_text().strip())
        except OSError:  # the thread ended meanwhile
            continue
    return sorted(n for n in names if "gloo" in n or "nccl" in n.lower())


class RunStoppedOnAnotherRank(RuntimeError):
    """Raised on the other ranks when rank 0's share of a joint step (held-out evaluation,
    checkpoints) failed; rank 0 reports the cause."""


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if world()[0] > 1:
        dist.barrier()


def all_ranks_true(flag: bool, device: torch.device) -> bool:
    """Whether ``flag`` holds on every rank: one decision all ranks act on together."""
    if world()[0] == 1:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value.item() > 0.5)


def any_rank_(flag: torch.Tensor) -> torch.Tensor:
    """``flag`` (a 0-dim float tensor, 0 or 1) set to its maximum over ranks, in place.

    A collective on the device: no host synchronisation (the training step's found-inf flag).
    """
    if world()[0] > 1:
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return flag


def sum_over_ranks(values: torch.Tensor) -> torch.Tensor:
    """Sum of a (detached) tensor over ranks, for logging; unchanged in a single process."""
    if world()[0] == 1:
        return values
    values = values.detach().clone()
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values
