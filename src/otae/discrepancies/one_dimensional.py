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


# Rows are processed in chunks of about this many elements: the temporaries of one
# chunk stay in cache and below glibc's mmap threshold, so they are reused instead of
# page-faulted in afresh for every (L, N) temporary (measured 2.6x -> see benchmarks at
# N = 1e6). CUDA takes all rows at once (kernel launches, not page faults, dominate).
_CHUNK_ELEMENTS = 1 << 18


def _row_chunks(rows: int, n: int, device: torch.device) -> list[slice]:
    step = rows if device.type == "cuda" else max(1, _CHUNK_ELEMENTS // n)
    return [slice(start, min(start + step, rows)) for start in range(0, rows, step)]


def _fused_values(xs: torch.Tensor, ys: torch.Tensor, w_weight: float, gw_weight: float
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused values of the identity and anti-identity matchings of sorted rows; the
    smaller one and whether it is the anti-identity. xs, ys: (R, N) -> (R,), (R,)."""
    n = xs.shape[-1]
    mean_x, mean_y = xs.mean(-1, keepdim=True), ys.mean(-1, keepdim=True)
    xc, yc = xs - mean_x, ys - mean_y
    shift = (mean_x - mean_y).squeeze(-1).square()
    x2 = xc.square()
    a = x2.sum(-1)
    a_safe = a.clamp_min(torch.finfo(xs.dtype).tiny).unsqueeze(-1)
    candidates = []
    for matched in (yc, yc.flip(-1)):
        # sum (x_i - y_s(i))^2 = sum (xc_i - yc_s(i))^2 + N (mean x - mean y)^2.
        e = xc - matched
        w = torch.linalg.vecdot(e, e) / n + shift
        diff = x2 - matched.square()
        # ab - p^2 = a |y - (p/a) x|^2: the residual of regressing y on x, a sum of
        # squares, so it stays accurate when y is nearly proportional to x.
        p = torch.linalg.vecdot(xc, matched).unsqueeze(-1)
        residual = matched.sub_(p / a_safe * xc)  # both candidates exist already: in place
        relational = (
            2.0 * n * torch.linalg.vecdot(diff, diff) + 6.0 * diff.sum(-1).square()
            + 8.0 * a * torch.linalg.vecdot(residual, residual)
        ) / (n * n)
        candidates.append(w_weight * w + gw_weight * relational)
    anti = candidates[1] < candidates[0]
    return torch.where(anti, candidates[1], candidates[0]), anti


def _fused_grads(xs: torch.Tensor, ys: torch.Tensor, anti: torch.Tensor, grad_out: torch.Tensor,
                 w_weight: float, gw_weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of the chosen matching's value w.r.t. the sorted rows xs, ys (R, N)."""
    n = xs.shape[-1]
    anti = anti.unsqueeze(-1)
    ys = torch.where(anti, ys.flip(-1), ys)  # y in matched order
    mean_x, mean_y = xs.mean(-1, keepdim=True), ys.mean(-1, keepdim=True)
    xc, yc = xs - mean_x, ys - mean_y
    e = xc - yc
    x2, y2 = xc.square(), yc.square()
    diff = x2 - y2
    s = diff.sum(-1, keepdim=True)
    a, b = x2.sum(-1, keepdim=True), y2.sum(-1, keepdim=True)
    a_minus_p = torch.linalg.vecdot(xc, e).unsqueeze(-1)
    b_minus_p = -torch.linalg.vecdot(yc, e).unsqueeze(-1)
    # dR/dxc with R the relational double sum (module docstring); b xc - p yc is
    # written b e + (b - p) yc to avoid cancellation for nearly equal samples.
    diff.mul_(8.0 * n)
    grad_rx = (diff + 24.0 * s) * xc
    grad_rx += 16.0 * (b * e + b_minus_p * yc)
    grad_ry = (diff.neg_() - 24.0 * s) * yc
    grad_ry += 16.0 * (a_minus_p * xc - a * e)
    # Centring is a projection: subtract the mean of each gradient row.
    grad_rx -= grad_rx.mean(-1, keepdim=True)
    grad_ry -= grad_ry.mean(-1, keepdim=True)
    scale = grad_out.unsqueeze(-1)
    grad_w = e.add_(mean_x - mean_y).mul_((2.0 * w_weight / n) * scale)
    rel = (gw_weight / (n * n)) * scale
    grad_xs = grad_rx.mul_(rel).add_(grad_w)
    grad_ys = grad_ry.mul_(rel).sub_(grad_w)
    return grad_xs, torch.where(anti, grad_ys.flip(-1), grad_ys)  # y back to sorted order


class _SortedFGW(torch.autograd.Function):
    """Row-wise 1-D FGW with a hand-written O(N) backward.

    Autograd through the expanded formula keeps about a dozen (L, N) temporaries
    alive and replays each; here the forward saves only the sorted values and the
    sort indices, and the backward evaluates the closed-form gradient of the chosen
    matching, chunk of rows by chunk of rows. This is what keeps a slice within a
    small factor of its sort (benchmarks/discrepancies.py). First-order only.
    """

    @staticmethod
    def forward(ctx, x, y, w_weight: float, gw_weight: float):  # noqa: D102
        ctx.input_shape, shape = x.shape, x.shape[:-1]
        x, y = x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1])
        xs, ix = torch.sort(x, dim=-1)
        ys, iy = torch.sort(y, dim=-1)
        values = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
        anti = torch.empty(x.shape[0], dtype=torch.bool, device=x.device)
        for rows in _row_chunks(*x.shape, x.device):
            values[rows], anti[rows] = _fused_values(xs[rows], ys[rows], w_weight, gw_weight)
        ctx.save_for_backward(xs, ys, ix, iy, anti)
        ctx.weights = (w_weight, gw_weight)
        return values.reshape(shape)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):  # noqa: D102
        xs, ys, ix, iy, anti = ctx.saved_tensors
        grad_out = grad_out.reshape(-1)
        grad_x, grad_y = torch.empty_like(xs), torch.empty_like(ys)
        for rows in _row_chunks(*xs.shape, xs.device):
            gxs, gys = _fused_grads(xs[rows], ys[rows], anti[rows], grad_out[rows], *ctx.weights)
            grad_x[rows].scatter_(-1, ix[rows], gxs)
            grad_y[rows].scatter_(-1, iy[rows], gys)
        return grad_x.reshape(ctx.input_shape), grad_y.reshape(ctx.input_shape), None, None


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
