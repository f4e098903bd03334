r"""Sliced discrepancies: sliced fused Gromov-Wasserstein and sliced Wasserstein.

Sliced FGW (Xu et al. 2020, Definition 3.5 and eq. 13):

.. math::

    SFG_\beta(\mu, \nu) = \mathbb{E}_{\theta \sim U(S^{d-1})}
        FG_\beta(\theta_\# \mu, \theta_\# \nu)
    \approx \frac{1}{L} \sum_{l=1}^L FG_\beta(x \theta_l, y \theta_l),

with :math:`FG_\beta` the exact 1-D value of :func:`otae.discrepancies.fgw_1d`.
One call costs O(L N (d + log N)) time and O(L N) memory. Gradients flow into
``x`` and ``y`` through the sorted projections, never into the directions.

Weights and unequal sizes: every function takes keyword-only weights ``a`` of the N
points of x and ``b`` of the M points of y (1-D, nonnegative, each summing to 1, as
POT's ``a``/``b`` and GeomLoss's weights; None means uniform 1/N, 1/M), and M may
differ from N. Each slice then couples the projected weighted measures by the
monotone coupling (sliced W, exact per slice) or by the better of the monotone and
anti-monotone couplings (sliced FGW/GW, an upper bound per slice), evaluated from
the at most N + M - 1 atoms of the merged cumulative weights in O((N + M) log(N + M))
per slice (:mod:`otae.discrepancies.one_dimensional`), still vectorised over slices
and free of host syncs, and differentiable in x, y, and in a and b along the simplex.
Without weights and with N == M the computation is the unweighted one, operation for
operation.
"""

from __future__ import annotations

from typing import Literal

import torch

from .. import noise
from ..checks import (
    check_choice,
    check_count,
    check_same,
    check_same_except_rows,
    check_tensor,
    check_unit_interval,
    check_weights,
)
from .one_dimensional import fgw_1d_pair_rows, fgw_1d_rows, wasserstein_1d_rows

__all__ = ["sliced_fgw", "sliced_gw", "sliced_wasserstein", "project", "resolve_projections"]

Scale = Literal["mean", "rae_authors"]
SCALES = ("mean", "rae_authors")


def _validate_clouds(x: torch.Tensor, y: torch.Tensor, a: torch.Tensor | None,
                     b: torch.Tensor | None) -> None:
    check_tensor(x, "x", ndims=(2,), min_rows=2)
    check_tensor(y, "y", ndims=(2,), min_rows=2)
    check_same_except_rows(x, y, ("x", "y"))
    check_weights(a, "a", x, "x")
    check_weights(b, "b", y, "y")


def resolve_projections(
    x: torch.Tensor,
    n_projections: int,
    projections: torch.Tensor | None,
    generator: noise.Generatorish,
    normalise: bool = True,
) -> torch.Tensor:
    """Directions of shape (d, L): the given ``projections`` (checked), or L fresh ones.

    Fresh directions are uniform on S^{d-1} (``normalise=True``: normalised N(0, I)
    vectors, as :func:`otae.sphere.uniform_directions`) or raw N(0, I) vectors
    (``normalise=False``, the RAE authors' code), one (L, d) draw of
    :func:`otae.noise.randn`. Returned detached, in the dtype and device of ``x``.
    """
    d = x.shape[1]
    if projections is None:
        check_count(n_projections, "n_projections")
        g = noise.randn((n_projections, d), generator, dtype=x.dtype, device=x.device)
        return (g / g.norm(dim=-1, keepdim=True) if normalise else g).T
    check_tensor(projections, "projections", ndims=(2,))
    if projections.shape[0] != d:
        raise ValueError(
            f"projections must have shape (d, L) with d = {d} (the dimension of x), "
            f"got {tuple(projections.shape)}"
        )
    check_same(x, projections, ("x", "projections"), shape=False)
    return projections.detach()


def project(x: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """Projections of the rows of ``x`` (N, d) on ``directions`` (d, L), laid out (L, N).

    The (L, N) layout keeps each slice contiguous for sorting.
    """
    return directions.T @ x.T


def _project_pair(x: torch.Tensor, y: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """(L, 2, N) projections of x and y stacked along dim 1: one matrix product, and the
    layout the 1-D row functions sort in one call."""
    return project(torch.cat((x, y)), directions).unflatten(-1, (2, x.shape[0]))


def _project_apart(x: torch.Tensor, y: torch.Tensor, directions: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(L, N) and (L, M) projections of x and y of different sizes: one matrix product."""
    return project(torch.cat((x, y)), directions).split((x.shape[0], y.shape[0]), -1)


def _unweighted_pair(x: torch.Tensor, y: torch.Tensor, a, b) -> bool:
    """Whether the unweighted equal-size path (one sort of the stacked pair) applies."""
    return a is None and b is None and x.shape[0] == y.shape[0]


def sliced_fgw(
    x: torch.Tensor,
    y: torch.Tensor,
    beta: float = 0.1,
    n_projections: int = 50,
    projections: torch.Tensor | None = None,
    generator: noise.Generatorish = None,
    scale: Scale = "mean",
    *,
    a: torch.Tensor | None = None,
    b: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Sliced fused Gromov-Wasserstein between two point clouds (eq. 13 of the RAE paper).

    Args:
        x, y: (N, d) and (M, d) samples of the two measures, N, M >= 2.
        beta: weight of the Gromov-Wasserstein part in [0, 1] (POT's ``alpha``);
            ``beta = 1`` is sliced GW, ``beta = 0`` sliced (squared) W2.
        n_projections: L, the number of random directions (ignored when
            ``projections`` is given).
        projections: (d, L) directions to use exactly (detached); default: draw L.
        generator: source of the random directions.
        scale: ``"mean"`` (default) is the definition above: unit directions, both
            parts averaged, mean over slices. ``"rae_authors"`` reproduces the scale
            of the RAE authors' code, at which their gamma = 1, beta = 0.1 were tuned:
            raw N(0, I) directions (not normalised) when drawn here, the W part
            SUMMED over the N samples, the GW part averaged over the N^2 pairs, the
            min over identity/anti-identity taken per slice on the fused value, and
            the L slices SUMMED. Per slice that is ``(1-beta) N W + beta GW``, with N
            the number of rows of x also when weights are given or M != N.
        a, b: weights of the N points of x and the M points of y (1-D, nonnegative,
            each summing to 1; checked unless :func:`input_checks` is off); None means
            uniform. With weights or M != N each slice's value is the smaller of the
            monotone and anti-monotone couplings' fused values, with W a sum over the
            coupling's atoms weighted by w_k and GW over pairs of atoms by w_k w_l
            (module docstring of :mod:`otae.discrepancies.one_dimensional`).

    Returns:
        A scalar tensor in the dtype and device of ``x``.
    """
    _validate_clouds(x, y, a, b)
    beta = check_unit_interval(beta, "beta")
    check_choice(scale, "scale", SCALES)
    authors = scale == "rae_authors"
    directions = resolve_projections(x, n_projections, projections, generator,
                                     normalise=not authors)
    w_weight = (1.0 - beta) * x.shape[0] if authors else 1.0 - beta
    if _unweighted_pair(x, y, a, b):
        values = fgw_1d_pair_rows(_project_pair(x, y, directions), w_weight, beta)
    else:
        values = fgw_1d_rows(*_project_apart(x, y, directions), w_weight, beta, a=a, b=b)
    return values.sum() if authors else values.mean()


def sliced_gw(
    x: torch.Tensor,
    y: torch.Tensor,
    n_projections: int = 50,
    projections: torch.Tensor | None = None,
    generator: noise.Generatorish = None,
    *,
    a: torch.Tensor | None = None,
    b: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sliced Gromov-Wasserstein (Titouan et al. 2019): :func:`sliced_fgw` with beta = 1.

    Because the GW part compares only within-set distances, x and y may have
    different dimensions only if projected separately; here both are (·, d).
    Weights ``a``, ``b`` and M != N as in :func:`sliced_fgw`.
    """
    return sliced_fgw(x, y, beta=1.0, n_projections=n_projections, projections=projections,
                      generator=generator, a=a, b=b)


def sliced_wasserstein(
    x: torch.Tensor,
    y: torch.Tensor,
    n_projections: int = 50,
    projections: torch.Tensor | None = None,
    generator: noise.Generatorish = None,
    *,
    a: torch.Tensor | None = None,
    b: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Sliced squared 2-Wasserstein (SWAE, Kolouri et al. 2018).

    .. math:: SW_2^2 \approx \frac{1}{L} \sum_l \frac{1}{N} \sum_i
              (\mathrm{sort}(x\theta_l)_i - \mathrm{sort}(y\theta_l)_i)^2

    With weights ``a``, ``b`` or M != N, each slice is the exact squared W2 of the
    projected weighted measures, :math:`\sum_k w_k (x_{(i_k)} - y_{(j_k)})^2` over the
    atoms of the monotone coupling: the square of POT's
    ``sliced_wasserstein_distance(x, y, a, b, projections=..., p=2)``.

    Args: as :func:`sliced_fgw`. Returns a scalar.
    """
    _validate_clouds(x, y, a, b)
    directions = resolve_projections(x, n_projections, projections, generator)
    if _unweighted_pair(x, y, a, b):
        return wasserstein_1d_rows(_project_pair(x, y, directions)).mean()
    return wasserstein_1d_rows(*_project_apart(x, y, directions), a=a, b=b).mean()
