"""Where a run's randomness comes from: seeds derived per (seed, epoch, stream), the
epoch's data order, and the global RNG state a checkpoint keeps.

Every random draw of an epoch comes from a generator seeded by
:func:`derived_seed` of ``(training.seed, epoch, stream)``, one stream per purpose
(:data:`STREAM_ORDER`: data order, :data:`STREAM_TRAIN`: the training noise,
:data:`STREAM_TEST`: the held-out evaluation's fixed noise), so a resumed run replays
the remaining epochs exactly.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DistributedSampler

__all__ = [
    "STREAM_ORDER",
    "STREAM_TEST",
    "STREAM_TRAIN",
    "EpochSampler",
    "derived_seed",
    "rng_state",
    "set_rng_state",
]

#: :func:`derived_seed`'s stream of the epoch's data order
STREAM_ORDER = 1
#: the stream of the training noise (reparameterisation, prior samples, projections)
STREAM_TRAIN = 2
#: the stream of the held-out evaluation's fixed noise
STREAM_TEST = 3


def derived_seed(seed: int, epoch: int, stream: int) -> int:
    """A distinct 63-bit seed per (seed, epoch, stream), stable across runs."""
    mixed = seed * 0x9E3779B97F4A7C15 + epoch * 0xBF58476D1CE4E5B9 + stream * 0x94D049BB133111EB
    return mixed % (2**63 - 1)


def rng_state() -> dict[str, Any]:
    """The global torch (and CUDA) RNG states, for a checkpoint."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class EpochSampler(DistributedSampler):
    """The epoch's shuffled order (seeded by ``(seed, epoch)``), this rank's share of it.

    A :class:`~torch.utils.data.DistributedSampler` whose permutation is
    ``randperm(n)`` under the generator seeded with ``derived_seed(seed, epoch, 1)``, so
    that one process (``num_replicas=1``) visits the data in the same order as every
    otae version before data parallelism. With ``W`` replicas the order is padded to a
    multiple of ``W`` by repeating its start (DistributedSampler's rule) and rank ``r``
    takes positions ``r, r + W, ...``; cutting that into batches of ``B / W`` gives
    exactly the one-process batches of ``B`` when ``n`` is a multiple of ``B``.
    """

    def __init__(self, n: int, num_replicas: int = 1, rank: int = 0, seed: int = 0) -> None:
        super().__init__(range(n), num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)

    def __iter__(self):
        seed = derived_seed(self.seed, self.epoch, STREAM_ORDER)
        order_gen = torch.Generator().manual_seed(seed)
        indices = torch.randperm(len(self.dataset), generator=order_gen).tolist()
        padding = self.total_size - len(indices)
        while padding > 0:
            indices += indices[:padding]
            padding = self.total_size - len(indices)
        return iter(indices[self.rank : self.total_size : self.num_replicas])
