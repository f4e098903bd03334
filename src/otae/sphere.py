r"""Distributions on the unit sphere S^{d-1}: pure sampling functions.

Every sampler takes an explicit ``torch.Generator`` (or ``None`` for torch's
global one) so that results are reproducible. This module sits below
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

__all__ = [
    "uniform_directions",
    "gaussian_directions",
    "sample_beta",
    "sample_von_mises_fisher",
    "sample_power_spherical",
    "sample_spherical_mixture",
    "householder_from_e1",
    "vmf_mean_resultant_length",
    "power_spherical_mean_resultant_length",
]

Distribution = Literal["vmf", "power"]
DISTRIBUTIONS = ("vmf", "power")


def uniform_directions(
    n: int,
    dim: int,
    *,
    generator: torch.Generator | None = None,
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
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """``n`` raw N(0, I) vectors, shape (n, dim): the RAE authors' unnormalised directions."""
    g = torch.randn(n, dim, generator=generator, dtype=dtype,
                    device=_sampling_device(generator, device))
    return g.to(device) if device is not None else g


def _sampling_device(generator: torch.Generator | None, device) -> torch.device | str | None:
    """Draw on the generator's device (a CPU generator cannot fill a CUDA tensor)."""
    return generator.device if generator is not None else device


def _checks():
    # Imported lazily: otae.discrepancies imports this module at package import time.
    from .discrepancies import _validation

    return _validation


# --------------------------------------------------------------------------- Beta


def _beta_pair(
    a: float | torch.Tensor,
    b: float | torch.Tensor,
    shape: tuple[int, ...],
    generator: torch.Generator | None,
    dtype: torch.dtype,
    device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(z, 1 - z)`` for z ~ Beta(a, b), both computed as ratios of gammas (no cancellation).

    On the generator's device; the caller moves the result.
    """
    where = _sampling_device(generator, device)
    alpha = torch.broadcast_to(torch.as_tensor(a, dtype=dtype, device=where), shape).contiguous()
    beta = torch.broadcast_to(torch.as_tensor(b, dtype=dtype, device=where), shape).contiguous()
    # torch.distributions.Beta/Gamma cannot take a generator; the raw op can.
    ga = torch._standard_gamma(alpha, generator=generator)
    gb = torch._standard_gamma(beta, generator=generator)
    total = ga + gb
    return ga / total, gb / total


def sample_beta(
    a: float | torch.Tensor,
    b: float | torch.Tensor,
    shape: int | tuple[int, ...],
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    r"""Samples of :math:`Beta(a, b)` of the given ``shape``: :math:`G_a / (G_a + G_b)`.

    :math:`G_a \sim Gamma(a, 1)` and :math:`G_b \sim Gamma(b, 1)` independent. ``a`` and
    ``b`` are positive floats or tensors broadcastable to ``shape``. Not differentiable
    in ``a``, ``b`` (none of our uses needs it).
    """
    checks = _checks()
    for value, name in ((a, "a"), (b, "b")):
        if isinstance(value, torch.Tensor):
            if not bool(torch.isfinite(value).all()):
                raise checks.NonFiniteInputError(f"{name} contains NaN or Inf")
            if not bool((value > 0).all()):
                raise ValueError(f"{name} must be finite and > 0")
        else:
            checks.check_positive(value, name)
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    z, _ = _beta_pair(a, b, shape, generator, dtype, device)
    return z.to(device) if device is not None else z


# --------------------------------------------------------------- radial parts


def _radial_vmf(
    kappa: float, d: int, count: int, generator: torch.Generator | None, device
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
    and :math:`1 - w = 2be / (1-(1-b)e)` exactly.
    """
    m1 = float(d - 1)
    root = math.sqrt(4.0 * kappa * kappa + m1 * m1)
    b = m1 / (2.0 * kappa + root)
    a = (m1 + 2.0 * kappa + root) / 4.0
    d0 = 4.0 * a * b / (1.0 + b) - m1 * math.log(m1)
    where = _sampling_device(generator, device)
    w = torch.empty(count, dtype=torch.float64, device=where)
    omw = torch.empty_like(w)
    filled = 0
    # Vectorised rejection: each round draws candidates for every missing sample at
    # once (with a margin, so that one round usually suffices) and keeps the first
    # accepted ones; accepted candidates are i.i.d. from the target, whatever their order.
    while filled < count:
        need = count - filled
        draw = need + need // 4 + 8
        e, _ = _beta_pair(m1 / 2.0, m1 / 2.0, (draw,), generator, torch.float64, where)
        u = torch.rand(draw, generator=generator, dtype=torch.float64, device=where)
        denom = 1.0 - (1.0 - b) * e
        t = (2.0 * a * b) / denom
        accept = (m1 * torch.log(t) - t + d0) >= torch.log(u)
        got_w = ((1.0 - (1.0 + b) * e) / denom)[accept][:need]
        got_omw = ((2.0 * b) * e / denom)[accept][:need]
        k = got_w.numel()
        w[filled:filled + k] = got_w
        omw[filled:filled + k] = got_omw
        filled += k
    return w, omw


def _radial_power(
    kappa: float, d: int, count: int, generator: torch.Generator | None, device
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(w, 1 - w)`` under the power spherical law: w = 2z - 1, z ~ Beta((d-1)/2 + kappa, (d-1)/2).

    Float64, shape (count,); 1 - w = 2 (1 - z) is taken from the gamma ratio, not by subtraction.
    """
    half = (d - 1) / 2.0
    z, one_minus_z = _beta_pair(half + kappa, half, (count,), generator, torch.float64,
                                _sampling_device(generator, device))
    return z - one_minus_z, 2.0 * one_minus_z


_RADIAL = {"vmf": _radial_vmf, "power": _radial_power}


# ------------------------------------------------------------- reflection


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
    unit = loc / loc.norm(dim=-1, keepdim=True)
    sign = torch.where(unit[..., :1].detach() > 0, -1.0, 1.0).to(unit.dtype)
    u = -sign * unit
    u = torch.cat((u[..., :1] + 1.0, u[..., 1:]), dim=-1)  # e1 - s * unit
    u = u / u.norm(dim=-1, keepdim=True)
    return sign * (samples - 2.0 * (samples * u).sum(-1, keepdim=True) * u)


def _sample_around(
    locs: torch.Tensor,
    lead: tuple[int, ...],
    kappa: float,
    distribution: str,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """Samples of shape (*lead, d) around ``locs``, which broadcasts to that shape.

    Broadcasting (rather than expanding ``locs`` per sample) keeps the reflection
    vectors at one per location.
    """
    d = locs.shape[-1]
    count = math.prod(lead)
    where = _sampling_device(generator, locs.device)
    w, omw = _RADIAL[distribution](kappa, d, count, generator, locs.device)
    v = torch.randn(count, d - 1, generator=generator, dtype=locs.dtype, device=where)
    v = v / v.norm(dim=-1, keepdim=True)
    # sqrt(1 - w^2) = sqrt((1 - w)(1 + w)) with 1 - w exact: no cancellation near w = 1.
    radius = torch.sqrt((omw * (2.0 - omw)).clamp_min(0.0))
    w, radius = w.to(locs.dtype).unsqueeze(-1), radius.to(locs.dtype).unsqueeze(-1)
    around_e1 = torch.cat((w, radius * v), dim=-1)
    around_e1 = around_e1.to(locs.device).reshape(*lead, d)
    return householder_from_e1(around_e1, locs)


def _validate(
    loc: torch.Tensor, kappa: float, n: int, ndims: tuple[int, ...], name: str = "loc"
) -> float:
    checks = _checks()
    checks.check_tensor(loc, name, ndims=ndims)
    if loc.shape[-1] < 2:
        raise ValueError(
            f"{name} must have dimension d >= 2 (points of S^(d-1)), got d = {loc.shape[-1]}"
        )
    if checks._enabled() and not bool((loc.norm(dim=-1) > 0).all()):
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
    generator: torch.Generator | None = None,
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
    generator: torch.Generator | None = None,
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
    generator: torch.Generator | None = None,
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
    checks = _checks()
    kappa = _validate(locs, kappa, n, ndims=(2,), name="locs")
    checks.check_choice(distribution, "distribution", DISTRIBUTIONS)
    k = locs.shape[0]
    if k > 1:
        counts = torch.full((k,), n // k, dtype=torch.long)
        if n % k:
            where = _sampling_device(generator, None)
            extra = torch.randperm(k, generator=generator, device=where)
            counts[extra[: n % k].cpu()] += 1
        index = torch.repeat_interleave(torch.arange(k), counts).to(locs.device)
    # One component: broadcast its location instead of gathering it n times.
    per_sample = locs if k == 1 else locs[index]
    return _sample_around(per_sample, (n,), kappa, distribution, generator)


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
