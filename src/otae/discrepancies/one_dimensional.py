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

a sum of three non-negative terms. The last is evaluated as
:math:`a \sum_i (\bar y_{\sigma(i)} - (p/a) \bar x_i)^2` (Lagrange's identity as a
regression residual) and :math:`a - b` as :math:`\sum_i (\bar x_i^2 - \bar y_{\sigma(i)}^2)`,
so no large quantities cancel: float32 stays accurate for large offsets and spreads
and for nearly identical samples.

Shapes: the row functions work on ``(..., N)`` tensors (samples on the last dim,
where sorting is contiguous); the public :func:`fgw_1d` takes the POT-style
``(N,)`` / ``(N, L)`` layout.
"""

from __future__ import annotations

import torch

from ._validation import check_same, check_tensor, check_unit_interval

__all__ = ["fgw_1d", "fgw_1d_dense", "fgw_1d_rows", "wasserstein_1d_rows"]


class _SortedFGW(torch.autograd.Function):
    """Row-wise 1-D FGW with a hand-written O(N) backward.

    Autograd through the expanded formula keeps about a dozen (L, N) temporaries
    alive and replays each; here the forward saves only the sorted values and the
    sort indices, and the backward evaluates the closed-form gradient of the chosen
    matching. This is what keeps a slice within a small factor of its sort
    (benchmarks/discrepancies.py). First-order only (no double backward).
    """

    @staticmethod
    def forward(ctx, x, y, w_weight: float, gw_weight: float):  # noqa: D102
        xs, ix = torch.sort(x, dim=-1)
        ys, iy = torch.sort(y, dim=-1)
        n = xs.shape[-1]
        mean_x, mean_y = xs.mean(-1, keepdim=True), ys.mean(-1, keepdim=True)
        xc, yc = xs - mean_x, ys - mean_y
        shift = (mean_x - mean_y).squeeze(-1).square()
        x2 = xc.square()
        a = x2.sum(-1)
        candidates = []
        for matched in (yc, yc.flip(-1)):
            # sum (x_i - y_s(i))^2 = sum (xc_i - yc_s(i))^2 + N (mean x - mean y)^2.
            w = (xc - matched).square_().sum(-1) / n + shift
            diff = x2 - matched.square()
            # ab - p^2 = a |y - (p/a) x|^2: the residual of regressing y on x, a sum of
            # squares, so it stays accurate when y is nearly proportional to x.
            p = (xc * matched).sum(-1, keepdim=True)
            residual = matched.sub_(p / a.clamp_min(torch.finfo(x.dtype).tiny).unsqueeze(-1) * xc)
            relational = (
                2.0 * n * diff.square().sum(-1) + 6.0 * diff.sum(-1).square()
                + 8.0 * a * residual.square().sum(-1)
            ) / (n * n)
            candidates.append(w_weight * w + gw_weight * relational)
        anti = candidates[1] < candidates[0]
        ctx.save_for_backward(xs, ys, ix, iy, anti)
        ctx.weights = (w_weight, gw_weight)
        return torch.where(anti, candidates[1], candidates[0])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):  # noqa: D102
        xs, ys, ix, iy, anti = ctx.saved_tensors
        w_weight, gw_weight = ctx.weights
        n = xs.shape[-1]
        anti = anti.unsqueeze(-1)
        ys = torch.where(anti, ys.flip(-1), ys)  # y in matched order
        mean_x, mean_y = xs.mean(-1, keepdim=True), ys.mean(-1, keepdim=True)
        xc, yc = xs - mean_x, ys - mean_y
        e = xc - yc
        diff = xc.square() - yc.square()
        s = diff.sum(-1, keepdim=True)
        a, b = xc.square().sum(-1, keepdim=True), yc.square().sum(-1, keepdim=True)
        a_minus_p, b_minus_p = (xc * e).sum(-1, keepdim=True), -(yc * e).sum(-1, keepdim=True)
        # dR/dxc with R the relational double sum (module docstring); b xc - p yc is
        # written b e + (b - p) yc to avoid cancellation for nearly equal samples.
        grad_rx = 8.0 * n * diff * xc + 24.0 * s * xc + 16.0 * (b * e + b_minus_p * yc)
        grad_ry = -8.0 * n * diff * yc - 24.0 * s * yc + 16.0 * (a_minus_p * xc - a * e)
        # Centring is a projection: subtract the mean of each gradient row.
        grad_rx -= grad_rx.mean(-1, keepdim=True)
        grad_ry -= grad_ry.mean(-1, keepdim=True)
        grad_w = (2.0 * w_weight / n) * (e + (mean_x - mean_y))
        scale = grad_out.unsqueeze(-1)
        rel = gw_weight / (n * n)
        grad_xs = (grad_w + rel * grad_rx) * scale
        grad_ys = (rel * grad_ry - grad_w) * scale
        grad_ys = torch.where(anti, grad_ys.flip(-1), grad_ys)  # back to sorted order
        grad_x = torch.empty_like(grad_xs).scatter_(-1, ix, grad_xs)
        grad_y = torch.empty_like(grad_ys).scatter_(-1, iy, grad_ys)
        return grad_x, grad_y, None, None


def fgw_1d_rows(
    x: torch.Tensor, y: torch.Tensor, w_weight: float, gw_weight: float
) -> torch.Tensor:
    """min over {identity, anti-identity} of ``w_weight * W + gw_weight * GW`` per row.

    ``x``, ``y``: (..., N), unsorted, no validation (internal building block of the
    sliced discrepancies). ``W = mean_i (x_i - y_s(i))^2`` and
    ``GW = mean_ij ((x_i - x_j)^2 - (y_s(i) - y_s(j))^2)^2``. Returns shape (...).
    """
    return _SortedFGW.apply(x, y, float(w_weight), float(gw_weight))


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
