"""Count the aten operations and host synchronisations of a piece of code, on any device.

On a GPU every aten operation is a kernel launch (about 10 us of overhead each) and
some operations make the host wait for the device ("host syncs"): reading a value
(``.item()``, ``bool(t)``, ``float(t)``: ``aten._local_scalar_dense``), or an output
whose size depends on the data (boolean-mask indexing, ``nonzero``, ``masked_select``,
``repeat_interleave`` with tensor repeats, ``unique``). Both can be counted on a CPU,
where the same operations are dispatched: :class:`OpCounter` is a
``TorchDispatchMode`` that tallies every operation that reaches the dispatcher. It sees
forward and backward (autograd's operations dispatch too) and the optimiser step.

Limits: a copy of a host tensor to the device (``torch.tensor(list, device=cuda)``) is a
sync on CUDA but an ordinary CPU operation here, so a CPU count cannot flag it; compiling
with ``fullgraph=True`` flags ``.tolist()`` and friends as graph breaks instead.

    with OpCounter() as counts:
        loss = model.loss(x, generator)
        loss["total"].backward()
    counts.ops, counts.syncs, counts.sync_ops
"""

from __future__ import annotations

from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["OpCounter", "SYNC_OPS"]

#: Operations that make the host wait for a CUDA device (their output lives on the host,
#: or its size depends on the values).
SYNC_OPS = frozenset(
    {
        "aten._local_scalar_dense",
        "aten.is_nonzero",
        "aten.nonzero",
        "aten.masked_select",
        "aten.unique_consecutive",
        "aten._unique2",
        "aten.unique_dim",
        "aten.equal",
        "aten.allclose",
    }
)

# Operations that are free at run time (views and metadata): not counted as launches.
_FREE = frozenset(
    {
        "aten.view",
        "aten._unsafe_view",
        "aten.t",
        "aten.transpose",
        "aten.permute",
        "aten.expand",
        "aten.unsqueeze",
        "aten.squeeze",
        "aten.select",
        "aten.slice",
        "aten.as_strided",
        "aten.alias",
        "aten.detach",
        "aten.reshape",
        "aten.unbind",
        "aten.split",
        "aten.split_with_sizes",
        "aten.chunk",
        "aten.narrow",
        "aten.diagonal",
        "aten.lift_fresh",
        "aten.empty",
        "aten.empty_like",
        "aten.empty_strided",
        "aten._reshape_alias",
        "aten.view_as",
        "aten.expand_as",
        "aten.sym_size",
        "aten.sym_stride",
        "aten.sym_numel",
        "aten.sym_storage_offset",
        "aten.set_",
        "aten.resize_",
        "aten.record_stream",
    }
)


def _is_sync(name: str, args: tuple, kwargs: dict) -> bool:
    if name in SYNC_OPS:
        return True
    if name == "aten.index" or name == "aten.index_put" or name == "aten.index_put_":
        indices = args[1] if len(args) > 1 else kwargs.get("indices", ())
        return any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (indices or ())
        )
    if name == "aten.repeat_interleave":
        return isinstance(args[0], torch.Tensor) and "output_size" not in kwargs
    return False


class OpCounter(TorchDispatchMode):
    """Tally of the aten operations (kernel launches) and host syncs run inside it.

    Attributes after (or during) the ``with`` block:

    * ``ops``: operations that would launch a kernel (views and metadata excluded);
    * ``syncs``: operations that force a host synchronisation on CUDA;
    * ``by_name``: a :class:`collections.Counter` of every operation, by overload packet;
    * ``sync_ops``: a Counter of the synchronising ones.
    """

    def __init__(self) -> None:
        super().__init__()
        self.by_name: Counter[str] = Counter()
        self.sync_ops: Counter[str] = Counter()

    @property
    def ops(self) -> int:
        return sum(n for name, n in self.by_name.items() if name not in _FREE)

    @property
    def syncs(self) -> int:
        return sum(self.sync_ops.values())

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = str(func.overloadpacket)
        name = name if name.startswith("aten.") else f"aten.{name}" if "." not in name else name
        self.by_name[name] += 1
        if _is_sync(name, args, kwargs):
            self.sync_ops[name] += 1
        return func(*args, **kwargs)

    def summary(self, top: int = 10) -> str:
        common = ", ".join(f"{k} {v}" for k, v in self.by_name.most_common(top))
        return f"{self.ops} ops, {self.syncs} syncs ({dict(self.sync_ops)}); most: {common}"
