r"""Empirical (fused) Gromov-Wasserstein between point clouds, solved by POT.

For uniform empirical measures on :math:`x \in \mathbb{R}^{N \times d_1}` and
:math:`y \in \mathbb{R}^{M \times d_2}`, with :math:`c` the chosen metric
(``'sqeuclidean'`` or ``'euclidean'``),

.. math::

    FGW_\beta(x, y) = \min_{T \in \Pi(1/N, 1/M)} (1-\beta) \sum_{ij} c(x_i, y_j) T_{ij}
      + \beta \sum_{ijkl} \big(c(x_i, x_k) - c(y_j, y_l)\big)^2 T_{ij} T_{kl},

and :math:`GW = FGW_1` (which needs no common dimension). ``beta`` is POT's ``alpha``.
POT's conditional-gradient solvers (``ot.gromov.fused_gromov_wasserstein2`` and
``gromov_wasserstein2``, square loss, initialised at the product plan) find a local
minimum of this non-convex problem. Called with torch tensors, POT's torch backend
attaches the envelope-theorem gradients to the value (plan held fixed), so gradients
reach ``x`` and ``y`` through the cost matrices built here in torch. The plan itself is
computed by POT's exact OT solver on the CPU (a device round trip on GPU).

POT is an optional dependency (``pip install 'otae[pot]'``), imported on the first call:
without it these two functions raise :class:`~otae._optional.MissingDependencyError`.
"""

from __future__ import annotations

from typing import Literal

import torch

from .._optional import require
from ..checks import check_choice, check_count, check_same, check_tensor, check_unit_interval
from .gaussian import pairwise_sqeuclidean

__all__ = ["empirical_fgw", "empirical_gw"]

Metric = Literal["sqeuclidean", "euclidean"]
METRICS = ("sqeuclidean", "euclidean")


def _cost(a: torch.Tensor, b: torch.Tensor, metric: str) -> torch.Tensor:
    if metric == "sqeuclidean":
        return pairwise_sqeuclidean(a, b)
    # cdist's backward returns 0 (not NaN) where a distance is 0, e.g. the diagonal of
    # the intra-cloud matrix, where the sqrt of a squared distance would give NaN.
    return torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist")


def require_pot():
    """POT's ``ot`` module, imported now (or :class:`~otae._optional.MissingDependencyError`)."""
    return require("ot", feature="the empirical (fused) Gromov-Wasserstein solver",
                   install="otae[pot]")


def _uniform(n: int, like: torch.Tensor) -> torch.Tensor:
    return torch.full((n,), 1.0 / n, dtype=like.dtype, device=like.device)


def _validate(x: torch.Tensor, y: torch.Tensor, metric: str, max_iter: int,
              same_dim: bool) -> None:
    check_tensor(x, "x", ndims=(2,))
    check_tensor(y, "y", ndims=(2,))
    check_same(x, y, ("x", "y"), shape=False, dims=(1,) if same_dim else None)
    check_choice(metric, "metric", METRICS)
    check_count(max_iter, "max_iter")


def empirical_fgw(
    x: torch.Tensor,
    y: torch.Tensor,
    beta: float = 0.1,
    metric: Metric = "sqeuclidean",
    max_iter: int = 10_000,
    return_plan: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    r"""Fused GW :math:`FGW_\beta` between uniform point clouds (module docstring).

    Args:
        x: (N, d) and y: (M, d) samples; the Wasserstein part needs the same d.
        beta: weight of the Gromov-Wasserstein part in [0, 1] (POT's ``alpha``).
        metric: ground cost, ``'sqeuclidean'`` (default) or ``'euclidean'``, used for
            the cross cost and both intra-cloud costs.
        max_iter: conditional-gradient iterations of POT's solver.
        return_plan: also return the (N, M) plan (detached).

    Returns:
        Scalar value, or ``(value, plan)``; dtype and device of ``x``. Differentiable in
        ``x`` and ``y`` (envelope theorem).
    """
    _validate(x, y, metric, max_iter, same_dim=True)
    beta = check_unit_interval(beta, "beta")
    value, log = require_pot().gromov.fused_gromov_wasserstein2(
        _cost(x, y, metric), _cost(x, x, metric), _cost(y, y, metric),
        _uniform(x.shape[0], x), _uniform(y.shape[0], y),
        loss_fun="square_loss", alpha=beta, max_iter=max_iter, log=True,
    )
    return (value, log["T"].detach()) if return_plan else value


def empirical_gw(
    x: torch.Tensor,
    y: torch.Tensor,
    metric: Metric = "sqeuclidean",
    max_iter: int = 10_000,
    return_plan: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    r"""Gromov-Wasserstein :math:`\min_T \sum_{ijkl} (c(x_i,x_k) - c(y_j,y_l))^2 T_{ij} T_{kl}`.

    Args:
        x: (N, d1) and y: (M, d2) samples; d1 and d2 may differ.
        metric: intra-cloud cost, ``'sqeuclidean'`` (default) or ``'euclidean'``.
        max_iter: conditional-gradient iterations of POT's solver.
        return_plan: also return the (N, M) plan (detached).

    Returns:
        Scalar value, or ``(value, plan)``; dtype and device of ``x``. Differentiable in
        ``x`` and ``y`` (envelope theorem). Equals :func:`empirical_fgw` with
        ``beta = 1`` when the dimensions agree.
    """
    _validate(x, y, metric, max_iter, same_dim=False)
    value, log = require_pot().gromov.gromov_wasserstein2(
        _cost(x, x, metric), _cost(y, y, metric),
        _uniform(x.shape[0], x), _uniform(y.shape[0], y),
        loss_fun="square_loss", max_iter=max_iter, log=True,
    )
    return (value, log["T"].detach()) if return_plan else value
