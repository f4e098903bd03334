"""Pairwise squared distances shared by the discrepancies."""

from __future__ import annotations

import torch


def pairwise_sqeuclidean(a: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    r"""Matrix :math:`\lVert a_i - b_j \rVert^2` of shape (N, K) for ``a`` (N, D), ``b`` (K, D).

    ``b=None`` means ``b = a`` (the norms are then computed once). No validation
    (internal). Uses :math:`\lVert a \rVert^2 + \lVert b \rVert^2 - 2 a b^\top`, O(N K)
    memory instead of the O(N K D) of broadcasting. The expansion loses
    :math:`\approx \epsilon \lVert a \rVert^2` in absolute precision, so both sets are first
    shifted by the mean of ``a`` (distances are translation invariant): the error then
    scales with the spread of the data, not with its offset from the origin. Rounding can
    still push a tiny distance below 0, hence the clamp (a ``relu``: its backward is one
    operation, and where it differs from ``clamp_min``, at an exact 0, the true gradient
    of a squared distance is 0 too).
    """
    centre = a.detach().mean(0)
    a = a - centre
    norms_a = a.square().sum(1)
    if b is None:
        b, norms_b = a, norms_a
    else:
        b = b - centre
        norms_b = b.square().sum(1)
    # sub with alpha=2 rounds exactly as ``norms - 2.0 * (a @ b.T)`` (doubling is exact);
    # a fused addmm would not, and exact zeros for identical inputs would be lost.
    return torch.sub(norms_a.unsqueeze(1) + norms_b, a @ b.T, alpha=2.0).relu()
