r"""Fused Gromov-Wasserstein between two 1-D empirical measures (uniform or weighted).

For samples :math:`x, y \in \mathbb{R}^N` and a permutation :math:`\sigma`,

.. math::

    FG_\beta(x, y; \sigma) = \frac{1-\beta}{N} \sum_i (x_i - y_{\sigma(i)})^2
      + \frac{\beta}{N^2} \sum_{i,j} \big((x_i - x_j)^2 - (y_{\sigma(i)} - y_{\sigma(j)})^2\big)^2,

and :math:`FG_\beta(x, y) = \min_\sigma FG_\beta(x, y; \sigma)`. Theorem 3.4 of
Xu et al. (ICML 2020), after Vayer et al.'s sliced GW (2019), states that once both
samples are sorted the minimum is attained by the identity or by the anti-identity
matching, so only those two candidates are evaluated (as in the paper and its code).
Beinert, Heiss and Steidl (SIAM J. Imaging Sci., 2023) later gave counterexamples to
that statement for the GW part, so in general the value computed here is the smaller
of the two candidates' values: an upper bound of the 1-D FGW, equal to it for
``beta = 0`` and in every brute-force check over all N! permutations in our tests.

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
where sorting is contiguous), or on ``(..., 2, N)`` pairs of x and y stacked (one sort
and one scatter for both); the public :func:`fgw_1d` takes the POT-style
``(N,)`` / ``(N, L)`` layout. The identity and anti-identity candidates are evaluated
together along a stacked dim, so a call costs a fixed, small number of operations (no
Python loop over candidates or, at training sizes, over chunks of rows).

Weighted samples, N != M. For weights :math:`a` of :math:`x \in \mathbb{R}^N` and
:math:`b` of :math:`y \in \mathbb{R}^M` (nonnegative, each summing to 1), the optimal
W2 coupling in 1-D is the monotone (north-west corner) coupling of the sorted points:
merging the cumulative weights :math:`A_i = \sum_{i' \le i} a_{(i')}` and
:math:`B_j` into one sorted sequence :math:`0 = t_0 \le t_1 \le \dots \le t_{N+M}`
gives the atoms :math:`(x_{(i_k)}, y_{(j_k)}, w_k = t_k - t_{k-1})`, where
:math:`i_k` (:math:`j_k`) is the first index with :math:`A_i > t_{k-1}`
(:math:`B_j > t_{k-1}`): at most N + M - 1 atoms of positive weight, found by one sort,
two cumulative sums and two ``searchsorted``. The anti-monotone coupling is the same
construction with y sorted in decreasing order. For a coupling given as atoms
:math:`(x_k, y_k, w_k)` with :math:`s = \sum_k w_k` (1 up to rounding) the fused value
is the uniform formula with pair weights :math:`w_k`,

.. math::

    (1-\beta) \sum_k w_k (x_k - y_k)^2
      + \beta \sum_{k,l} w_k w_l \big((x_k - x_l)^2 - (y_k - y_l)^2\big)^2,

the dense FGW objective :math:`\sum_{ijkl} (\ldots)^2 P_{ij} P_{kl}` of the plan P the
atoms describe. Centring by the weighted means and writing :math:`A = \sum w_k \bar x_k^2`,
:math:`B = \sum w_k \bar y_k^2`, :math:`P = \sum w_k \bar x_k \bar y_k`,
:math:`u_k = \bar x_k^2 - \bar y_k^2`, the double sum is

.. math::

    2 s \sum_k w_k u_k^2 + 6 \Big(\sum_k w_k u_k\Big)^2
      + 8 A \sum_k w_k \big(\bar y_k - (P/A) \bar x_k\big)^2,

the uniform identity with :math:`w_k = 1/N` (so the same cancellation-free
arrangement), in O(N + M) after the sorts: O((N + M) log(N + M)) per row, no (N, M)
matrix, vectorised over rows, no host synchronisation. The W part of the monotone
coupling is the exact squared W2 of the weighted measures. For the fused value, the
smaller of the two couplings' values is an UPPER BOUND of the 1-D FGW between weighted
measures: Theorem 3.4 of Xu et al. covers equal sizes and uniform weights only, and an
optimal GW coupling of weighted 1-D measures need not be monotone or anti-monotone.
The weighted path differentiates by autograd, in x, y AND in the weights (through the
atom weights :math:`w_k`, i.e. the sorted cumulative sums; the atom indices are
piecewise constant, so the gradient in a, b is that of the piece, defined almost
everywhere). Only changes of a, b along the simplex (keeping each sum) are meaningful:
the transported mass is the smaller of the two totals, a kink when they are equal,
so the gradient in a (b) is defined up to a constant added to all its entries
(parametrise the weights as ``softmax`` or ``v / v.sum()`` to optimise them).
Uniform weights given explicitly reproduce the unweighted values up to rounding (a
different order of operations).
"""

from __future__ import annotations

import torch

from ..checks import (
    check_same,
    check_same_except_rows,
    check_tensor,
    check_unit_interval,
    check_weights,
    weights_or_uniform,
)
from ..constants import device_constant

__all__ = ["fgw_1d", "fgw_1d_dense", "fgw_1d_pair_rows", "fgw_1d_rows", "wasserstein_1d_rows"]


# Rows are processed in chunks of about this many elements: the temporaries of one
# chunk stay in cache and below glibc's mmap threshold, so they are reused instead of
# page-faulted in afresh for every (L, N) temporary (measured 2.6x -> see benchmarks at
# N = 1e6). CUDA takes all rows at once (kernel launches, not page faults, dominate),
# and so does the CPU whenever rows * N is below it (training sizes): one pass, no loop.
_CHUNK_ELEMENTS = 1 << 18


def _row_chunks(rows: int, n: int, device: torch.device) -> list[slice]:
    step = rows if device.type == "cuda" else max(1, _CHUNK_ELEMENTS // n)
    return [slice(start, min(start + step, rows)) for start in range(0, rows, step)]


def _signs(*, dtype, device) -> torch.Tensor:
    """(2, 1) ``[+1, -1]``: the sign of x and of y in x - y, along the stacked dim."""
    return torch.tensor([[1.0], [-1.0]], dtype=dtype, device=device)


def _fused_values(xs: torch.Tensor, ys: torch.Tensor, w_weight: float, gw_weight: float
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused values of the identity and anti-identity matchings of sorted rows; the
    smaller one and whether it is the anti-identity. xs, ys: (R, N) -> (R,), (R,).

    Both matchings are evaluated at once along a stacked dim of size 2, and the three
    sums of squares of each in one reduction: a fixed, small number of operations.
    """
    n = xs.shape[-1]
    mean_x, mean_y = xs.mean(-1, keepdim=True), ys.mean(-1, keepdim=True)
    matched = torch.stack((ys, ys.flip(-1)), -2)  # (R, 2, N): y in each matching's order
    # W part on the raw differences: sum (x_i - y_s(i))^2, no cancellation.
    e = xs.unsqueeze(-2) - matched
    xc, yc = (xs - mean_x).unsqueeze(-2), matched - mean_y.unsqueeze(-1)
    x2 = xc.square()
    a = x2.sum(-1)  # (R, 1)
    diff = x2 - yc.square()
    # ab - p^2 = a |y - (p/a) x|^2: the residual of regressing y on x, a sum of
    # squares, so it stays accurate when y is nearly proportional to x.
    p = torch.linalg.vecdot(yc, xc)
    residual = torch.addcmul(yc, (p / a.clamp_min(torch.finfo(xs.dtype).tiny)).unsqueeze(-1), xc,
                             value=-1.0)
    sums = torch.stack((e, diff, residual), -2).square().sum(-1)  # (R, 2, 3)
    sum_e, sum_diff2, sum_residual = sums.unbind(-1)
    # sum_i diff_i = a - b is the same for both matchings.
    a_minus_b = diff[..., 0, :].sum(-1, keepdim=True)
    rel = gw_weight / (n * n)
    candidates = sum_e * (w_weight / n)
    candidates = candidates.add(sum_diff2, alpha=2.0 * n * rel)
    candidates = candidates.add(a * sum_residual, alpha=8.0 * rel)
    candidates = candidates.add(a_minus_b.square(), alpha=6.0 * rel)
    values, which = candidates.min(-1)  # ties: the identity (the first minimum)
    return values, which.bool()


def _pair_grads(xs: torch.Tensor, ys: torch.Tensor, anti: torch.Tensor, grad_out: torch.Tensor,
                w_weight: float, gw_weight: float) -> torch.Tensor:
    """(R, 2, N) gradients of the chosen matching's value w.r.t. the sorted rows
    ``[xs; ys]`` (R, N) each, scaled by ``grad_out`` (R,), stacked along dim -2.

    With the centred rows ``u = [x; y]`` (y in matched order), ``e = x - y``,
    ``h = 8N diff + 24 (a - b)`` and ``q_k = u_k . e``, the gradient of the relational
    double sum R (module docstring) is, for x and y,

        dR/dx = h x + 16 (b e - q_y y),    dR/dy = -(h y + 16 (a e - q_x x)),

    the written-out ``b x - p y`` and ``a y - p x`` rearranged so that nothing cancels
    for nearly equal samples; both are one expression along the stacked dim, with
    ``[b, a]`` and ``[q_y y, q_x x]`` the stacked quantities flipped. Centring is a
    projection: each row's mean is subtracted.
    """
    n = xs.shape[-1]
    anti = anti.unsqueeze(-1)
    u = torch.stack((xs, torch.where(anti, ys.flip(-1), ys)), -2)
    e = u[..., 0, :] - u[..., 1, :]
    uc = u - u.mean(-1, keepdim=True)
    sq = uc.square()
    norms = sq.sum(-1, keepdim=True)  # (R, 2, 1): [a, b]
    diff = sq[..., 0, :] - sq[..., 1, :]
    h = diff.unsqueeze(-2).mul(8.0 * n).add(norms[..., 0:1, :] - norms[..., 1:2, :], alpha=24.0)
    e_c = (uc[..., 0, :] - uc[..., 1, :]).unsqueeze(-2)
    q = torch.linalg.vecdot(uc, e_c).unsqueeze(-1)
    grad = (h * uc).add_(norms.flip(-2) * e_c, alpha=16.0).sub_((q * uc).flip(-2), alpha=16.0)
    grad -= grad.mean(-1, keepdim=True)
    signs = device_constant(_signs, dtype=xs.dtype, device=xs.device)
    grad = grad.mul_(gw_weight / (n * n)).add_(e.unsqueeze(-2), alpha=2.0 * w_weight / n)
    grad = grad.mul_(signs * grad_out[..., None, None])
    grad_y = grad[..., 1, :]
    grad_y.copy_(torch.where(anti, grad_y.flip(-1), grad_y))  # y back to sorted order
    return grad


class _SortedFGW(torch.autograd.Function):
    """Row-wise 1-D FGW with a hand-written O(N) backward.

    ``apply(x, y, w_weight, gw_weight)`` with x, y (..., N); or ``apply(pair, None, ...)``
    with ``pair`` (..., 2, N) holding x and y stacked (one sort, one scatter, no stack
    copy: the layout :func:`otae.discrepancies.sliced.sliced_fgw` projects to).

    Autograd through the expanded formula keeps about a dozen (L, N) temporaries
    alive and replays each; here the forward saves only the sorted values and the
    sort indices, and the backward evaluates the closed-form gradient of the chosen
    matching, in one pass over all rows when they are few (a fixed number of operations)
    or chunk of rows by chunk of rows (memory, see :func:`_row_chunks`). This is what
    keeps a slice within a small factor of its sort (benchmarks/discrepancies.py).
    First-order only.
    """

    @staticmethod
    def forward(ctx, x, y, w_weight: float, gw_weight: float):  # noqa: D102
        ctx.separate = y is not None
        pair = torch.stack((x, y), -2) if ctx.separate else x
        ctx.input_shape, shape = pair.shape, pair.shape[:-2]
        pair = pair.reshape(-1, *pair.shape[-2:])
        sorted_pair, order = torch.sort(pair, dim=-1)
        xs, ys = sorted_pair.unbind(-2)
        chunks = _row_chunks(*xs.shape, x.device)
        if len(chunks) == 1:
            values, anti = _fused_values(xs, ys, w_weight, gw_weight)
        else:
            values = torch.empty(xs.shape[0], dtype=x.dtype, device=x.device)
            anti = torch.empty(xs.shape[0], dtype=torch.bool, device=x.device)
            for rows in chunks:
                values[rows], anti[rows] = _fused_values(xs[rows], ys[rows], w_weight, gw_weight)
        ctx.save_for_backward(sorted_pair, order, anti)
        ctx.weights = (w_weight, gw_weight)
        return values.reshape(shape)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):  # noqa: D102
        sorted_pair, order, anti = ctx.saved_tensors
        xs, ys = sorted_pair.unbind(-2)
        grad_out = grad_out.reshape(-1)
        grad = torch.empty_like(sorted_pair)
        chunks = _row_chunks(*xs.shape, xs.device)
        if len(chunks) == 1:
            grad.scatter_(-1, order, _pair_grads(xs, ys, anti, grad_out, *ctx.weights))
        else:
            for rows in chunks:
                grad[rows].scatter_(-1, order[rows], _pair_grads(
                    xs[rows], ys[rows], anti[rows], grad_out[rows], *ctx.weights))
        grad = grad.reshape(ctx.input_shape)
        if ctx.separate:
            return grad[..., 0, :], grad[..., 1, :], None, None
        return grad, None, None, None


def _sorted_with_weights(v: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ``v`` (..., N) sorted, and the weights ``w`` ((N,) or (..., N)) in that order."""
    values, order = torch.sort(v, dim=-1)
    return values, w.expand_as(v).gather(-1, order)


def _monotone_atoms(xs: torch.Tensor, wx: torch.Tensor, ys: torch.Tensor, wy: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Atoms (x_k, y_k, w_k), each (..., N + M), of the coupling that matches ``xs``
    (..., N) and ``ys`` (..., M) in their given order (the north-west corner rule; see
    the module docstring), with ``wx``, ``wy`` the weights in that order.

    ``t_{k-1}`` is an exact copy of some cumulative weight, so ``searchsorted(...,
    right=True)`` steps past a point exactly when its mass is used up. The two totals
    differ by rounding (~1e-16); the ends are capped at the smaller one so that excess is
    not transported (it would pair the last points, of any weight, even 0, at a tiny but
    nonzero mass), and the index clamps keep the resulting zero-mass atoms in range.
    """
    cx, cy = wx.cumsum(-1), wy.cumsum(-1)
    total = torch.minimum(cx[..., -1:], cy[..., -1:])
    ends = torch.minimum(torch.cat((cx, cy), -1).sort(-1).values, total)
    starts = torch.cat((torch.zeros_like(ends[..., :1]), ends[..., :-1]), -1)
    key = starts.detach()
    i = torch.searchsorted(cx.detach(), key, right=True).clamp_max_(xs.shape[-1] - 1)
    j = torch.searchsorted(cy.detach(), key, right=True).clamp_max_(ys.shape[-1] - 1)
    return xs.gather(-1, i), ys.gather(-1, j), ends - starts


def _weighted_fused(xk: torch.Tensor, yk: torch.Tensor, wk: torch.Tensor, w_weight: float,
                    gw_weight: float) -> torch.Tensor:
    """Fused value of couplings given as atoms (..., K) (module docstring): shape (...)."""
    total = wk.sum(-1, keepdim=True)
    w_part = torch.linalg.vecdot(wk, (xk - yk).square())
    if gw_weight == 0.0:
        return w_part * w_weight
    xc = xk - torch.linalg.vecdot(wk, xk).unsqueeze(-1) / total
    yc = yk - torch.linalg.vecdot(wk, yk).unsqueeze(-1) / total
    x2 = xc.square()
    a = torch.linalg.vecdot(wk, x2)
    u = x2 - yc.square()
    p = torch.linalg.vecdot(wk, xc * yc)
    residual = yc - (p / a.clamp_min(torch.finfo(xk.dtype).tiny)).unsqueeze(-1) * xc
    gw = (2.0 * total.squeeze(-1) * torch.linalg.vecdot(wk, u.square())
          + 6.0 * torch.linalg.vecdot(wk, u).square()
          + 8.0 * a * torch.linalg.vecdot(wk, residual.square()))
    return w_part * w_weight + gw * gw_weight


def _weighted_fgw_rows(x: torch.Tensor, y: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
                       w_weight: float, gw_weight: float) -> torch.Tensor:
    """min over the monotone and anti-monotone couplings of the weighted fused value."""
    xs, wx = _sorted_with_weights(x, a)
    ys, wy = _sorted_with_weights(y, b)
    # Both couplings along a stacked dim -2: y ascending, then y descending.
    ys2, wy2 = torch.stack((ys, ys.flip(-1)), -2), torch.stack((wy, wy.flip(-1)), -2)
    shape = (*ys2.shape[:-1], -1)
    atoms = _monotone_atoms(xs.unsqueeze(-2).expand(shape), wx.unsqueeze(-2).expand(shape),
                            ys2, wy2)
    # ties: the monotone coupling (the first minimum), as in the uniform path
    return _weighted_fused(*atoms, w_weight, gw_weight).min(-1).values


def _uniform_pair(x: torch.Tensor, y: torch.Tensor, a, b) -> bool:
    """Whether the unweighted, equal-size path applies (samples on the last dim)."""
    return a is None and b is None and x.shape[-1] == y.shape[-1]


def fgw_1d_rows(
    x: torch.Tensor, y: torch.Tensor, w_weight: float, gw_weight: float, *,
    a: torch.Tensor | None = None, b: torch.Tensor | None = None,
) -> torch.Tensor:
    """min over {identity, anti-identity} of ``w_weight * W + gw_weight * GW`` per row.

    ``x``, ``y``: (..., N), unsorted, no validation (internal building block of the
    sliced discrepancies). ``W = mean_i (x_i - y_s(i))^2`` and
    ``GW = mean_ij ((x_i - x_j)^2 - (y_s(i) - y_s(j))^2)^2``. Returns shape (...).

    With weights ``a`` (N,), ``b`` (M,) (None: uniform) or ``y`` of another size
    (..., M), the monotone and anti-monotone couplings of the weighted measures
    replace the two matchings and the means become weighted sums (module docstring).
    """
    if _uniform_pair(x, y, a, b):
        return _SortedFGW.apply(x, y, float(w_weight), float(gw_weight))
    return _weighted_fgw_rows(x, y, weights_or_uniform(a, x.shape[-1], x),
                              weights_or_uniform(b, y.shape[-1], y),
                              float(w_weight), float(gw_weight))


def fgw_1d_pair_rows(pair: torch.Tensor, w_weight: float, gw_weight: float) -> torch.Tensor:
    """:func:`fgw_1d_rows` of ``x = pair[..., 0, :]`` and ``y = pair[..., 1, :]``, the two
    samples stacked along dim -2 (``pair``: (..., 2, N)); one sort for both. Shape (...)."""
    return _SortedFGW.apply(pair, None, float(w_weight), float(gw_weight))


def wasserstein_1d_rows(x: torch.Tensor, y: torch.Tensor | None = None, *,
                        a: torch.Tensor | None = None, b: torch.Tensor | None = None
                        ) -> torch.Tensor:
    """Squared 2-Wasserstein between uniform 1-D samples per row: mean (sorted x - sorted y)^2.

    ``y=None``: ``x`` is a (..., 2, N) pair of stacked samples (one sort for both).
    With weights ``a`` (N,), ``b`` (M,) (None: uniform) or ``y`` (..., M) of another
    size: ``sum_k w_k (x_k - y_k)^2`` over the atoms of the monotone coupling (module
    docstring), the exact squared W2 of the weighted measures.
    """
    if y is not None and not _uniform_pair(x, y, a, b):
        xs, wx = _sorted_with_weights(x, weights_or_uniform(a, x.shape[-1], x))
        ys, wy = _sorted_with_weights(y, weights_or_uniform(b, y.shape[-1], y))
        return _weighted_fused(*_monotone_atoms(xs, wx, ys, wy), 1.0, 0.0)
    pair = x if y is None else torch.stack((x, y), -2)
    xs, ys = torch.sort(pair, dim=-1).values.unbind(-2)
    return (xs - ys).square().mean(-1)


def _rows(t: torch.Tensor) -> torch.Tensor:
    """(N,) -> (N,), (N, L) -> (L, N): put samples on the last dim."""
    return t if t.ndim == 1 else t.T


def _validate_1d_pair(x: torch.Tensor, y: torch.Tensor, a=None, b=None,
                      same_size: bool = False) -> None:
    check_tensor(x, "x", ndims=(1, 2), min_rows=2)
    check_tensor(y, "y", ndims=(1, 2), min_rows=2)
    if same_size:
        check_same(x, y, ("x", "y"))
    check_same_except_rows(x, y, ("x", "y"))
    check_weights(a, "a", x, "x")
    check_weights(b, "b", y, "y")


def fgw_1d(x: torch.Tensor, y: torch.Tensor, beta: float, *, a: torch.Tensor | None = None,
           b: torch.Tensor | None = None) -> torch.Tensor:
    r"""Exact 1-D fused Gromov-Wasserstein :math:`FG_\beta(x, y)` (see module docstring).

    Args:
        x: shape (N,) or (N, L); each column is an independent 1-D problem, N >= 2.
        y: shape (M,) or (M, L), M >= 2; M may differ from N.
        beta: weight of the Gromov-Wasserstein part in [0, 1] (POT's ``alpha``).
        a, b: weights of the N points of x and the M points of y, shared by all
            columns: 1-D, nonnegative, each summing to 1 (checked, unless
            :func:`input_checks` is off); None means uniform 1/N, 1/M.

    Returns:
        Shape () for 1-D input, (L,) for 2-D input; dtype and device of ``x``.
        Differentiable in ``x`` and ``y`` (through the sorted values). Cost
        O(L N log N) time, O(L N) memory. With weights or N != M: the smaller value
        of the monotone and anti-monotone couplings (an upper bound of the weighted
        1-D FGW, exact for beta = 0; module docstring), in O(L (N+M) log(N+M)),
        differentiable in a and b too.
    """
    _validate_1d_pair(x, y, a, b)
    beta = check_unit_interval(beta, "beta")
    return fgw_1d_rows(_rows(x), _rows(y), 1.0 - beta, beta, a=a, b=b)


def fgw_1d_dense(x: torch.Tensor, y: torch.Tensor, beta: float) -> torch.Tensor:
    r"""The same value as :func:`fgw_1d` (uniform weights, same N) by the O(N^2 L)
    pairwise formulation.

    This is how the RAE authors' code evaluates each slice: build the N x N matrices
    of squared differences for the identity and anti-identity matchings and sum.
    Kept as a reference for tests and for the speed benchmark; do not use it in
    training (memory O(N^2 L)).
    """
    _validate_1d_pair(x, y, same_size=True)
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
