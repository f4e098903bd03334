r"""Entropic optimal transport between point clouds: Sinkhorn cost and Sinkhorn divergence.

Measures :math:`\mu = \sum_i a_i \delta_{x_i}`, :math:`\nu = \sum_j b_j \delta_{y_j}`
(uniform weights by default), ground cost :math:`C_{ij} = \|x_i - y_j\|^p`, p in {1, 2}.
The entropic problem with regularisation :math:`\varepsilon > 0` is

.. math::

    OT_\varepsilon(\mu, \nu) = \min_{P \in \Pi(a, b)} \langle P, C \rangle
        + \varepsilon\, KL(P \,\|\, a b^\top),

whose solution is :math:`P_{ij} = a_i b_j \exp((f_i + g_j - C_{ij}) / \varepsilon)`
for dual potentials f, g. Two quantities are offered:

- :func:`sinkhorn`: the TRANSPORT COST :math:`\langle P_\varepsilon, C\rangle` of the
  entropic plan, without the entropy term: the value of POT's ``ot.sinkhorn2`` (and
  of the Sinkhorn autoencoder's loss). It is found by a fixed number of log-domain
  Sinkhorn iterations that autograd differentiates through (unrolled), so the
  gradient is that of the value actually computed, converged or not.
- :func:`sinkhorn_divergence`: the debiased Sinkhorn divergence (Feydy et al. 2019)

  .. math:: S_\varepsilon(\mu, \nu) = OT_\varepsilon(\mu, \nu)
            - \tfrac12 OT_\varepsilon(\mu, \mu) - \tfrac12 OT_\varepsilon(\nu, \nu),

  built on the REGULARISED value :math:`OT_\varepsilon` (with the entropy term), which
  GeomLoss evaluates as the dual objective :math:`\langle a, f\rangle + \langle b, g\rangle`
  (equal to the primal value at convergence). :math:`S_\varepsilon \ge 0`,
  :math:`S_\varepsilon(\mu, \mu) = 0`, and it interpolates between OT (eps -> 0)
  and an MMD (eps -> infinity).
"""

from __future__ import annotations

import numbers

import torch
from geomloss import SamplesLoss

from ._validation import _enabled, check_count, check_positive, check_same, check_tensor
from .mmd import squared_distances

__all__ = ["sinkhorn", "sinkhorn_divergence", "cost_matrix", "SUPPORTED_P"]

#: Exponents of the ground cost ||x - y||^p handled here (GeomLoss's built-in costs).
SUPPORTED_P = (1, 2)


def _check_p(p: object) -> int:
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or p not in SUPPORTED_P:
        raise ValueError(f"p must be one of {SUPPORTED_P}, got {p!r}")
    return int(p)


def _safe_sqrt(sq: torch.Tensor) -> torch.Tensor:
    """sqrt with gradient 0 (not inf/NaN) where the argument is 0 (coincident points)."""
    positive = sq > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, sq, torch.ones_like(sq))), 0.0)


def cost_matrix(x: torch.Tensor, y: torch.Tensor, p: int = 2) -> torch.Tensor:
    """Ground cost ``||x_i - y_j||^p`` of shape (N, M), for p in :data:`SUPPORTED_P`.

    No validation (internal building block). O(NM) memory, no (N, M, d) intermediate.
    """
    sq = squared_distances(x, y)
    return sq if p == 2 else _safe_sqrt(sq)


def _validate(x, y, epsilon, p, a, b):
    check_tensor(x, "x", ndims=(2,))
    check_tensor(y, "y", ndims=(2,))
    check_same(x, y, ("x", "y"), shape=False, dims=(1,))
    epsilon = check_positive(epsilon, "epsilon")
    p = _check_p(p)
    a = _weights(a, x, "a", "x")
    b = _weights(b, y, "b", "y")
    return epsilon, p, a, b


def _weights(w: torch.Tensor | None, pts: torch.Tensor, name: str, pts_name: str) -> torch.Tensor:
    """Uniform weights, or the given (n,) non-negative ones normalised to total mass 1."""
    n = pts.shape[0]
    if w is None:
        return torch.full((n,), 1.0 / n, dtype=pts.dtype, device=pts.device)
    check_tensor(w, name, ndims=(1,))
    check_same(pts, w, (pts_name, name), shape=False, dims=(0,))
    # (A host sync on CUDA: skipped with the other checks under input_checks(False).)
    if _enabled() and (bool((w < 0).any()) or not bool(w.sum() > 0)):
        raise ValueError(f"{name} must be non-negative with a positive sum")
    # Balanced OT needs equal masses: normalise both measures to probabilities.
    return w / w.sum()


def sinkhorn(
    x: torch.Tensor,
    y: torch.Tensor,
    epsilon: float = 0.1,
    n_iters: int = 100,
    p: int = 2,
    a: torch.Tensor | None = None,
    b: torch.Tensor | None = None,
    return_plan: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    r"""Transport cost :math:`\langle P_\varepsilon, C\rangle` of the entropic plan (ot.sinkhorn2).

    Log-domain Sinkhorn from :math:`f = 0`: each iteration updates

    .. math::

        g_j &\leftarrow -\varepsilon \log \textstyle\sum_i a_i \exp((f_i - C_{ij}) / \varepsilon),\\
        f_i &\leftarrow -\varepsilon \log \textstyle\sum_j b_j \exp((g_j - C_{ij}) / \varepsilon),

    (logsumexp, stable for any epsilon), the same order and start as POT's
    ``sinkhorn_knopp`` (v then u, from u = 1/N), so with uniform weights the iterates
    agree with POT's after the same number of iterations. The returned plan has
    exact row marginals a; its column marginals converge to b.

    Args:
        x: (N, d) source points; y: (M, d) target points.
        epsilon: regularisation, in the units of the cost (||x-y||^p). Small values
            relative to the typical cost need more iterations.
        n_iters: number of (g, f) updates; all are differentiated through, so the
            backward pass costs O(n_iters N M) memory.
        p: exponent of the ground cost, 1 or 2.
        a, b: (N,) and (M,) non-negative weights (normalised here to sum to 1);
            default uniform. Keep them positive if gradients w.r.t. them are needed.
        return_plan: also return the (N, M) plan P.

    Returns:
        A scalar (and the plan when ``return_plan``), dtype and device of ``x``,
        differentiable in x, y, a and b.
    """
    epsilon, p, a, b = _validate(x, y, epsilon, p, a, b)
    check_count(n_iters, "n_iters")
    c_over_eps = cost_matrix(x, y, p) / epsilon  # (N, M)
    log_a, log_b = torch.log(a), torch.log(b)
    # Scaled potentials f / eps and g / eps keep the loop free of divisions.
    f = torch.zeros_like(log_a)
    g = torch.zeros_like(log_b)
    for _ in range(n_iters):
        g = -torch.logsumexp((log_a + f).unsqueeze(1) - c_over_eps, dim=0)
        f = -torch.logsumexp((log_b + g).unsqueeze(0) - c_over_eps, dim=1)
    plan = torch.exp((log_a + f).unsqueeze(1) + (log_b + g).unsqueeze(0) - c_over_eps)
    value = (plan * c_over_eps).sum() * epsilon
    return (value, plan) if return_plan else value


def sinkhorn_divergence(
    x: torch.Tensor,
    y: torch.Tensor,
    epsilon: float = 0.1,
    p: int = 2,
    a: torch.Tensor | None = None,
    b: torch.Tensor | None = None,
    scaling: float = 0.5,
    diameter: float | None = None,
) -> torch.Tensor:
    r"""Debiased Sinkhorn divergence :math:`S_\varepsilon` via GeomLoss's ``SamplesLoss``.

    Our convention: cost :math:`\|x-y\|^p`, regularisation :math:`\varepsilon`.
    GeomLoss's: cost :math:`\|x-y\|^p / p` and temperature ``blur ** p``. Since
    :math:`OT_\varepsilon` is positively homogeneous in (cost, epsilon) jointly,
    :math:`OT_\varepsilon[C] = p \cdot OT_{\varepsilon / p}[C / p]`, so we call
    ``SamplesLoss('sinkhorn', p=p, blur=(epsilon / p) ** (1 / p), debias=True)`` and
    multiply by p (for p = 2: blur = sqrt(eps / 2), result times 2; for p = 1 nothing
    changes). The same holds term by term for the debiased value.

    GeomLoss does not iterate at fixed epsilon: it anneals the temperature from
    ``diameter ** p`` down to the target, dividing the blur by ``1/scaling`` at each
    step (about log(diameter / blur) / log(1 / scaling) + 2 symmetric iterations),
    and differentiates the final potentials by the envelope theorem rather than
    through the loop. ``scaling`` near 1 is slower but closer to the converged value;
    GeomLoss's default 0.5 is a good trade-off in training. ``backend='tensorized'``
    (O(NM) memory, no KeOps). For p = 1 GeomLoss floors distances at 1e-4.

    Args:
        x: (N, d), y: (M, d) samples; a, b: optional (N,), (M,) non-negative weights
            (normalised to sum to 1), default uniform.
        epsilon: regularisation in our units (> 0). p: 1 or 2.
        scaling: GeomLoss's annealing ratio in (0, 1).
        diameter: GeomLoss's starting scale (a distance); ``None`` estimates it from
            the bounding box of the points.

    Returns:
        A scalar in the dtype and device of ``x``, differentiable in x, y, a, b.
    """
    epsilon, p, a, b = _validate(x, y, epsilon, p, a, b)
    scaling = check_positive(scaling, "scaling")
    if scaling >= 1.0:
        raise ValueError(f"scaling must lie in (0, 1), got {scaling}")
    if diameter is not None:
        diameter = check_positive(diameter, "diameter")
    blur = (epsilon / p) ** (1.0 / p)
    loss = SamplesLoss(
        "sinkhorn", p=p, blur=blur, scaling=scaling, diameter=diameter, debias=True,
        backend="tensorized",
    )
    return p * loss(a, x, b, y)
