"""Pairwise squared Euclidean distances shared by the discrepancies."""

from __future__ import annotations

import torch


def pairwise_sqeuclidean(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    r"""Matrix :math:`\lVert a_i - b_j \rVert^2` of shape (N, K) for ``a`` (N, D), ``b`` (K, D).

    No validation (internal). Uses :math:`\lVert a \rVert^2 + \lVert b \rVert^2 - 2 a b^\top`,
    O(N K) memory instead of the O(N K D) of broadcasting. The expansion loses
    :math:`\approx \epsilon \lVert a \rVert^2` in absolute precision, so both sets are first
    shifted by the mean of ``a`` (distances are translation invariant): the error then
    scales with the spread of the data, not with its offset from the origin. Rounding can
    still push a tiny distance below 0, hence the clamp.
    """
    centre = a.detach().mean(0)
    a, b = a - centre, b - centre
    sq = a.square().sum(1, keepdim=True) + b.square().sum(1) - 2.0 * a @ b.T
    return sq.clamp_min(0.0)
