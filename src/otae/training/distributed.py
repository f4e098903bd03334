"""torchrun integration: the process group, each rank's device and its share of the data.

``torchrun --nproc_per_node=N -m otae train CONFIG`` starts N processes with
``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` set
(multi-node: the same command on every node with ``--nnodes`` and a rendezvous
endpoint). :func:`distributed_session` initialises the default process group from
them (NCCL for CUDA, gloo for CPU) and tears it down at the end; everything else
(:class:`~otae.training.Trainer`) asks :func:`world` whether it runs in parallel.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

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
    dist.init_process_group(backend=backend)
    try:
        yield
    finally:
        dist.destroy_process_group()


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


def sum_over_ranks(values: torch.Tensor) -> torch.Tensor:
    """Sum of a (detached) tensor over ranks, for logging; unchanged in a single process."""
    if world()[0] == 1:
        return values
    values = values.detach().clone()
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values
