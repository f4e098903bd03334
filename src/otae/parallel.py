"""Data parallelism: how one global batch is split over ranks, and collectives with gradients.

Under ``torchrun`` every rank holds ``b = B / W`` rows of each global batch of
``B`` rows (``W`` ranks). The rows are laid out as :class:`torch.utils.data.DistributedSampler`
lays them out: rank ``r`` holds the rows at positions ``r, r + W, r + 2W, ...`` of
the global batch. Batch-level OT regularisers (sliced / spherical FGW,
hierarchical FGW, MMD, Sinkhorn, GWAE's relational term) are not sums over
samples, so they must see the whole batch: :meth:`BatchShards.gather`
all-gathers the rank-local rows *with gradients* (the functional collective
``all_gather_single_autograd``, successor of ``torch.distributed.nn.all_gather``),
restores the one-process row order, and every rank then evaluates the same
scalar ``R`` on the same global point clouds, with the same prior samples and
projections (the noise generators are seeded identically on every rank).

Why the gradients come out exact. Each rank ``r`` optimises a local objective
``L_r`` whose average over ranks is the one-process objective ``L``:
per-sample terms are averaged locally (``reduction="mean"``) or summed locally
and multiplied by ``W`` (``reduction="sum"``); the batch-level ``R`` enters
every ``L_r`` whole. Data-parallel training averages parameter gradients over
ranks, i.e. follows ``grad (1/W) sum_r L_r = grad L``, provided every
collective's backward *sums* the incoming gradients over ranks, which the
autograd all-gather does (its backward is a summing reduce-scatter). ``R``
appears ``W`` times in ``sum_r L_r`` and is averaged once, so its gradient is
exact too. :class:`GlobalBatchNorm` applies the same
reasoning to batch-norm statistics.

``mode="per_rank"`` is the cheaper alternative: no gathering, each rank
evaluates ``R`` on its own rows (own prior samples, own projections) and the
ranks' gradients are averaged: the objective is then the mean of ``W``
small-batch regularisers, which is *not* the one-process objective at batch
``B`` (an OT discrepancy between ``b``-point clouds is a different, noisier
estimate than between ``B``-point clouds).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

#: ways a batch-level regulariser can be computed in data-parallel training
REGULARISER_MODES = ("global", "per_rank")


@dataclass
class BatchShards:
    """Where this process's rows sit in the global batch (``world_size=1``: one process).

    ``mode`` is ``"global"`` (gather the batch for batch-level terms, exact) or
    ``"per_rank"`` (each rank on its own rows). Collectives use the default process
    group; ``enabled=False`` (see :func:`local_batches`) turns them all off, for work
    one rank does alone (evaluation, timing).
    """

    world_size: int = 1
    rank: int = 0
    mode: str = "global"
    enabled: bool = True

    def __post_init__(self) -> None:
        if self.mode not in REGULARISER_MODES:
            raise ValueError(
                f"regulariser mode must be one of {', '.join(REGULARISER_MODES)}, got {self.mode!r}"
            )
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is outside 0..{self.world_size - 1}")

    @property
    def active(self) -> bool:
        """Whether the batch is split over several processes right now."""
        return self.enabled and self.world_size > 1

    @property
    def gathers(self) -> bool:
        """Whether batch-level terms see the global batch (mode ``global``, several ranks)."""
        return self.active and self.mode == "global"

    @property
    def sum_scale(self) -> int:
        """Factor on a local *sum* of per-sample terms so that ranks average to the global sum."""
        return self.world_size if self.active else 1

    def global_rows(self, n_local: int) -> int:
        """Rows of the global batch when this rank holds ``n_local`` (gathering modes)."""
        return n_local * self.world_size if self.gathers else n_local

    def local_rows(self, global_tensor: Tensor) -> Tensor:
        """This rank's rows of a tensor drawn for the whole batch (identity unless gathering)."""
        if not self.gathers:
            return global_tensor
        return global_tensor[self.rank :: self.world_size]

    def gather(self, local: Tensor) -> Tensor:
        """The global batch ``(B, ...)`` from every rank's ``(b, ...)`` rows, in one-process order.

        Differentiable: the gradient reaching ``local`` is the sum over ranks of the
        gradients of their copies of the result. Identity unless gathering.
        """
        if not self.gathers:
            return local
        by_rank = _all_gather_rows(local).view(self.world_size, *local.shape)
        return by_rank.transpose(0, 1).flatten(0, 1)

    def sum_over_ranks(self, local: Tensor) -> Tensor:
        """Differentiable sum of a tensor over ranks (identity unless active)."""
        if not self.active:
            return local
        return _all_gather_rows(local.unsqueeze(0)).sum(0)


def _all_gather_rows(tensor: Tensor) -> Tensor:
    """Every rank's ``tensor`` stacked along dim 0 in rank order, differentiable (the
    backward is a reduce-scatter that sums the gradients over ranks)."""
    import torch.distributed as dist
    from torch.distributed._functional_collectives import all_gather_single_autograd

    return all_gather_single_autograd(tensor.contiguous(), 0, dist.group.WORLD)


@contextmanager
def local_batches(module: nn.Module) -> Iterator[None]:
    """Within the block, every :class:`BatchShards` held by ``module`` acts as one process.

    For work a single rank does alone in a data-parallel run (held-out evaluation,
    timing): collectives there would wait forever for the other ranks.
    """
    shards = {id(s): s for s in _shards_of(module)}.values()
    previous = [(s, s.enabled) for s in shards]
    for s in shards:
        s.enabled = False
    try:
        yield
    finally:
        for s, enabled in previous:
            s.enabled = enabled


def _shards_of(module: nn.Module) -> list[BatchShards]:
    return [
        m.shards for m in module.modules() if isinstance(getattr(m, "shards", None), BatchShards)
    ]


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm whose training statistics are those of the global batch.

    Same parameters, buffers and state-dict keys as :class:`torch.nn.BatchNorm2d` /
    ``1d`` (checkpoints are interchangeable). In training with active ``shards``
    the per-channel mean and (biased) variance are computed over all ranks' rows,
    two-pass (mean first, then the centred second moment, for the same accuracy as
    a one-process batch norm), through differentiable all-gathers; otherwise it is
    an ordinary batch norm. Unlike :class:`torch.nn.SyncBatchNorm` it runs on CPU
    (gloo) as well as CUDA.
    """

    def __init__(self, num_features: int, shards: BatchShards, **kwargs) -> None:
        super().__init__(num_features, **kwargs)
        self.shards = shards

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2-D input (got {input.dim()}-D)")

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        if not (self.training and self.shards.active):
            return super().forward(input)
        dims = [0, *range(2, input.dim())]
        local_count = input.numel() // input.shape[1]
        count = local_count * self.shards.world_size  # equal local batches (the sampler pads)
        mean = self.shards.sum_over_ranks(input.sum(dims)) / count
        shape = [1, -1] + [1] * (input.dim() - 2)
        centred = input - mean.view(shape)
        var = self.shards.sum_over_ranks(centred.pow(2).sum(dims)) / count
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = (
                    1.0 / float(self.num_batches_tracked)
                    if self.momentum is None
                    else self.momentum
                )
                self.running_mean.lerp_(mean.detach(), factor)
                unbiased = var.detach() * (count / max(count - 1, 1))
                self.running_var.lerp_(unbiased, factor)
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out


def convert_batchnorm(module: nn.Module, shards: BatchShards) -> nn.Module:
    """Replace every ``BatchNorm1d/2d/3d`` in ``module`` by a :class:`GlobalBatchNorm`.

    Parameters and buffers are carried over (same tensors' values, same names).
    Returns the converted module (``module`` itself unless it is a batch norm). A batch
    norm with ``sees_global_batch = True`` is left alone: every rank already feeds it the
    whole global batch (GWAE's meta-priors normalise prior samples drawn for all ranks),
    so summing its statistics over ranks would count each row once per rank.
    """
    if getattr(module, "sees_global_batch", False):
        return module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(
        module, GlobalBatchNorm
    ):
        converted = GlobalBatchNorm(
            module.num_features,
            shards,
            eps=module.eps,
            momentum=module.momentum,
            affine=module.affine,
            track_running_stats=module.track_running_stats,
        )
        tensors = [*module.parameters(), *module.buffers()]
        if tensors:
            converted.to(tensors[0].device)
        converted.load_state_dict(module.state_dict())
        converted.train(module.training)
        return converted
    for name, child in module.named_children():
        new = convert_batchnorm(child, shards)
        if new is not child:
            setattr(module, name, new)
    return module
