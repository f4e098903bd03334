r"""Maximum mean discrepancy (MMD) between point clouds, the WAE regulariser.

For samples :math:`x_1..x_N` of :math:`\mu` and :math:`y_1..y_M` of :math:`\nu` in
:math:`\mathbb{R}^d` and a kernel :math:`k`, the estimate of :math:`MMD_k^2(\mu, \nu)`
is the U-statistic within each set and the V-statistic across sets
(Tolstikhin et al. 2018, WAE, Algorithm 2):

.. math::

    \widehat{MMD}^2 = \frac{1}{N(N-1)} \sum_{i \ne j} k(x_i, x_j)
        + \frac{1}{M(M-1)} \sum_{i \ne j} k(y_i, y_j)
        - \frac{2}{NM} \sum_{i, j} k(x_i, y_j).

It is unbiased, so it can be negative, and ``mmd(x, x)`` is NOT zero: only its
expectation vanishes when both samples come from the same law.

Kernels, with :math:`C = 2 d \sigma^2 s` for the prior variance :math:`\sigma^2`
(``scale``) and each multiplier :math:`s` of ``scales``:

- ``"imq"`` (inverse multiquadratic): :math:`k(a, b) = C / (C + \|a - b\|^2)`;
- ``"gaussian"``: :math:`k(a, b) = \exp(-\|a - b\|^2 / C)`.

With several multipliers the kernel is the sum over them (a sum of positive-definite
kernels is one), which is how the WAE authors' code makes the IMQ kernel less
sensitive to the choice of C: it sums over ``s in (0.1, 0.2, 0.5, 1, 2, 5, 10)``
(:data:`WAE_SCALES`). The WAE paper states C = 2 d sigma^2 with sigma^2 = 1, our
default ``scales=(1.0,)``.

Pairwise squared distances of the stacked clouds :math:`[x; y]` come from one Gram
matrix (O((N + M)^2) memory, no (N, M, d) intermediate), the scales broadcast along a
leading dim, and the estimator is one weighted sum of the kernel matrix: a call costs
O((N + M)^2 (d + S)) time for S scales and a fixed handful of operations.

Weighted samples: with weights :math:`a` of the x points and :math:`b` of the y points
(nonnegative, each summing to 1) the estimate keeps the same structure, each mean
replaced by a weighted mean:

.. math::

    \widehat{MMD}^2_{a,b} = \frac{\sum_{i \ne j} a_i a_j k(x_i, x_j)}{1 - \sum_i a_i^2}
        + \frac{\sum_{i \ne j} b_i b_j k(y_i, y_j)}{1 - \sum_i b_i^2}
        - 2 \sum_{i, j} a_i b_j k(x_i, y_j),

the within-set terms being weighted means over the distinct pairs (their weights
:math:`a_i a_j` sum to :math:`1 - \sum a_i^2`). Uniform weights give back the unweighted
estimator above (up to rounding), so passing ``a = 1/N`` changes nothing. This is NOT
the V-statistic :math:`a^\top K_{xx} a + b^\top K_{yy} b - 2 a^\top K_{xy} b`, the
squared MMD between the two weighted discrete measures themselves (GeomLoss's kernel
losses), which keeps the diagonal terms :math:`a_i^2 k(x_i, x_i)`: the two differ by
:math:`\sum_i a_i^2 (k(x_i, x_i) - \text{within}_x) + \ldots`, O(1/N) for uniform
weights. A weight vector with a single positive entry has no distinct pairs and is
rejected (under :func:`input_checks` ``(False)`` its within-set term is 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from ..checks import (
    check_choice,
    check_positive,
    check_same,
    check_tensor,
    check_weights,
    weights_or_uniform,
)
from ..constants import device_constant
from ._pairwise import pairwise_sqeuclidean as squared_distances

__all__ = ["mmd", "squared_distances", "WAE_SCALES", "KERNELS"]

Kernel = Literal["imq", "gaussian"]
KERNELS = ("imq", "gaussian")
#: The multipliers of C summed over by the WAE authors' MMD penalty.
WAE_SCALES = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


def _kernel_constants(kernel: str, cs: tuple[float, ...], *, dtype, device) -> torch.Tensor:
    """(S, 1, 1) per-scale constants: C for the IMQ kernel, -1/C for the Gaussian one."""
    values = cs if kernel == "imq" else tuple(-1.0 / c for c in cs)
    return torch.tensor(values, dtype=dtype, device=device).reshape(-1, 1, 1)


def _kernel_sum(sq: torch.Tensor, kernel: str, cs: Sequence[float]) -> torch.Tensor:
    """Sum over the constants ``cs`` of the kernel evaluated on squared distances ``sq``.

    The scales broadcast along a leading dim (a few operations whatever their number).
    """
    c = device_constant(_kernel_constants, kernel, tuple(cs), dtype=sq.dtype, device=sq.device)
    k = c / (c + sq) if kernel == "imq" else torch.exp(c * sq)
    return k.sum(0)


def _estimator_weights(n: int, m: int, *, dtype, device) -> torch.Tensor:
    """(N+M, N+M) weights w with sum(w * K) the estimator for the kernel matrix K of [x; y]:
    1/(N(N-1)) and 1/(M(M-1)) off the diagonal of the within-set blocks, 0 on it (the
    U-statistic), -1/(NM) on both cross blocks (K is symmetric: twice the xy mean)."""
    w = torch.full((n + m, n + m), -1.0 / (n * m), dtype=dtype, device=device)
    w[:n, :n] = 1.0 / (n * (n - 1))
    w[n:, n:] = 1.0 / (m * (m - 1))
    return w.fill_diagonal_(0.0)


def _within(k: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """sum_{i != j} w_i w_j k_ij / sum_{i != j} w_i w_j for a square kernel block ``k``."""
    w2 = w.square()
    pairs = w @ k @ w - torch.dot(w2, k.diagonal())
    norm = w.sum().square() - w2.sum()
    return pairs / norm.clamp_min(torch.finfo(k.dtype).tiny)


def _weighted_estimate(k: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The weighted estimator (module docstring) from the kernel matrix of [x; y]."""
    n = a.shape[0]
    return _within(k[:n, :n], a) + _within(k[n:, n:], b) - 2.0 * (a @ k[:n, n:] @ b)


def mmd(
    x: torch.Tensor,
    y: torch.Tensor,
    kernel: Kernel = "imq",
    scale: float | None = None,
    scales: Sequence[float] = (1.0,),
    *,
    a: torch.Tensor | None = None,
    b: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Unbiased squared MMD between two point clouds (see module docstring).

    Args:
        x: (N, d) samples of the first measure (e.g. codes), N >= 2.
        y: (M, d) samples of the second measure (e.g. prior samples), M >= 2; M may
            differ from N.
        kernel: ``"imq"`` (WAE's choice) or ``"gaussian"``.
        scale: :math:`\sigma^2`, the variance of the isotropic Gaussian prior the
            kernel width is tied to; ``None`` means 1 (WAE). The base constant is
            ``C = 2 * d * scale``.
        scales: multipliers s of C; the kernel is summed over ``C * s`` for each s.
            ``(1.0,)`` by default; :data:`WAE_SCALES` reproduces the WAE code.
        a, b: weights of the N points of x and the M points of y (1-D, nonnegative,
            each summing to 1, at least two positive; checked unless
            :func:`input_checks` is off); None means uniform. Either given: the
            weighted estimator of the module docstring.

    Returns:
        A scalar tensor in the dtype and device of ``x``, differentiable in ``x``
        and ``y`` (and in ``a``, ``b`` when given).
    """
    check_tensor(x, "x", ndims=(2,), min_rows=2)
    check_tensor(y, "y", ndims=(2,), min_rows=2)
    check_same(x, y, ("x", "y"), shape=False, dims=(1,))
    check_choice(kernel, "kernel", KERNELS)
    sigma2 = 1.0 if scale is None else check_positive(scale, "scale")
    if isinstance(scales, (str, bytes)) or not isinstance(scales, Sequence) or not scales:
        raise ValueError(f"scales must be a non-empty sequence of positive floats, got {scales!r}")
    base = 2.0 * x.shape[1] * sigma2
    cs = [base * check_positive(s, "scales") for s in scales]
    check_weights(a, "a", x, "x", min_positive=2)
    check_weights(b, "b", y, "y", min_positive=2)

    # One kernel matrix of the stacked clouds holds the three blocks; the estimator is
    # its weighted sum (the weights drop the diagonals k(x_i, x_i), a constant bias).
    n, m = x.shape[0], y.shape[0]
    k = _kernel_sum(squared_distances(torch.cat((x, y))), kernel, cs)
    if a is not None or b is not None:
        return _weighted_estimate(k, weights_or_uniform(a, n, x), weights_or_uniform(b, m, y))
    w = device_constant(_estimator_weights, n, m, dtype=k.dtype, device=k.device)
    return torch.dot(k.flatten(), w.flatten())
