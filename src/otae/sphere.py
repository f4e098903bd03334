r"""Distributions on the unit sphere S^{d-1}: pure sampling functions.

Every sampler takes an explicit ``torch.Generator`` (or ``None`` for torch's
global one) so that results are reproducible; every draw goes through
:mod:`otae.noise`, so a :class:`~otae.noise.DrawRecorder` or
:class:`~otae.noise.DrawTape` may stand in for it (compiled training steps). The
samplers make no host synchronisation and draw static shapes: rejection samplers
draw a fixed number of proposals at once (:func:`_first_accepted`). This module sits below
:mod:`otae.discrepancies` (which slices with these directions) and
:mod:`otae.slicers` (which wraps them in stateful samplers owning a generator).

Concentrated distributions around a location :math:`\epsilon \in S^{d-1}` are
sampled in two stages (Wood 1994; De Cao & Aziz 2020):

1. the *radial* coordinate :math:`w = \epsilon^\top \theta \in [-1, 1]`, whose law
   is what distinguishes the distributions:

   - von Mises-Fisher :math:`vMF(\epsilon, \kappa)`, density
     :math:`\propto e^{\kappa \epsilon^\top \theta}`: Wood's rejection sampler;
   - power spherical :math:`PS(\epsilon, \kappa)`, density
     :math:`\propto (1 + \epsilon^\top \theta)^\kappa`:
     :math:`w = 2z - 1` with :math:`z \sim Beta((d-1)/2 + \kappa, (d-1)/2)`, no rejection;

2. a tangent direction :math:`v` uniform on :math:`S^{d-2}`, the sample
   :math:`(w, \sqrt{1-w^2}\, v)` around :math:`e_1`, and a Householder reflection
   taking :math:`e_1` to :math:`\epsilon` (:func:`householder_from_e1`).

Stage 2 is a smooth function of :math:`\epsilon` given the stage-1 noise, so the
samples are *reparameterised*: gradients flow from the samples into ``loc``.
The radial coordinate is drawn in float64 together with :math:`1 - w`, computed
without cancellation, so that :math:`\sqrt{1-w^2}` stays accurate for large
:math:`\kappa` even when the samples are float32.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from scipy import special

from . import checks, noise

__all__ = [
    "uniform_directions",
    "gaussian_directions",
    "sample_beta",
    "sample_von_mises_fisher",
    "sample_power_spherical",
    "sample_spherical_mixture",
    "householder_from_e1",
    "householder_reflector",
    "reflect",
    "rowdot",
    "around_e1",
    "mixture_components",
    "vmf_mean_resultant_length",
    "power_spherical_mean_resultant_length",
]

Distribution = Literal["vmf", "power"]
DISTRIBUTIONS = ("vmf", "power")


def uniform_directions(
    n: int,
    dim: int,
    *,
    generator: noise.Generatorish = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """``n`` directions drawn uniformly on S^{dim-1}, shape (n, dim).

    Normalised standard Gaussian vectors (rotation invariance of N(0, I)).
    """
    g = gaussian_directions(n, dim, generator=generator, dtype=dtype, device=device)
    return g / g.norm(dim=-1, keepdim=True)


def gaussian_directions(
    n: int,
    dim: int,
    *,
    generator: noise.Generatorish = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """``n`` raw N(0, I) vectors, shape (n, dim): the RAE authors' unnormalised directions."""
    return noise.randn((n, dim), generator, dtype=dtype, device=device)


def _first_accepted(accept: torch.Tensor, *values: torch.Tensor) -> list[torch.Tensor]:
    """Per column, ``values`` at the first True row of ``accept`` (K, ...), else at the last.

    Fixed oversampling instead of a rejection loop: K proposals are drawn at once and the
    first accepted one is i.i.d. from the target, like the output of a sequential loop;
    the fallback to the last (unchecked) proposal happens with the probability that all K
    are rejected, which the callers bound below 1e-12.
    """
    k = accept.shape[0]
    rows = torch.arange(k, device=accept.device).view(k, *([1] * (accept.ndim - 1)))
    pick = torch.where(accept, rows, k - 1).amin(0, keepdim=True)
    return [v.gather(0, pick).squeeze(0) for v in values]


# --------------------------------------------------------------------------- Beta

#: Marsaglia-Tsang proposals per gamma variate. The sampler runs at shape >= 1 (smaller
#: shapes are boosted), where its acceptance rate is > 0.95 (smallest at shape 1, it
#: increases with the shape; tests/test_spherical_hot_path.py measures it), so all 12
#: proposals fail with probability < 0.05^12 < 1e-15.
_GAMMA_PROPOSALS = 12
#: largest 2a + 2b for which :func:`_beta_pair` sums squared normals: about the 2 x 12
#: normals the rejection sampler draws per beta variate.
_CHI2_MAX = 24


def _log_gamma(
    alpha: torch.Tensor, generator: noise.Generatorish, dtype: torch.dtype, device,
    boost: bool = True,
) -> torch.Tensor:
    r"""``log G`` with :math:`G \sim Gamma(\alpha, 1)` elementwise, ``alpha`` > 0 of any shape.

    Marsaglia & Tsang (2000) at shape :math:`\alpha' = \alpha` (or :math:`\alpha + 1` when
    :math:`\alpha < 1`): with :math:`d = \alpha' - 1/3`, :math:`c = 1/\sqrt{9d}`,
    :math:`x \sim N(0, 1)`, :math:`u \sim U(0, 1)` and :math:`v = (1 + cx)^3`, accept
    :math:`G' = dv` when :math:`v > 0` and :math:`\ln u < x^2/2 + d - dv + d \ln v`; then
    :math:`G = G' U^{1/\alpha}` for :math:`\alpha < 1` (Marsaglia-Tsang's boost). Draws:
    one ``randn`` and one ``rand`` of shape (12, *alpha.shape) (:data:`_GAMMA_PROPOSALS`),
    then, unless ``boost=False`` (the caller knows every shape is >= 1), one ``rand`` of
    ``alpha.shape`` for the boost; all of static shape. In log space
    so that tiny shapes (:math:`U^{1/\alpha}` underflows) keep their relative accuracy.
    """
    shape = (_GAMMA_PROPOSALS, *alpha.shape)
    small = alpha < 1.0
    d = torch.where(small, alpha + 1.0, alpha) - 1.0 / 3.0
    x = noise.randn(shape, generator, dtype=dtype, device=device)
    u = noise.rand(shape, generator, dtype=dtype, device=device)
    v = (x * torch.rsqrt(9.0 * d)).add_(1.0).pow_(3)
    log_v = v.clamp_min(torch.finfo(dtype).tiny).log_()
    accept = (v > 0) & (u.log_() < (x.square_().mul_(0.5) + d) - d * (v - log_v))
    (log_v,) = _first_accepted(accept, log_v)
    if not boost:
        return d.log() + log_v
    extra = noise.rand(alpha.shape, generator, dtype=dtype, device=device)
    return d.log() + log_v + torch.where(small, extra.log_() / alpha, 0.0)


def _beta_pair(
    a: float | torch.Tensor,
    b: float | torch.Tensor,
    shape: tuple[int, ...],
    generator: noise.Generatorish,
    dtype: torch.dtype,
    device,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""``(z, 1 - z)`` for z ~ Beta(a, b): :math:`z = G_a / (G_a + G_b) =
    \sigma(\ln G_a - \ln G_b)`, :math:`1 - z = \sigma(\ln G_b - \ln G_a)` (no cancellation).

    Both gammas come from one :func:`_log_gamma` call on the stacked shapes (a, b), or,
    when ``a`` and ``b`` are numbers whose doubles are integers with :math:`2a + 2b \le`
    :data:`_CHI2_MAX` (the vMF's :math:`a = b = (d-1)/2` for small d), from
    :math:`G_a = \frac12 \chi^2_{2a}`, a sum of :math:`2a` squared standard normals: exact,
    and fewer draws and operations than the rejection sampler.
    """
    twice = [2.0 * float(c) if not isinstance(c, torch.Tensor) else 0.5 for c in (a, b)]
    if all(t.is_integer() and t > 0 for t in twice) and sum(twice) <= _CHI2_MAX:
        ka = int(twice[0])
        squares = noise.randn((*shape, ka + int(twice[1])), generator, dtype=dtype,
                              device=device).square_()
        chi_a, chi_b = squares[..., :ka].sum(-1), squares[..., ka:].sum(-1)
        total = chi_a + chi_b
        return chi_a / total, chi_b / total
    alpha = torch.stack(torch.broadcast_tensors(
        torch.as_tensor(a, dtype=dtype, device=device).expand(shape),
        torch.as_tensor(b, dtype=dtype, device=device).expand(shape)))
    numbers = not any(isinstance(c, torch.Tensor) for c in (a, b))
    boost = not numbers or min(float(a), float(b)) < 1.0
    log_ga, log_gb = _log_gamma(alpha, generator, dtype, device, boost)
    t = log_ga - log_gb
    return torch.sigmoid(t), torch.sigmoid(-t)


def sample_beta(
    a: float | torch.Tensor,
    b: float | torch.Tensor,
    shape: int | tuple[int, ...],
    *,
    generator: noise.Generatorish = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    r"""Samples of :math:`Beta(a, b)` of the given ``shape``: :math:`G_a / (G_a + G_b)`.

    :math:`G_a \sim Gamma(a, 1)` and :math:`G_b \sim Gamma(b, 1)` independent, by the
    Marsaglia-Tsang sampler with fixed oversampling (:func:`_log_gamma`: static shapes,
    no host synchronisation). ``a`` and ``b`` are positive floats or tensors
    broadcastable to ``shape``. Not differentiable in ``a``, ``b`` (none of our uses
    needs it).
    """
    for value, name in ((a, "a"), (b, "b")):
        if isinstance(value, torch.Tensor):
            if checks.checks_enabled():
                if not bool(torch.isfinite(value).all()):
                    raise checks.NonFiniteInputError(f"{name} contains NaN or Inf")
                if not bool((value > 0).all()):
                    raise ValueError(f"{name} must be finite and > 0")
        else:
            checks.check_positive(value, name)
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    z, _ = _beta_pair(a, b, shape, generator, dtype, device)
    return z


# --------------------------------------------------------------- radial parts

#: Wood proposals per vMF radial variate. Wood's acceptance rate, computed by quadrature
#: over d in [2, 2048] and kappa in [0, 1e6] (tests/test_sphere.py checks a grid), is
#: smallest at d = 2, kappa -> infinity, where it tends to 0.658; so all 32 proposals
#: fail with probability < 0.343^32 < 1e-14.
_WOOD_PROPOSALS = 32


def _radial_vmf(
    kappa: float, d: int, count: int, generator: noise.Generatorish, device
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Wood's (1994) rejection sampler for :math:`w = \epsilon^\top\theta`, vMF on S^{d-1}.

    Returns ``(w, 1 - w)``, float64, shape (count,). With :math:`m - 1 = d - 1`,

    .. math::

        b = \frac{m-1}{2\kappa + \sqrt{4\kappa^2 + (m-1)^2}},\quad
        a = \frac{m - 1 + 2\kappa + \sqrt{4\kappa^2 + (m-1)^2}}{4},\quad
        d_0 = \frac{4ab}{1+b} - (m-1)\ln(m-1);

    draw :math:`e \sim Beta(\frac{m-1}{2}, \frac{m-1}{2})`, :math:`u \sim U(0, 1)`, set
    :math:`w = \frac{1-(1+b)e}{1-(1-b)e}`, :math:`t = \frac{2ab}{1-(1-b)e}`, and accept if
    :math:`(m-1)\ln t - t + d_0 \ge \ln u`. This ``b`` is the textbook
    :math:`(-2\kappa + \sqrt{4\kappa^2+(m-1)^2})/(m-1)` with the cancellation removed,
    and :math:`1 - w = 2be / (1-(1-b)e)` exactly. :data:`_WOOD_PROPOSALS` proposals per
    sample are drawn at once (:func:`_first_accepted`): static shapes, no host sync.
    """
    m1 = float(d - 1)
    root = math.sqrt(4.0 * kappa * kappa + m1 * m1)
    b = m1 / (2.0 * kappa + root)
    a = (m1 + 2.0 * kappa + root) / 4.0
    d0 = 4.0 * a * b / (1.0 + b) - m1 * math.log(m1)
    shape = (_WOOD_PROPOSALS, count)
    e, _ = _beta_pair(m1 / 2.0, m1 / 2.0, shape, generator, torch.float64, device)
    u = noise.rand(shape, generator, dtype=torch.float64, device=device)
    t = (2.0 * a * b) / (1.0 - (1.0 - b) * e)
    accept = (m1 * torch.log(t) - t + d0) >= torch.log(u)
    e, t = _first_accepted(accept, e, t)
    # w = 1 - (1 - w) with 1 - w = 2be / denom = b e t / (a b) = e t / a.
    omw = e * t / a
    return 1.0 - omw, omw


def _radial_power(
    kappa: float, d: int, count: int, generator: noise.Generatorish, device
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(w, 1 - w)`` under the power spherical law: w = 2z - 1, z ~ Beta((d-1)/2 + kappa, (d-1)/2).

    Float64, shape (count,); 1 - w = 2 (1 - z) is taken from the gamma ratio, not by subtraction.
    """
    half = (d - 1) / 2.0
    z, one_minus_z = _beta_pair(half + kappa, half, (count,), generator, torch.float64, device)
    return z - one_minus_z, 2.0 * one_minus_z


_RADIAL = {"vmf": _radial_vmf, "power": _radial_power}


# ------------------------------------------------------------- reflection


def rowdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise dot products of broadcastable (..., d) tensors, shape (..., 1) (one matmul)."""
    return (a.unsqueeze(-2) @ b.unsqueeze(-1)).squeeze(-1)


def householder_reflector(unit: torch.Tensor, e1: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(s, u)`` of :func:`householder_from_e1` for unit locations (..., d): (..., 1), (..., d).

    ``e1`` is the first basis vector, (d,) or (1, d), if the caller has it.
    """
    if e1 is None:
        e1 = torch.eye(1, unit.shape[-1], dtype=unit.dtype, device=unit.device)[0]
    one = e1[..., :1]
    positive = unit[..., :1].detach() > 0
    sign = torch.where(positive, -one, one)
    u = torch.addcmul(e1, sign, unit, value=-1.0)  # e1 - s * unit
    return sign, u / u.norm(dim=-1, keepdim=True)


def reflect(samples: torch.Tensor, sign: torch.Tensor, u: torch.Tensor,
             xu: torch.Tensor | None = None) -> torch.Tensor:
    r""":math:`s (x - 2 (x^\top u) u)` for samples (..., d), broadcasting ``sign``, ``u``;
    ``xu`` is :math:`x^\top u` if the caller has it."""
    xu = rowdot(samples, u) if xu is None else xu
    return sign * torch.addcmul(samples, xu, u, value=-2.0)


def householder_from_e1(samples: torch.Tensor, loc: torch.Tensor) -> torch.Tensor:
    r"""Map samples drawn around :math:`e_1` to samples around ``loc`` (reparameterised).

    With :math:`\hat\epsilon = loc / \|loc\|`, a sign :math:`s = -\operatorname{sign}
    (\hat\epsilon_1)` (:math:`+1` when :math:`\hat\epsilon_1 = 0`) and the Householder
    reflection :math:`H = I - 2uu^\top`, :math:`u = (e_1 - s\hat\epsilon)/\|e_1 - s\hat\epsilon\|`,
    returns :math:`s H x`. Since :math:`H e_1 = s\hat\epsilon`, this maps :math:`e_1` to
    :math:`\hat\epsilon`, is orthogonal, and keeps the radial coordinate:
    :math:`\hat\epsilon^\top (sHx) = x_1`. Choosing :math:`s` so that
    :math:`\|e_1 - s\hat\epsilon\| \ge \sqrt 2` avoids the 0/0 of the plain reflection at
    ``loc`` = :math:`e_1`; the map differs between the two signs only by an orthogonal map
    of the tangent space, under which the tangent law (uniform) is invariant.

    ``loc`` need not be unit; it is normalised here, so the gradient it receives is
    tangent to the sphere. Shapes: ``samples`` (..., d), ``loc`` broadcastable to it.
    Differentiable in both (``s`` is piecewise constant).
    """
    return reflect(samples, *householder_reflector(loc / loc.norm(dim=-1, keepdim=True)))


def around_e1(
    kappa: float,
    d: int,
    count: int,
    distribution: str,
    generator: noise.Generatorish,
    dtype: torch.dtype,
    device,
) -> torch.Tensor:
    """``count`` samples of ``distribution`` (``"vmf"``/``"power"``) around :math:`e_1`, (count, d).

    Stage 1 of the module docstring: the radial part, then one ``randn`` of shape
    (count, d - 1) for the tangent directions. No validation (internal building block).
    """
    w, omw = _RADIAL[distribution](kappa, d, count, generator, device)
    v = noise.randn((count, d - 1), generator, dtype=dtype, device=device)
    v = v / v.norm(dim=-1, keepdim=True)
    # sqrt(1 - w^2) = sqrt((1 - w)(1 + w)) with 1 - w exact: no cancellation near w = 1.
    radius = torch.sqrt((omw * (2.0 - omw)).clamp_min(0.0))
    w, radius = w.to(dtype).unsqueeze(-1), radius.to(dtype).unsqueeze(-1)
    return torch.cat((w, radius * v), dim=-1)


def _sample_around(
    locs: torch.Tensor,
    lead: tuple[int, ...],
    kappa: float,
    distribution: str,
    generator: noise.Generatorish,
) -> torch.Tensor:
    """Samples of shape (*lead, d) around ``locs``, which broadcasts to that shape.

    Broadcasting (rather than expanding ``locs`` per sample) keeps the reflection
    vectors at one per location.
    """
    d = locs.shape[-1]
    samples = around_e1(kappa, d, math.prod(lead), distribution, generator, locs.dtype,
                        locs.device)
    return householder_from_e1(samples.reshape(*lead, d), locs)


def _validate(
    loc: torch.Tensor, kappa: float, n: int, ndims: tuple[int, ...], name: str = "loc"
) -> float:
    checks.check_tensor(loc, name, ndims=ndims)
    if loc.shape[-1] < 2:
        raise ValueError(
            f"{name} must have dimension d >= 2 (points of S^(d-1)), got d = {loc.shape[-1]}"
        )
    if checks.checks_enabled() and not bool((loc.norm(dim=-1) > 0).all()):
        raise ValueError(f"{name} must be non-zero (it is normalised onto the sphere)")
    checks.check_count(n, "n", minimum=0)
    return checks.check_positive(kappa, "kappa", allow_zero=True)


def _sample_at(loc: torch.Tensor, kappa, n: int, distribution: str, generator) -> torch.Tensor:
    kappa = _validate(loc, kappa, n, ndims=(1, 2))
    return _sample_around(loc.unsqueeze(-2), (*loc.shape[:-1], n), kappa, distribution, generator)


def sample_von_mises_fisher(
    loc: torch.Tensor,
    kappa: float,
    n: int,
    *,
    generator: noise.Generatorish = None,
) -> torch.Tensor:
    r"""``n`` samples of the von Mises-Fisher distribution :math:`vMF(\epsilon, \kappa)` on S^{d-1}.

    Density :math:`\propto \exp(\kappa\, \epsilon^\top \theta)`; :math:`\kappa = 0` is the
    uniform distribution. Radial part by Wood's rejection sampler (vectorised over all
    samples, see :func:`_radial_vmf`), then :func:`householder_from_e1`.

    Args:
        loc: the mean direction :math:`\epsilon`, shape (d,) or (k, d) for k locations;
            d >= 2; normalised internally.
        kappa: concentration, finite and >= 0.
        n: samples per location.
        generator: source of randomness (draws happen on its device).

    Returns:
        (n, d) for 1-D ``loc``, (k, n, d) for 2-D ``loc``; dtype and device of ``loc``;
        differentiable in ``loc`` (reparameterised).
    """
    return _sample_at(loc, kappa, n, "vmf", generator)


def sample_power_spherical(
    loc: torch.Tensor,
    kappa: float,
    n: int,
    *,
    generator: noise.Generatorish = None,
) -> torch.Tensor:
    r"""``n`` samples of the power spherical distribution :math:`PS(\epsilon, \kappa)` on S^{d-1}.

    Density :math:`\propto (1 + \epsilon^\top\theta)^\kappa` (De Cao & Aziz 2020): the
    radial part is :math:`2z - 1`, :math:`z \sim Beta((d-1)/2 + \kappa, (d-1)/2)`, so no
    rejection loop (and no host synchronisation) is needed. Arguments and shapes as
    :func:`sample_von_mises_fisher`.
    """
    return _sample_at(loc, kappa, n, "power", generator)


def sample_spherical_mixture(
    locs: torch.Tensor,
    kappa: float,
    n: int,
    *,
    distribution: Distribution = "vmf",
    generator: noise.Generatorish = None,
) -> torch.Tensor:
    r"""``n`` samples of the uniform mixture :math:`\frac1k \sum_i D(\epsilon_i, \kappa)`.

    ``D`` is vMF (``distribution="vmf"``) or power spherical (``"power"``). Stratified:
    component i receives exactly :math:`\lfloor n/k \rfloor` or :math:`\lceil n/k \rceil`
    draws, the :math:`n \bmod k` extra draws going to components chosen at random (so
    the mixture weights stay uniform in expectation). Rows are grouped by component,
    in component order.

    Args:
        locs: (k, d) component locations, normalised internally.
        kappa, n, generator: as :func:`sample_von_mises_fisher`.

    Returns:
        (n, d), dtype and device of ``locs``, differentiable in ``locs``.
    """
    kappa = _validate(locs, kappa, n, ndims=(2,), name="locs")
    checks.check_choice(distribution, "distribution", DISTRIBUTIONS)
    k = locs.shape[0]
    # One component: broadcast its location instead of gathering it n times.
    per_sample = locs if k == 1 else locs[mixture_components(k, n, generator, locs.device)]
    return _sample_around(per_sample, (n,), kappa, distribution, generator)


def mixture_components(k: int, n: int, generator: noise.Generatorish, device) -> torch.Tensor:
    r"""Component index of each of ``n`` stratified rows of a uniform k-mixture, (n,) int64.

    Every component gets :math:`\lfloor n/k \rfloor` rows, the :math:`n \bmod k` extra ones
    go to the first components of one ``noise.randperm(k)`` (drawn only when
    :math:`k \nmid n`), and rows are grouped by component in component order. Built on
    the device with static shapes (no host synchronisation).
    """
    per, extra = divmod(n, k)
    index = torch.arange(k * per, device=device) // max(per, 1)
    if extra:
        chosen = noise.randperm(k, generator, device=device)[:extra]
        index = torch.sort(torch.cat((index, chosen))).values
    return index


# ------------------------------------------------------------ mean lengths


def vmf_mean_resultant_length(kappa: float, d: int) -> float:
    r"""vMF mean resultant length on S^{d-1}: :math:`E[\epsilon^\top\theta]`.

    :math:`A_d(\kappa) = I_{d/2}(\kappa) / I_{d/2-1}(\kappa)`, computed with the
    exponentially scaled Bessel functions (``scipy.special.ive``); when
    both underflow (small kappa, large d) by the continued fraction
    :math:`I_\nu/I_{\nu-1} = 1/(2\nu/\kappa + I_{\nu+1}/I_\nu)`, which then converges fast.
    """
    kappa = float(kappa)
    if kappa == 0.0:
        return 0.0
    nu = d / 2.0
    num, den = special.ive(nu, kappa), special.ive(nu - 1.0, kappa)
    if den > 1e-280 and np.isfinite(num):
        return float(num / den)
    ratio = 0.0
    for j in range(400, -1, -1):
        ratio = 1.0 / (2.0 * (nu + j) / kappa + ratio)
    return ratio


def power_spherical_mean_resultant_length(kappa: float, d: int) -> float:
    r"""Power spherical mean resultant length: :math:`E[\epsilon^\top\theta] = \kappa/(\kappa+d-1)`.

    From :math:`E[2z - 1]` with :math:`z \sim Beta(\alpha, \beta)`,
    :math:`\alpha = (d-1)/2 + \kappa`, :math:`\beta = (d-1)/2`:
    :math:`(\alpha - \beta)/(\alpha + \beta)`.
    """
    return float(kappa) / (float(kappa) + d - 1.0)
