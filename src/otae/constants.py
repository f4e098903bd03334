"""Tensors that depend only on static arguments, built once per device and dtype.

:func:`device_constant` serves every layer (input checks, discrepancies, priors): a
constant built per call would cost operations, or a host-to-device copy when it comes
from a Python list.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable

import torch

__all__ = ["device_constant"]


@functools.lru_cache(maxsize=64)
def _cached(build: Callable[..., torch.Tensor], key: tuple, dtype: torch.dtype,
            device: torch.device) -> torch.Tensor:
    # inference_mode(False): a constant first built under inference mode (evaluation)
    # must still be usable, and saved for backward, in training.
    with torch.inference_mode(False), torch.no_grad():
        return build(*key, dtype=dtype, device=device)


def device_constant(build: Callable[..., torch.Tensor], *key: Hashable, dtype: torch.dtype,
                    device: torch.device) -> torch.Tensor:
    """``build(*key, dtype=dtype, device=device)``, a tensor that depends only on its
    (hashable, static) arguments, built once per argument set and reused.

    A constant built per call costs operations, or a host-to-device copy (a sync) when
    it comes from a Python list; cached, it costs nothing after the first call. Inside
    ``torch.compile`` it is built in the graph instead (a graph constant). The returned
    tensor is shared: never modify it in place.
    """
    if torch.compiler.is_compiling():
        return build(*key, dtype=dtype, device=device)
    return _cached(build, key, dtype, torch.device(device))
