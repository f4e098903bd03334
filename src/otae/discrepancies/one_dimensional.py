r"""Exact fused Gromov-Wasserstein between two 1-D uniform empirical measures.

For samples :math:`x, y \in \mathbb{R}^N` and a permutation :math:`\sigma`,

.. math::

    FG_\beta(x, y; \sigma) = \frac{1-\beta}{N} \sum_i (x_i - y_{\sigma(i)})^2
      + \frac{\beta}{N^2} \sum_{i,j} \big((x_i - x_j)^2 - (y_{\sigma(i)} - y_{\sigma(j)})^2\big)^2,

and :math:`FG_\beta(x, y) = \min_\sigma FG_\beta(x, y; \sigma)`. By Theorem 3.4 of
Xu et al. (ICML 2020), once both samples are sorted the minimum is attained by the
identity or by the anti-identity matching, so only two candidates are evaluated.

The relational double sum is evaluated in O(N) with power sums of the centred
samples :math:`\bar x = x - \operatorname{mean}(x)` (the relational part is invariant
to a translation of x or of y). With :math:`a = \sum \bar x_i^2`,
:math:`b = \sum \bar y_i^2` and :math:`p = \sum \bar x_i \bar y_{\sigma(i)}`,

.. math::

    \sum_{i,j} \big((x_i-x_j)^2 - (y_{\sigma(i)}-y_{\sigma(j)})^2\big)^2
    = 2N \sum_i (\bar x_i^2 - \bar y_{\sigma(i)}^2)^2 + 6 (a-b)^2 + 8 (ab - p^2),

a sum of three non-negative terms (the last by Cauchy-Schwarz), so no large
quantities cancel; float32 stays accurate for large offsets and spreads.

Shapes: the row functions work on ``(..., N)`` tensors (samples on the last dim,
where sorting is contiguous); the public :func:`fgw_1d` takes the POT-style
``(N,)`` / ``(N, L)`` layout.
"""

from __future__ import annotations

import torch

from ._validation import check_same, check_tensor, check_unit_interval

__all__ = ["fgw_1d", "fgw_1d_dense", "fgw_1d_rows", "wasserstein_1d_rows"]


def _fgw_terms_sorted(xs: torch.Tensor, ys: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Mean-normalised W and GW parts for the identity and anti-identity matchings.

    ``xs``, ``ys``: sorted along the last dim, shape (..., N). Returns
    ``(w_id, w_anti, gw_id, gw_anti)``, each of shape (...):
    ``w = mean_i (x_i - y_sigma(i))^2`` and ``gw = mean_ij (...)^2``.
    """
    n = xs.shape[-1]
    ys_rev = ys.flip(-1)
    w_id = (xs - ys).square().mean(-1)
    w_anti = (xs - ys_rev).square().mean(-1)

    xc = xs - xs.mean(-1, keepdim=True)
    yc = ys - ys.mean(-1, keepdim=True)
    yc_rev = yc.flip(-1)
    x2, y2 = xc.square(), yc.square()
    a, b = x2.sum(-1), y2.sum(-1)
    shared = 6.0 * (a - b).square() + 8.0 * a * b
    p_id = (xc * yc).sum(-1)
    p_anti = (xc * yc_rev).sum(-1)
    q_id = (x2 - y2).square().sum(-1)
    q_anti = (x2 - y2.flip(-1)).square().sum(-1)
    gw_id = (2.0 * n * q_id + shared - 8.0 * p_id.square()) / (n * n)
    gw_anti = (2.0 * n * q_anti + shared - 8.0 * p_anti.square()) / (n * n)
    # ab - p^2 >= 0 exactly; clamp the rounding of near-proportional samples.
    return w_id, w_anti, gw_id.clamp_min(0.0), gw_anti.clamp_min(0.0)


def fgw_1d_rows(
    x: torch.Tensor, y: torch.Tensor, w_weight: float, gw_weight: float
) -> torch.Tensor:
    """min over {identity, anti-identity} of ``w_weight * W + gw_weight * GW`` per row.

    ``x``, ``y``: (..., N), unsorted, no validation (internal building block of the
    sliced discrepancies). ``W`` and ``GW`` are the mean-normalised parts of
    :func:`_fgw_terms_sorted`. Returns shape (...).
    """
    xs = torch.sort(x, dim=-1).values
    ys = torch.sort(y, dim=-1).values
    w_id, w_anti, gw_id, gw_anti = _fgw_terms_sorted(xs, ys)
    return torch.minimum(w_weight * w_id + gw_weight * gw_id, w_weight * w_anti + gw_weight * gw_anti)


def wasserstein_1d_rows(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Squared 2-Wasserstein between uniform 1-D samples per row: mean (sorted x - sorted y)^2."""
    xs = torch.sort(x, dim=-1).values
    ys = torch.sort(y, dim=-1).values
    return (xs - ys).square().mean(-1)


def _rows(t: torch.Tensor) -> torch.Tensor:
    """(N,) -> (N,), (N, L) -> (L, N): put samples on the last dim."""
    return t if t.ndim == 1 else t.T


def _validate_1d_pair(x: torch.Tensor, y: torch.Tensor) -> None:
    check_tensor(x, "x", ndims=(1, 2), min_rows=2)
    check_tensor(y, "y", ndims=(1, 2), min_rows=2)
    check_same(x, y, ("x", "y"))


def fgw_1d(x: torch.Tensor, y: torch.Tensor, beta: float) -> torch.Tensor:
    r"""Exact 1-D fused Gromov-Wasserstein :math:`FG_\beta(x, y)` (see module docstring).

    Args:
        x, y: shape (N,) or (N, L); each column is an independent 1-D problem with
            N uniform samples (same N for x and y, N >= 2).
        beta: weight of the Gromov-Wasserstein part in [0, 1] (POT's ``alpha``).

    Returns:
        Shape () for 1-D input, (L,) for 2-D input; dtype and device of ``x``.
        Differentiable in ``x`` and ``y`` (through the sorted values). Cost
        O(L N log N) time, O(L N) memory.
    """
    _validate_1d_pair(x, y)
    beta = check_unit_interval(beta, "beta")
    return fgw_1d_rows(_rows(x), _rows(y), 1.0 - beta, beta)


def fgw_1d_dense(x: torch.Tensor, y: torch.Tensor, beta: float) -> torch.Tensor:
    r"""The same value as :func:`fgw_1d` by the O(N^2 L) pairwise formulation.

    This is how the RAE authors' code evaluates each slice: build the N x N matrices
    of squared differences for the identity and anti-identity matchings and sum.
    Kept as a reference for tests and for the speed benchmark; do not use it in
    training (memory O(N^2 L)).
    """
    _validate_1d_pair(x, y)
    beta = check_unit_interval(beta, "beta")
    xs = torch.sort(_rows(x), dim=-1).values
    ys = torch.sort(_rows(y), dim=-1).values
    dx = (xs.unsqueeze(-1) - xs.unsqueeze(-2)).square()

    def fused(yy: torch.Tensor) -> torch.Tensor:
        dy = (yy.unsqueeze(-1) - yy.unsqueeze(-2)).square()
        w = (xs - yy).square().mean(-1)
        gw = (dx - dy).square().mean((-2, -1))
        return (1.0 - beta) * w + beta * gw

    return torch.minimum(fused(ys), fused(ys.flip(-1)))
