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
   location internally, so :math:`g` is tangent to the sphere and the
   renormalisation is the projection. Each step turns a location by
   :math:`\arctan \eta_t` radians whatever the scale of the data; plain SGD steps
   (``lr * g``) were tried and rejected: their angle scales with the discrepancy
   (values of 1e-2 barely moved, values of 1e2 jumped chaotically), and without the
   decay the final location keeps rattling around the optimum at the step size;
3. L fresh directions around the found locations give the returned value, which is
   differentiable in ``x`` and ``y`` only: no gradient flows through the search or
   into the directions (the locations are treated as constants, an envelope argument).

:math:`g` is computed in closed form, without autograd (:meth:`_Clouds.gradient`: the
1-D FGW gradient of the chosen matching, pulled back to the direction, then through
the Householder reflection of :mod:`otae.sphere` to the location), so a call makes no
host synchronisation, a fixed number of operations, and traces into one
``torch.compile(fullgraph=True)`` graph; it also runs the same under
``torch.no_grad()``. All the search's noise is drawn at once, before the first step
(see :mod:`otae.noise`): the random starts (without initial locations), then for
k > 1 not dividing L one ``randperm(k)`` per step (the stratification's extra rows),
then the radial parts and then the tangent parts of the (n_iters + 1) L samples
around :math:`e_1` (the last L give the returned value).

Values are at the "mean" scale of :func:`otae.discrepancies.sliced_fgw` (unit
directions, both parts averaged, mean over the L slices). Cost per call:
(n_iters + 1) x O(L N (d + log N)) plus the samples' draws.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .. import noise
from ..checks import (
    check_choice,
    check_count,
    check_positive,
    check_same,
    check_tensor,
    check_unit_interval,
    checks_enabled,
)
from ..sphere import (
    DISTRIBUTIONS,
    Distribution,
    around_e1,
    householder_reflector,
    mixture_components,
    reflect,
    rowdot,
    uniform_directions,
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
    generator: noise.Generatorish,
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
    if checks_enabled() and not bool((norm > 0).all()):
        raise ValueError(f"{name} must have non-zero rows")
    return init / norm


class _Clouds:
    r"""Detached clouds prepared for the closed-form gradient of :math:`F(\theta)` in the search.

    ``stacked`` is (2N, d), x then y, each centred: their projections are then the
    centred projections, and the translation part of :math:`F`,
    :math:`(1-\beta)\,(\theta^\top\delta)^2` with :math:`\delta = \bar x - \bar y`, is the
    quadratic form ``shift`` :math:`= 2(1-\beta)\delta\delta^\top` in the gradient.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, beta: float) -> None:
        mean_x, mean_y = x.mean(0, keepdim=True), y.mean(0, keepdim=True)
        self.n = x.shape[0]
        self.stacked = torch.cat((x - mean_x, y - mean_y))
        delta = mean_x - mean_y
        self.shift = (2.0 * (1.0 - beta)) * (delta.T @ delta)
        self.w_weight, self.gw_weight = 1.0 - beta, beta

    def gradient(self, theta: torch.Tensor) -> torch.Tensor:
        r""":math:`\partial F / \partial\theta_l` for the rows of ``theta`` (L, d), shape (L, d).

        With the projections :math:`p = X\theta_l`, :math:`q = Y\theta_l` sorted and centred,
        the matching (identity or anti-identity, :mod:`.one_dimensional`) is the one with
        the larger :math:`2N(1-\beta)\,\pi + \beta\,(4N\varsigma + 8\pi^2)`, where
        :math:`\pi = \sum_i p_i q_{\sigma(i)}` and :math:`\varsigma = \sum_i p_i^2
        q_{\sigma(i)}^2` are the only matching-dependent power sums of :math:`N^2 F`. For
        the matched pair :math:`(u, v) = (p, q_\sigma)` (and symmetrically for q), with
        :math:`a_u = \sum u_i^2`,

        .. math::

            \frac{\partial F}{\partial u_i} = \frac{2(1-\beta)}{N}(u_i - v_i)
              + \frac{\beta}{N^2}\Big(u_i\big(8N(u_i^2 - v_i^2) + 24 a_u - 8 a_v\big)
              - 16\pi v_i\Big)

        (the derivative of the relational sum of :mod:`.one_dimensional`; centring is a
        projection, applied by the centred clouds), and :math:`\partial F/\partial\theta_l =
        X^\top \partial F/\partial p + Y^\top \partial F/\partial q + \text{shift}\,\theta_l`.
        Ties go to the identity, as in :func:`.one_dimensional.fgw_1d_rows`.
        """
        n, rows = self.n, theta.shape[0]
        ww, gw = self.w_weight, self.gw_weight
        proj, order = (theta @ self.stacked.T).view(rows, 2, n).sort(-1)
        flipped = proj.flip(-1)
        candidates = torch.stack((proj[:, 1], flipped[:, 1]), 1)  # y matched to sorted x
        xs = proj[:, :1].transpose(1, 2)
        pi = candidates @ xs  # (L, 2, 1)
        varsigma = candidates.square() @ xs.square()
        score = torch.add(pi * (2.0 * n * ww), torch.add(varsigma, pi.square(), alpha=2.0 / n),
                          alpha=4.0 * n * gw)
        mask = score > score[:, :1]  # (L, 2, 1): [False, anti-identity wins]
        u = torch.where(mask, flipped, proj)  # [x sorted, y matched]
        v = u.flip(1)
        u2 = u.square()
        a_u = u2.sum(-1, keepdim=True)
        pi = torch.where(mask[:, 1:], pi[:, 1:], pi[:, :1])
        c_rel = gw / (n * n)
        coef = (u2 - u2.flip(1)).mul_(8.0 * n * c_rel).add_(a_u, alpha=24.0 * c_rel)
        coef.sub_(a_u.flip(1), alpha=8.0 * c_rel).add_(2.0 * ww / n)
        grad = torch.addcmul(u * coef, v, pi * (16.0 * c_rel) + 2.0 * ww / n, value=-1.0)
        index = torch.where(mask, order.flip(-1), order)
        grad = torch.empty_like(grad).scatter_(-1, index, grad)
        return torch.addmm(theta @ self.shift, grad.view(rows, 2 * n), self.stacked)


def _ascend(
    start: torch.Tensor,
    ascent: Callable[[int, torch.Tensor], torch.Tensor],
    n_iters: int,
    lr: float,
    keep_previous: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Normalised projected gradient ascent on the sphere, row-wise (module docstring).

    ``ascent(t, theta)`` returns the step-``t`` ascent direction at the unit rows ``theta``
    up to a positive factor per row (it is normalised here); a zero row (e.g. x == y)
    leaves its row where it is. Fixed step count, no autograd, no host sync.
    ``keep_previous`` also returns the rows before the last step (the start if none).
    """
    theta = previous = start.detach()
    tiny = torch.finfo(theta.dtype).tiny
    with torch.no_grad():
        for t in range(n_iters):
            previous = theta
            grad = ascent(t, theta)
            norm = grad.norm(dim=-1, keepdim=True).clamp_min(tiny)
            theta = torch.addcdiv(theta, grad, norm, value=lr * (1.0 - t / n_iters))
            theta = theta / theta.norm(dim=-1, keepdim=True)
    return (theta, previous) if keep_previous else theta


def _angles(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Angles in radians between the unit rows of ``u`` and ``v``, shape (rows,).

    ``2 asin(|u - v| / 2)``: accurate for small angles, where ``acos(u.v)`` is not.
    """
    return 2.0 * torch.asin((torch.linalg.vector_norm(u - v, dim=-1) / 2.0).clamp_max(1.0))


def _log_info(n_iters: int, start: torch.Tensor, end: torch.Tensor,
              last_change: torch.Tensor) -> dict[str, torch.Tensor]:
    """The ``log=True`` dict of the search (docstrings of the public functions)."""
    return {"n_iters": torch.full((), n_iters, device=end.device),
            "objective_start": start.detach(), "objective_end": end.detach(),
            "last_change": last_change}


def _tangent(grad: torch.Tensor, unit: torch.Tensor) -> torch.Tensor:
    """``grad`` minus its component along the unit rows ``unit``."""
    return torch.addcmul(grad, rowdot(grad, unit), unit, value=-1.0)


def max_sliced_fgw(
    x: torch.Tensor,
    y: torch.Tensor,
    beta: float = 0.1,
    n_iters: int = 100,
    lr: float = 0.1,
    n_starts: int = 4,
    generator: noise.Generatorish = None,
    init_directions: torch.Tensor | None = None,
    return_direction: bool = False,
    *,
    log: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, ...]:
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
        generator: source of the random starts (see :mod:`otae.noise`).
        init_directions: (S, d) or (d,) starting directions instead of random ones.
        return_direction: also return the chosen unit direction, shape (d,), detached.
        log: also return a dict of search diagnostics (below), to see whether
            ``n_iters`` steps were enough.

    Returns:
        A scalar tensor (and the direction), dtype and device of ``x``. With ``log=True``
            followed by a ``dict[str, Tensor]`` of detached 0-dim tensors on the device of
            ``x``, computed without host synchronisation, all about the chosen direction:

            - ``n_iters``: ascent steps run (int64).
            - ``objective_start``: :math:`FG_\beta` along its starting direction.
            - ``objective_end``: :math:`FG_\beta` along it at the end, i.e. the value.
            - ``last_change``: the angle in radians it turned in the last ascent step
              (:math:`\arctan(\text{lr}/\text{n\_iters})` unless its gradient vanished:
              the steps are normalised, so this shows the step size, not convergence;
              0 for ``n_iters=0``).

            Without ``log`` nothing changes: same operations, values and random draws.
            With it, one more evaluation of the slices (about 50 operations).
    """
    _validate_clouds(x, y)
    beta = check_unit_interval(beta, "beta")
    check_count(n_iters, "n_iters", minimum=0)
    lr = check_positive(lr, "lr")
    count = None if init_directions is not None else check_count(n_starts, "n_starts")
    start = _starts(x, count, init_directions, "init_directions", generator)
    clouds = _Clouds(x.detach(), y.detach(), beta)
    # The objective normalises theta, so its gradient at a unit row is the tangent part.
    theta, previous = _ascend(start, lambda t, th: _tangent(clouds.gradient(th), th), n_iters,
                              lr, keep_previous=True)
    # Every start's value at once; the gradient reaches x and y through the best one only.
    values = slice_values(x, y, theta.T, beta)
    best = values.detach().argmax().reshape(1)
    value = values.gather(0, best)[0]
    out = (value, theta.index_select(0, best)[0]) if return_direction else (value,)
    if log:
        with torch.no_grad():
            # All starts, as for the final values: with n_iters=0 then bit-identical.
            first = slice_values(x, y, start.T, beta).gather(0, best)[0]
            turn = _angles(theta.index_select(0, best), previous.index_select(0, best))[0]
        out += (_log_info(n_iters, first, value, turn),)
    return out if len(out) > 1 else value


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
    generator: noise.Generatorish = None,
    init_locations: torch.Tensor | None = None,
    return_locations: bool = False,
    *,
    log: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, ...]:
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
        generator: source of all randomness (starts, ascent samples, final directions;
            see :mod:`otae.noise` and the module docstring for the order of the draws).
        init_locations: (k, d) (or (d,) for k = 1) starting locations instead of random.
        return_locations: also return the found (k, d) unit locations, detached.
        log: also return a dict of search diagnostics (below), to see whether
            ``n_iters`` steps were enough.

    Returns:
        A scalar tensor (and the locations), dtype and device of ``x``; differentiable
            in ``x`` and ``y`` (not through the search). With ``log=True`` followed by a
            ``dict[str, Tensor]`` of detached 0-dim tensors on the device of ``x``, computed
            without host synchronisation and without drawing any extra random number:

            - ``n_iters``: ascent steps run (int64).
            - ``objective_start``: the Monte Carlo objective (mean of the L slice values)
              at the starting locations, with the L samples of the returned value.
            - ``objective_end``: the same at the found locations, i.e. the value. Sharing
              the samples, their difference is the search's gain without Monte Carlo noise.
            - ``last_change``: the largest angle in radians that a location turned in the
              last ascent step (:math:`\arctan(\text{lr}/\text{n\_iters})` unless its
              gradient vanished: the steps are normalised, so this shows the step size, not
              convergence; 0 for ``n_iters=0``).

            Without ``log`` nothing changes: same operations, values and random draws.
            With it, one more evaluation of the slices (about 50 operations).
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
    k, d, steps = n_components, x.shape[1], n_iters + 1
    # All the search's noise at once: the component rows of each step (k > 1; drawn only
    # when k does not divide L, else one static layout), then the radial parts and the
    # tangents of every step's L samples around e1.
    rows: list[torch.Tensor | None] = [None]
    if k > 1:
        rows = [mixture_components(k, n_projections, generator, x.device)
                for _ in range(1 if n_projections % k == 0 else steps)]
    members = [None if r is None else
               (r == torch.arange(k, device=x.device).unsqueeze(-1)).to(x.dtype) for r in rows]
    samples = around_e1(kappa, d, steps * n_projections, distribution, generator, x.dtype,
                        x.device).view(steps, n_projections, d)
    e1 = torch.eye(1, d, dtype=x.dtype, device=x.device)

    def directions(t: int, locs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Step t's (L, d) directions around ``locs``, the reflection vectors u (one per
        location) and the (L, 1) products e.u of the samples e around e1."""
        sign, u = householder_reflector(locs, e1)
        index = rows[t % len(rows)]
        if index is not None:
            sign, u_rows = sign[index], u[index]
            eu = rowdot(samples[t], u_rows)
        else:
            u_rows, eu = u, samples[t] @ u.T
        return reflect(samples[t], sign, u_rows, eu), u, u_rows, eu

    clouds = _Clouds(x.detach(), y.detach(), beta)

    def ascent(t: int, locs: torch.Tensor) -> torch.Tensor:
        # Chain rule through theta = s (e - 2 (e.u) u), u = (e1 - s eps) / |e1 - s eps|,
        # up to the positive factor 2 / |e1 - s eps| per location (steps are normalised):
        # the sum over the location's rows of (g.u) e + (e.u) g, projected off u, then
        # off eps (the samplers normalise eps).
        theta, u, u_rows, eu = directions(t, locs)
        grad, e = clouds.gradient(theta), samples[t]
        member = members[t % len(members)]
        if member is None:
            per_loc = torch.addmm((grad @ u.T).T @ e, eu.T, grad)
        else:
            per_loc = member @ torch.addcmul(rowdot(grad, u_rows) * e, eu, grad)
        return _tangent(_tangent(per_loc, u), locs)

    start = locations
    locations, previous = _ascend(start, ascent, n_iters, lr, keep_previous=True)
    value = slice_values(x, y, directions(n_iters, locations)[0].T, beta).mean()
    out = (value, locations) if return_locations else (value,)
    if log:
        with torch.no_grad():
            first = slice_values(x, y, directions(n_iters, start)[0].T, beta).mean()
            turn = _angles(locations, previous).max()
        out += (_log_info(n_iters, first, value, turn),)
    return out if len(out) > 1 else value


def ssfg(x: torch.Tensor, y: torch.Tensor, beta: float = 0.1, kappa: float = 50.0, *,
         log: bool = False, **kwargs: Any) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """SSFG: :func:`spherical_sliced_fgw` with one von Mises-Fisher location (``log``: there)."""
    return spherical_sliced_fgw(x, y, beta, kappa, n_components=1, distribution="vmf", log=log,
                                **kwargs)


def mssfg(x: torch.Tensor, y: torch.Tensor, beta: float = 0.1, kappa: float = 50.0,
          n_components: int = 5, *, log: bool = False,
          **kwargs: Any) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """MSSFG: :func:`spherical_sliced_fgw` with a uniform mixture of ``n_components`` vMFs.

    The default k = 5 is our choice (the paper's value is not known). ``log``: see
    :func:`spherical_sliced_fgw`.
    """
    return spherical_sliced_fgw(x, y, beta, kappa, n_components=n_components,
                                distribution="vmf", log=log, **kwargs)


def pssfg(x: torch.Tensor, y: torch.Tensor, beta: float = 0.1, kappa: float = 50.0, *,
          log: bool = False, **kwargs: Any) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """PSSFG: :func:`spherical_sliced_fgw` with one power spherical location (no rejection;
    ``log``: there)."""
    return spherical_sliced_fgw(x, y, beta, kappa, n_components=1, distribution="power",
                                log=log, **kwargs)
