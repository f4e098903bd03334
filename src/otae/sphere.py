"""Distributions on the unit sphere S^{d-1}: pure sampling functions.

Every sampler takes an explicit ``torch.Generator`` (or ``None`` for torch's
global one) so that results are reproducible. This module sits below
:mod:`otae.discrepancies` (which slices with these directions) and
:mod:`otae.slicers` (which wraps them in stateful samplers owning a generator).
"""

from __future__ import annotations

import torch

__all__ = ["uniform_directions"]


def uniform_directions(
    n: int,
    dim: int,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """``n`` directions drawn uniformly on S^{dim-1}, shape (n, dim).

    Normalised standard Gaussian vectors (rotation invariance of N(0, I)).
    """
    g = torch.randn(n, dim, generator=generator, dtype=dtype, device=_sampling_device(generator, device))
    g = g.to(device) if device is not None else g
    return g / g.norm(dim=-1, keepdim=True)


def _sampling_device(generator: torch.Generator | None, device) -> torch.device | str | None:
    """Draw on the generator's device (a CPU generator cannot fill a CUDA tensor)."""
    return generator.device if generator is not None else device
