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

__all__ = ["OpCounter", "SYNC_OPS", "COUNTING_BACKEND", "register_counting_backend",
           "call_compiled"]

#: name of the torch.compile backend that lets :class:`OpCounter` tell the operations run by
#: compiled graphs from those left outside (``aot_eager`` with its graphs marked)
COUNTING_BACKEND = "otae_counting"
_graph_depth = 0

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


def _launches(counts: Counter[str]) -> int:
    # views, metadata and the profiler's record_function markers launch nothing
    return sum(n for name, n in counts.items()
               if name not in _FREE and not name.startswith("profiler."))


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
        #: operations run by graphs compiled with :data:`COUNTING_BACKEND` (not in ``by_name``)
        self.in_graphs: Counter[str] = Counter()

    @property
    def ops(self) -> int:
        """Launching operations run outside compiled graphs (all of them in eager code)."""
        return _launches(self.by_name)

    @property
    def graph_ops(self) -> int:
        """Launching operations run inside graphs compiled with :data:`COUNTING_BACKEND`."""
        return _launches(self.in_graphs)

    @property
    def syncs(self) -> int:
        return sum(self.sync_ops.values())

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = str(func.overloadpacket)
        name = name if name.startswith("aten.") else f"aten.{name}" if "." not in name else name
        (self.in_graphs if _graph_depth else self.by_name)[name] += 1
        if _is_sync(name, args, kwargs):
            self.sync_ops[name] += 1
        return func(*args, **kwargs)

    def summary(self, top: int = 10) -> str:
        common = ", ".join(f"{k} {v}" for k, v in self.by_name.most_common(top))
        return f"{self.ops} ops, {self.syncs} syncs ({dict(self.sync_ops)}); most: {common}"


def _marked(graph, example_inputs):
    """A compiled graph that runs with its operations attributed to ``in_graphs``."""
    from functorch.compile import make_boxed_func

    def run(*args):
        global _graph_depth
        _graph_depth += 1
        try:
            return graph(*args)
        finally:
            _graph_depth -= 1

    return make_boxed_func(run)


def register_counting_backend() -> str:
    """Register :data:`COUNTING_BACKEND` (idempotent) and return its name.

    ``aot_eager`` (AOTAutograd, graphs run op by op) whose forward and backward graphs mark
    their operations, so that an :class:`OpCounter` counts what a compiled step leaves
    outside its graphs (``ops``) apart from what the graphs run (``graph_ops``).
    """
    from torch._dynamo import list_backends, register_backend
    from torch._dynamo.backends.common import aot_autograd

    if COUNTING_BACKEND not in list_backends(exclude_tags=()):
        register_backend(aot_autograd(fw_compiler=_marked, bw_compiler=_marked),
                         name=COUNTING_BACKEND)
    return COUNTING_BACKEND


def call_compiled(fn, *args, **kwargs):
    """Call a ``torch.compile``'d ``fn`` outside any active TorchDispatchMode.

    Dynamo falls back to eager (or fails, with ``fullgraph=True``) under a user dispatch
    mode such as :class:`OpCounter`; lifted, the graph runs compiled and the counter sees
    only what is left outside it (and the backward graph, run later by autograd, through
    :data:`COUNTING_BACKEND`'s marks).
    """
    from torch.utils._python_dispatch import _disable_current_modes

    with _disable_current_modes():
        return fn(*args, **kwargs)
