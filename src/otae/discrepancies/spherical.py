r"""Spherical sliced fused Gromov-Wasserstein family (Nguyen et al., ICLR 2021).

With :math:`FG_\beta` the exact 1-D value of :func:`otae.discrepancies.fgw_1d` and
:math:`F(\theta) = FG_\beta(\theta_\#\mu, \theta_\#\nu)` for :math:`\theta \in S^{d-1}`:

.. math::

    \text{max-SFG} = \max_{\theta} F(\theta), \qquad
    SSFG = \max_{\epsilon} \mathbb{E}_{\theta \sim vMF(\epsilon, \kappa)} F(\theta),

    MSSFG = \max_{\epsilon_1..\epsilon_k}
        \mathbb{E}_{\theta \sim \frac1k \sum_i vMF(\epsilon_i, \kappa)} F(\theta), \qquad
    PSSFG = \max_{\epsilon} \mathbb{E}_{\theta \sim PS(\epsilon, \kappa)} F(\theta).

:math:`\kappa \to 0` gives SFG (:func:`otae.discrepancies.sliced_fgw`), :math:`\kappa \to
\infty` gives max-SFG, and :math:`SFG \le SSFG \le \text{max-SFG}` (SFG is the average of
the SSFG objective over uniform :math:`\epsilon`). Note that the MSSFG objective is the
average of k SSFG objectives, one per location, so its *global* maximum equals SSFG
(all locations at the best one); it differs from SSFG through the local maxima that the
k locations settle on.

Location search (the paper's procedure is not known; our documented choice):

1. locations start uniform on the sphere (or at ``init_locations``, e.g. the previous
   batch's, for warm starts);
2. ``n_iters`` steps t = 0..T-1 of projected gradient ascent on the sphere with
   normalised steps and a linearly decaying step size,

   .. math::

       \epsilon \leftarrow \frac{\epsilon + \eta_t\, g / \|g\|}
                                  {\|\epsilon + \eta_t\, g / \|g\|\|},
       \qquad \eta_t = \text{lr}\,(1 - t/T),

   where :math:`g` is the gradient of the L-sample Monte Carlo objective with
   *reparameterised* samples (fresh every step), evaluated on DETACHED x and y (one
   :math:`g` per location, normalised per location). The samplers normalise the
   location internally, so :math:`g` is already tangent to the sphere and the
   renormalisation is the projection. Each step turns a location by
   :math:`\arctan \eta_t` radians whatever the scale of the data; plain SGD steps
   (``lr * g``) were tried and rejected: their angle scales with the discrepancy
   (values of 1e-2 barely moved, values of 1e2 jumped chaotically), and without the
   decay the final location keeps rattling around the optimum at the step size;
3. L fresh directions around the found locations give the returned value, which is
   differentiable in ``x`` and ``y`` only: no gradient flows through the search or
   into the directions (the locations are treated as constants, an envelope argument).

The search always runs with gradients enabled, so the regulariser can also be
evaluated under ``torch.no_grad()``. Values are at the "mean" scale of
:func:`otae.discrepancies.sliced_fgw` (unit directions, both parts averaged, mean over
the L slices). Cost per call: (n_iters + 1) x [sampling L directions + O(L N (d + log N))].
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..sphere import DISTRIBUTIONS, Distribution, sample_spherical_mixture, uniform_directions
from ._validation import (
    check_choice,
    check_count,
    check_positive,
    check_same,
    check_tensor,
    check_unit_interval,
    input_checks,
)
from .one_dimensional import fgw_1d_rows
from .sliced import project

__all__ = ["max_sliced_fgw", "spherical_sliced_fgw", "ssfg", "mssfg", "pssfg", "slice_values"]


def _validate_clouds(x: torch.Tensor, y: torch.Tensor) -> None:
    check_tensor(x, "x", ndims=(2,), min_rows=2)
    check_tensor(y, "y", ndims=(2,), min_rows=2)
    check_same(x, y, ("x", "y"))
    if x.shape[1] < 2:
        raise ValueError(
            f"x and y must have dimension d >= 2 (directions on S^(d-1)), got d = {x.shape[1]}"
        )


def slice_values(
    x: torch.Tensor, y: torch.Tensor, directions: torch.Tensor, beta: float
) -> torch.Tensor:
    r"""Per-slice :math:`FG_\beta(x\theta_l, y\theta_l)`, shape (L,), for ``directions`` (d, L).

    No validation and no normalisation of the directions: the building block of this
    module (and the function to gradcheck with the directions held fixed).
    """
    return fgw_1d_rows(project(x, directions), project(y, directions), 1.0 - beta, beta)


def _starts(
    x: torch.Tensor, count: int | None, init: torch.Tensor | None, name: str,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """(count, d) unit starting points: ``init`` checked and normalised, or uniform draws.

    ``count=None`` accepts any number of rows in ``init``.
    """
    d = x.shape[1]
    if init is None:
        return uniform_directions(count, d, generator=generator, dtype=x.dtype, device=x.device)
    check_tensor(init, name, ndims=(1, 2))
    init = init.detach().reshape(-1, init.shape[-1])
    if init.shape[1] != d or (count is not None and init.shape[0] != count):
        rows = "S" if count is None else count
        raise ValueError(f"{name} must have shape ({rows}, {d}), got {tuple(init.shape)}")
    check_same(x, init, ("x", name), shape=False)
    norm = init.norm(dim=-1, keepdim=True)
    if not bool((norm > 0).all()):
        raise ValueError(f"{name} must have non-zero rows")
    return init / norm


def _ascend(
    start: torch.Tensor,
    objective: Callable[[torch.Tensor], torch.Tensor],
    n_iters: int,
    lr: float,
) -> torch.Tensor:
    """Normalised projected gradient ascent on the sphere, row-wise (module docstring).

    ``objective`` must be invariant to the norm of the rows (it normalises them), so
    its gradient at a unit row is tangent and one renormalisation is the projection.
    Returns detached unit rows.
    """
    theta = start.detach().clone()
    tiny = torch.finfo(theta.dtype).tiny
    # Gradients on even under torch.no_grad(); input checks off: the data were checked.
    with torch.enable_grad(), input_checks(False):
        for t in range(n_iters):
            theta.requires_grad_(True)
            (grad,) = torch.autograd.grad(objective(theta), theta)
            # A zero gradient (e.g. x == y) leaves the row where it is.
            direction = grad / grad.norm(dim=-1, keepdim=True).clamp_min(tiny)
            theta = theta.detach() + (lr * (1.0 - t / n_iters)) * direction
            theta = theta / theta.norm(dim=-1, keepdim=True)
    return theta.detach()


def max_sliced_fgw(
    x: torch.Tensor,
    y: torch.Tensor,
    beta: float = 0.1,
    n_iters: int = 100,
    lr: float = 0.1,
    n_starts: int = 4,
    generator: torch.Generator | None = None,
    init_directions: torch.Tensor | None = None,
    return_direction: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    r"""max-SFG: :math:`\max_{\theta \in S^{d-1}} FG_\beta(\theta_\#\mu, \theta_\#\nu)`.

    The maximisation is not concave, so ``n_starts`` directions ascend in parallel (one
    batched slice each, see the module docstring for the ascent) and the best final one
    is kept. The value at that direction is returned, differentiable in ``x`` and ``y``.

    Args:
        x, y: (N, d) samples (uniform weights, same N >= 2, d >= 2).
        beta: weight of the Gromov-Wasserstein part in [0, 1] (POT's ``alpha``).
        n_iters, lr: ascent steps (>= 0) and initial step size (> 0, about the angle in
            radians of the first step; it decays linearly to 0).
        n_starts: number of random starting directions (ignored with ``init_directions``).
        generator: source of the random starts.
        init_directions: (S, d) or (d,) starting directions instead of random ones.
        return_direction: also return the chosen unit direction, shape (d,), detached.

    Returns:
        A scalar tensor (and the direction), dtype and device of ``x``.
    """
    _validate_clouds(x, y)
    beta = check_unit_interval(beta, "beta")
    check_count(n_iters, "n_iters", minimum=0)
    lr = check_positive(lr, "lr")
    count = None if init_directions is not None else check_count(n_starts, "n_starts")
    start = _starts(x, count, init_directions, "init_directions", generator)
    xd, yd = x.detach(), y.detach()

    def objective(theta: torch.Tensor) -> torch.Tensor:
        # Starts are independent, so the gradient of the sum is each start's own.
        unit = theta / theta.norm(dim=-1, keepdim=True)
        return slice_values(xd, yd, unit.T, beta).sum()

    theta = _ascend(start, objective, n_iters, lr)
    with torch.no_grad():
        best = int(slice_values(xd, yd, theta.T, beta).argmax())
    direction = theta[best]
    value = slice_values(x, y, direction.unsqueeze(-1), beta)[0]
    return (value, direction) if return_direction else value


def spherical_sliced_fgw(
    x: torch.Tensor,
    y: torch.Tensor,
    beta: float = 0.1,
    kappa: float = 50.0,
    n_projections: int = 10,
    n_iters: int = 100,
    lr: float = 0.1,
    n_components: int = 1,
    distribution: Distribution = "vmf",
    generator: torch.Generator | None = None,
    init_locations: torch.Tensor | None = None,
    return_locations: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    r"""Spherical sliced FGW: SSFG, MSSFG (``n_components > 1``) or PSSFG (``"power"``).

    :math:`\max_{\epsilon_{1..k}} \mathbb{E}_{\theta \sim \frac1k \sum_i D(\epsilon_i,
    \kappa)} FG_\beta(\theta_\#\mu, \theta_\#\nu)` with D the von Mises-Fisher
    (``distribution="vmf"``) or power spherical (``"power"``) distribution; the location
    search is described in the module docstring. With k > 1 the L directions of each
    step are stratified over the components (floor or ceil of L/k each). At equal
    :math:`\kappa` the power spherical law is less concentrated than the vMF: its mean
    resultant length is :math:`\kappa/(\kappa+d-1)`, about that of :math:`vMF(\kappa/2)`.

    Args:
        x, y: (N, d) samples (uniform weights, same N >= 2, d >= 2).
        beta: weight of the Gromov-Wasserstein part in [0, 1] (POT's ``alpha``).
        kappa: concentration, >= 0 (0 is uniform, i.e. SFG).
        n_projections: L, directions per ascent step and for the returned value.
        n_iters: ascent steps (>= 0; 0 keeps the initial locations).
        lr: initial ascent step (> 0, about the angle in radians of the first step; it
            decays linearly to 0 over the ``n_iters`` steps).
        n_components: k, the number of mixture components (locations).
        distribution: ``"vmf"`` or ``"power"``.
        generator: source of all randomness (starts, ascent samples, final directions).
        init_locations: (k, d) (or (d,) for k = 1) starting locations instead of random.
        return_locations: also return the found (k, d) unit locations, detached.

    Returns:
        A scalar tensor (and the locations), dtype and device of ``x``; differentiable
        in ``x`` and ``y`` (not through the search).
    """
    _validate_clouds(x, y)
    beta = check_unit_interval(beta, "beta")
    kappa = check_positive(kappa, "kappa", allow_zero=True)
    check_count(n_projections, "n_projections")
    check_count(n_iters, "n_iters", minimum=0)
    lr = check_positive(lr, "lr")
    check_count(n_components, "n_components")
    check_choice(distribution, "distribution", DISTRIBUTIONS)
    locations = _starts(x, n_components, init_locations, "init_locations", generator)
    xd, yd = x.detach(), y.detach()

    def draw(locs: torch.Tensor) -> torch.Tensor:
        """(d, L) directions around ``locs``, reparameterised (differentiable in locs)."""
        return sample_spherical_mixture(locs, kappa, n_projections, distribution=distribution,
                                        generator=generator).T

    locations = _ascend(locations, lambda locs: slice_values(xd, yd, draw(locs), beta).mean(),
                        n_iters, lr)
    with input_checks(False):
        directions = draw(locations)  # detached: the locations are
    value = slice_values(x, y, directions, beta).mean()
    return (value, locations) if return_locations else value


def ssfg(x: torch.Tensor, y: torch.Tensor, beta: float = 0.1, kappa: float = 50.0,
         **kwargs: Any) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """SSFG: :func:`spherical_sliced_fgw` with one von Mises-Fisher location."""
    return spherical_sliced_fgw(x, y, beta, kappa, n_components=1, distribution="vmf", **kwargs)


def mssfg(x: torch.Tensor, y: torch.Tensor, beta: float = 0.1, kappa: float = 50.0,
          n_components: int = 5,
          **kwargs: Any) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """MSSFG: :func:`spherical_sliced_fgw` with a uniform mixture of ``n_components`` vMFs.

    The default k = 5 is our choice (the paper's value is not known).
    """
    return spherical_sliced_fgw(x, y, beta, kappa, n_components=n_components,
                                distribution="vmf", **kwargs)


def pssfg(x: torch.Tensor, y: torch.Tensor, beta: float = 0.1, kappa: float = 50.0,
          **kwargs: Any) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """PSSFG: :func:`spherical_sliced_fgw` with one power spherical location (no rejection)."""
    return spherical_sliced_fgw(x, y, beta, kappa, n_components=1, distribution="power",
                                **kwargs)
