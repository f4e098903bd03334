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

Pairwise squared distances come from the Gram matrix (O(NM) memory, no (N, M, d)
intermediate); one call costs O((N + M)^2 d) time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from ._pairwise import pairwise_sqeuclidean as squared_distances
from ._validation import check_choice, check_positive, check_same, check_tensor

__all__ = ["mmd", "squared_distances", "WAE_SCALES", "KERNELS"]

Kernel = Literal["imq", "gaussian"]
KERNELS = ("imq", "gaussian")
#: The multipliers of C summed over by the WAE authors' MMD penalty.
WAE_SCALES = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


def _kernel_sum(sq: torch.Tensor, kernel: str, cs: Sequence[float]) -> torch.Tensor:
    """Sum over the constants ``cs`` of the kernel evaluated on squared distances ``sq``."""
    out = torch.zeros_like(sq)
    for c in cs:
        out = out + (c / (c + sq) if kernel == "imq" else torch.exp(-sq / c))
    return out


def _off_diagonal_mean(k: torch.Tensor) -> torch.Tensor:
    """Mean of the off-diagonal entries of a square (n, n) matrix."""
    n = k.shape[0]
    return (k.sum() - k.diagonal().sum()) / (n * (n - 1))


def mmd(
    x: torch.Tensor,
    y: torch.Tensor,
    kernel: Kernel = "imq",
    scale: float | None = None,
    scales: Sequence[float] = (1.0,),
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

    Returns:
        A scalar tensor in the dtype and device of ``x``, differentiable in ``x``
        and ``y``.
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

    k_xx = _kernel_sum(squared_distances(x, x), kernel, cs)
    k_yy = _kernel_sum(squared_distances(y, y), kernel, cs)
    k_xy = _kernel_sum(squared_distances(x, y), kernel, cs)
    # Diagonals k(x_i, x_i) are excluded (U-statistic): they are a constant bias.
    return _off_diagonal_mean(k_xx) + _off_diagonal_mean(k_yy) - 2.0 * k_xy.mean()
