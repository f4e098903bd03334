r"""Drop-in ``torch.nn.Module`` losses for otae's discrepancies (as GeomLoss's ``SamplesLoss``).

Each module stores the options of one function of :mod:`otae.discrepancies` and its
``forward`` returns exactly what that function returns at those options (value and
gradients), so it slots into any training loop::

    loss_fn = SlicedFGWLoss(beta=0.1, n_projections=50, seed=0)
    loss = reconstruction + gamma * loss_fn(codes, prior_samples)

otae's own models hold these modules (``model.discrepancy_loss``): there is one
implementation of each regulariser. The settings are checked when a module is built: a
bad one (``SlicedFGWLoss(beta=-1.0)``) raises a ``ValueError`` naming the argument and
what it accepts, not an error at the first call.

Randomness. A module built with ``seed=`` owns a CPU ``torch.Generator`` (its draws are
moved to the inputs' device) and keeps its state in the buffer ``generator_state``,
refreshed whenever ``state_dict()`` is taken and restored by ``load_state_dict()``:
a checkpoint of a model holding the module resumes the same random directions. A
``generator=`` passed to ``forward`` overrides the owned one (otae's models pass the
trainer's generator, which may be an :mod:`otae.noise` recorder or tape). Without
``seed`` nothing is added to the state dict except real state (the spherical modules'
``locations``), and draws come from ``generator=`` or torch's global generator.

``torch.compile``. Every module runs under ``torch.compile`` (e.g.
``backend="aot_eager"``) with the eager values. What breaks a full graph is a
``torch.Generator`` (owned, passed, or the global one): it cannot enter a graph, so a
draw is a graph break. For one graph (``fullgraph=True``) pass pre-drawn
``projections=`` to the sliced modules, or pass an :class:`otae.noise.DrawTape` of
pre-drawn noise as ``generator=`` (what otae's compiled training step does), and
switch off the input checks, which read values back
(``with otae.discrepancies.input_checks(False):``). MMD, Sinkhorn and hierarchical FGW
draw nothing.

Data-parallel training: the value is a function of the whole batch, so under
``DistributedDataParallel`` every rank that holds the same inputs and seed computes the
same loss (gather the codes first, as :mod:`otae.parallel` does for otae's models).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from . import noise
from .discrepancies import (
    hierarchical_fgw,
    max_sliced_fgw,
    mmd,
    sinkhorn,
    sinkhorn_divergence,
    sliced_fgw,
    sliced_wasserstein,
    spherical_sliced_fgw,
)
from .discrepancies.hierarchical import TAU_RULES
from .discrepancies.mmd import KERNELS
from .discrepancies.sinkhorn import GRADIENTS, SUPPORTED_P, annealing_schedule
from .discrepancies.sliced import SCALES
from .sphere import DISTRIBUTIONS, uniform_directions

__all__ = [
    "HierarchicalFGWLoss",
    "MMDLoss",
    "MaxSlicedFGWLoss",
    "SinkhornLoss",
    "SlicedFGWLoss",
    "SlicedWassersteinLoss",
    "SphericalSlicedFGWLoss",
]


# ---------------------------------------------------------------------- settings
# Every constructor checks its settings here, so a bad one fails at construction with
# one ValueError naming the argument and what it accepts (not at the first forward).
def _integer(value: object, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _real(value: object, name: str) -> float:
    if isinstance(value, (bool, str, bytes)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    try:
        return float(value)  # type: ignore[arg-type]  # numbers, 0-d tensors, numpy scalars
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None


def _unit(value: object, name: str) -> None:
    number = _real(value, name)
    if not 0.0 <= number <= 1.0:  # NaN fails too
        raise ValueError(f"{name} must lie in [0, 1], got {value!r}")


def _positive(value: object, name: str, allow_zero: bool = False) -> None:
    number = _real(value, name)
    if not math.isfinite(number) or number < 0.0 or (number == 0.0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")


def _choice(value: object, name: str, choices: tuple) -> None:
    if isinstance(value, bool) or value not in choices:
        raise ValueError(
            f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}"
        )


def _flag(value: object, name: str) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")


def _seed(value: object) -> None:
    # torch.Generator.manual_seed's range
    if value is not None and (
        isinstance(value, bool)
        or not isinstance(value, numbers.Integral)
        or not -(2**63) <= value < 2**64
    ):
        raise ValueError(f"seed must be None or an integer in [-2**63, 2**64), got {value!r}")


class _RandomLoss(nn.Module):
    """A loss that draws noise: an optional owned generator saved in the state dict."""

    def __init__(self, seed: int | None = None) -> None:
        _seed(seed)
        super().__init__()
        self.generator: torch.Generator | None = None
        if seed is not None:
            self.generator = torch.Generator().manual_seed(int(seed))
            self.register_buffer("generator_state", self.generator.get_state())
            self.register_state_dict_pre_hook(_RandomLoss._save_generator)
            self.register_load_state_dict_post_hook(_RandomLoss._restore_generator)

    @staticmethod
    def _save_generator(module: _RandomLoss, prefix: str, keep_vars: bool) -> None:
        module.generator_state = module.generator.get_state()

    @staticmethod
    def _restore_generator(module: _RandomLoss, incompatible_keys: Any) -> None:
        module.generator.set_state(module.generator_state.cpu())

    def _source(self, generator: noise.Generatorish) -> noise.Generatorish:
        """The generator a call draws from: the one passed, else the owned one."""
        return self.generator if generator is None else generator


class SlicedWassersteinLoss(_RandomLoss):
    r"""Sliced squared 2-Wasserstein, :func:`otae.discrepancies.sliced_wasserstein`.

    .. math:: SW_2^2(x, y) \approx \frac1L \sum_l W_2^2(x\theta_l, y\theta_l),
              \quad \theta_l \sim U(S^{d-1}).

    Args:
        n_projections: L, random directions per call (ignored with ``projections=``).
        seed: own a generator seeded so (saved in the state dict); default: none.

    ``forward(x, y, *, a=None, b=None, projections=None, generator=None)``: (N, d)
    and (M, d) clouds, optional sample weights ``a``, ``b`` (1-D, each summing to 1),
    pre-drawn (d, L) directions (no draw: the full-graph path), a generator overriding
    the owned one.

    Example::

        >>> loss_fn = SlicedWassersteinLoss(n_projections=20, seed=0)
        >>> value = loss_fn(torch.randn(64, 8), torch.randn(64, 8))
    """

    def __init__(self, n_projections: int = 50, seed: int | None = None) -> None:
        n_projections = _integer(n_projections, "n_projections", 1)
        super().__init__(seed)
        self.n_projections = n_projections

    def forward(self, x: Tensor, y: Tensor, *, a: Tensor | None = None,
                b: Tensor | None = None, projections: Tensor | None = None,
                generator: noise.Generatorish = None) -> Tensor:
        return sliced_wasserstein(x, y, n_projections=self.n_projections,
                                  projections=projections, generator=self._source(generator),
                                  a=a, b=b)


class SlicedFGWLoss(_RandomLoss):
    r"""Sliced fused Gromov-Wasserstein, :func:`otae.discrepancies.sliced_fgw` (D-RAE).

    .. math:: SFG_\beta(x, y) \approx \frac1L \sum_l FG_\beta(x\theta_l, y\theta_l)

    with :math:`FG_\beta` the exact 1-D fused GW value (``beta`` weighs the GW part).

    Args:
        beta: weight of the Gromov-Wasserstein part in [0, 1].
        n_projections: L, random directions per call (ignored with ``projections=``).
        scale: ``"mean"`` or ``"rae_authors"`` (see :func:`~otae.discrepancies.sliced_fgw`).
        seed: own a generator seeded so (saved in the state dict); default: none.

    ``forward`` as :class:`SlicedWassersteinLoss`.

    Example::

        >>> loss_fn = SlicedFGWLoss(beta=0.1, n_projections=50, seed=0)
        >>> value = loss_fn(torch.randn(64, 8), torch.randn(64, 8))
    """

    def __init__(self, beta: float = 0.1, n_projections: int = 50, scale: str = "mean",
                 seed: int | None = None) -> None:
        _unit(beta, "beta")
        n_projections = _integer(n_projections, "n_projections", 1)
        _choice(scale, "scale", SCALES)
        super().__init__(seed)
        self.beta, self.n_projections, self.scale = beta, n_projections, scale

    def forward(self, x: Tensor, y: Tensor, *, a: Tensor | None = None,
                b: Tensor | None = None, projections: Tensor | None = None,
                generator: noise.Generatorish = None) -> Tensor:
        return sliced_fgw(x, y, beta=self.beta, n_projections=self.n_projections,
                          projections=projections, generator=self._source(generator),
                          scale=self.scale, a=a, b=b)


class _LocationSearchLoss(_RandomLoss):
    """A warm-started search on the sphere: the found location(s) in the buffer
    ``locations`` ((k, dim), zeros until the first search), updated in training mode only.

    Whether the buffer holds a search result is a host flag (:attr:`searched`), set by a
    training search and recomputed by ``load_state_dict``, so a call never reads the
    buffer back (no host synchronisation): set the buffer through ``load_state_dict``.
    """

    def __init__(self, dim: int, n_locations: int, warm_start: bool, diagnostics: bool,
                 seed: int | None) -> None:
        dim = _integer(dim, "dim", 2)
        n_locations = _integer(n_locations, "n_locations", 1)
        _flag(warm_start, "warm_start")
        _flag(diagnostics, "diagnostics")
        super().__init__(seed)
        self.dim, self.warm_start, self.diagnostics = dim, warm_start, diagnostics
        #: the solver's log of the last call (``diagnostics=True``), detached tensors
        self.last_diagnostics: dict[str, Tensor] | None = None
        self.register_buffer("locations", torch.zeros(n_locations, dim))
        self.searched = False
        self.register_load_state_dict_post_hook(_LocationSearchLoss._refresh_searched)

    @staticmethod
    def _refresh_searched(module: _LocationSearchLoss, incompatible_keys: Any) -> None:
        module.searched = bool((module.locations.norm(dim=-1) > 0).all())

    def initial_locations(self, generator: noise.Generatorish = None,
                          like: Tensor | None = None) -> Tensor | None:
        """The search's starting point(s): the stored location(s) (in the dtype of
        ``like`` if given), or None (random starts)."""
        if not self.warm_start or not self.searched:
            return None
        return self.locations if like is None else self.locations.to(like.dtype)

    def _search(self, x: Tensor, y: Tensor, generator: noise.Generatorish,
                init: Tensor | None, **options: Any) -> tuple[Tensor, Tensor]:
        """Subclass hook: ``(value, found locations)`` for the given options."""
        raise NotImplementedError

    def forward(self, x: Tensor, y: Tensor, *, generator: noise.Generatorish = None) -> Tensor:
        generator = self._source(generator)
        init = self.initial_locations(generator, like=x)
        out = self._search(x, y, generator, init, **({"log": True} if self.diagnostics else {}))
        value, found = out[0], out[1]
        if self.diagnostics:
            self.last_diagnostics = out[2]
        if self.training:
            self.locations.copy_(found.reshape(self.locations.shape))
            self.searched = True
        return value


class SphericalSlicedFGWLoss(_LocationSearchLoss):
    r"""Spherical sliced FGW (SSFG, MSSFG, PSSFG), :func:`otae.discrepancies.spherical_sliced_fgw`.

    .. math:: \max_{\epsilon_{1..k}} \mathbb{E}_{\theta \sim \frac1k \sum_i
              D(\epsilon_i, \kappa)} FG_\beta(x\theta, y\theta),

    D the von Mises-Fisher (``"vmf"``) or power spherical (``"power"``) law: SSFG is
    k = 1 vMF, MSSFG k > 1 vMF, PSSFG k = 1 power. The found locations are kept in
    the buffer ``locations`` (saved) and, with ``warm_start``, start the next search.

    Args:
        dim: d, the dimension of the points (the buffer's width), >= 2.
        beta, kappa, n_projections, n_iters, lr: as the function.
        n_locations: k, the number of mixture components.
        distribution: ``"vmf"`` or ``"power"``.
        warm_start: start each training call's search from the stored location(s).
        seed: own a generator seeded so (saved in the state dict); default: none.
        diagnostics: call the function with ``log=True`` and keep its dict of detached
            tensors in :attr:`last_diagnostics`.

    ``forward(x, y, *, generator=None)``. The search draws its noise from a generator,
    so a full graph needs an :class:`otae.noise.DrawTape` as ``generator=``.

    Example::

        >>> loss_fn = SphericalSlicedFGWLoss(dim=8, n_iters=10, seed=0)
        >>> value = loss_fn(torch.randn(64, 8), torch.randn(64, 8))
    """

    def __init__(self, dim: int, beta: float = 0.1, kappa: float = 50.0,
                 n_projections: int = 10, n_iters: int = 100, lr: float = 0.1,
                 n_locations: int = 1, distribution: str = "vmf", warm_start: bool = True,
                 seed: int | None = None, diagnostics: bool = False) -> None:
        _unit(beta, "beta")
        _positive(kappa, "kappa", allow_zero=True)
        n_projections = _integer(n_projections, "n_projections", 1)
        n_iters = _integer(n_iters, "n_iters", 0)
        _positive(lr, "lr")
        _choice(distribution, "distribution", DISTRIBUTIONS)
        super().__init__(dim, n_locations, warm_start, diagnostics, seed)
        self.beta, self.kappa, self.n_projections = beta, kappa, n_projections
        self.n_iters, self.lr, self.distribution = n_iters, lr, distribution

    @property
    def n_locations(self) -> int:
        return self.locations.shape[0]

    def _search(self, x, y, generator, init, **options):
        return spherical_sliced_fgw(
            x, y, beta=self.beta, kappa=self.kappa, n_projections=self.n_projections,
            n_iters=self.n_iters, lr=self.lr, n_components=self.n_locations,
            distribution=self.distribution, generator=generator, init_locations=init,
            return_locations=True, **options,
        )


class MaxSlicedFGWLoss(_LocationSearchLoss):
    r"""max-SFG, :func:`otae.discrepancies.max_sliced_fgw`.

    .. math:: \max_{\theta \in S^{d-1}} FG_\beta(x\theta, y\theta),

    by ``n_starts`` parallel ascents. The best direction is kept in the (1, dim) buffer
    ``locations``; with ``warm_start`` a training call starts from it plus
    ``n_starts - 1`` fresh uniform directions (drawn first, then the search's draws).

    Args:
        dim: d, the dimension of the points, >= 2.
        beta, n_iters, lr, n_starts: as the function.
        warm_start, seed, diagnostics: as :class:`SphericalSlicedFGWLoss`.

    Example::

        >>> loss_fn = MaxSlicedFGWLoss(dim=8, n_iters=10, seed=0)
        >>> value = loss_fn(torch.randn(64, 8), torch.randn(64, 8))
    """

    def __init__(self, dim: int, beta: float = 0.1, n_iters: int = 100, lr: float = 0.1,
                 n_starts: int = 4, warm_start: bool = True, seed: int | None = None,
                 diagnostics: bool = False) -> None:
        _unit(beta, "beta")
        n_iters = _integer(n_iters, "n_iters", 0)
        _positive(lr, "lr")
        n_starts = _integer(n_starts, "n_starts", 1)
        super().__init__(dim, 1, warm_start, diagnostics, seed)
        self.beta, self.n_iters, self.lr, self.n_starts = beta, n_iters, lr, n_starts

    def initial_locations(self, generator: noise.Generatorish = None,
                          like: Tensor | None = None) -> Tensor | None:
        previous = super().initial_locations(generator, like)
        if previous is None or self.n_starts == 1:
            return previous
        fresh = uniform_directions(self.n_starts - 1, self.dim, generator=generator,
                                   dtype=previous.dtype, device=previous.device)
        return torch.cat((previous, fresh))

    def _search(self, x, y, generator, init, **options):
        return max_sliced_fgw(
            x, y, beta=self.beta, n_iters=self.n_iters, lr=self.lr, n_starts=self.n_starts,
            generator=generator, init_directions=init, return_direction=True, **options,
        )


class HierarchicalFGWLoss(nn.Module):
    r"""Hierarchical FGW between Gaussian mixtures, :func:`otae.discrepancies.hierarchical_fgw`.

    .. math:: \min_{T \in \Pi(\frac1N, \frac1K)} (1-\beta) \langle C^{st}, T\rangle
              + \beta \sum (C^s_{ii'} - C^t_{kk'})^2 T_{ik} T_{i'k'},

    costs the closed-form :math:`W_2^2` between diagonal Gaussian components (P-RAE);
    the plan from proximal-point steps on detached costs.

    Args:
        beta: weight of the GW part in [0, 1]; n_outer, n_inner, tau: solver settings.
        diagnostics: call the function with ``log=True``, keep the dict in
            :attr:`last_diagnostics`.

    ``forward(means, stds, target_means, target_stds)``: (N, d) and (K, d) components.

    Example::

        >>> loss_fn = HierarchicalFGWLoss(beta=0.1)
        >>> value = loss_fn(torch.randn(16, 4), torch.ones(16, 4),
        ...                 torch.randn(10, 4), torch.ones(10, 4))
    """

    def __init__(self, beta: float = 0.1, n_outer: int = 20, n_inner: int = 5,
                 tau: float | str = "centred", diagnostics: bool = False) -> None:
        _unit(beta, "beta")
        n_outer = _integer(n_outer, "n_outer", 0)
        n_inner = _integer(n_inner, "n_inner", 1)
        if tau not in TAU_RULES:
            try:
                _positive(tau, "tau")
            except ValueError:
                raise ValueError(
                    f"tau must be one of {', '.join(map(repr, TAU_RULES))} or a finite number "
                    f"> 0, got {tau!r}"
                ) from None
        _flag(diagnostics, "diagnostics")
        super().__init__()
        self.beta, self.n_outer, self.n_inner, self.tau = beta, n_outer, n_inner, tau
        self.diagnostics = diagnostics
        self.last_diagnostics: dict[str, Tensor] | None = None

    def forward(self, means: Tensor, stds: Tensor, target_means: Tensor,
                target_stds: Tensor) -> Tensor:
        out = hierarchical_fgw(means, stds, target_means, target_stds, beta=self.beta,
                               n_outer=self.n_outer, n_inner=self.n_inner, tau=self.tau,
                               **({"log": True} if self.diagnostics else {}))
        if not self.diagnostics:
            return out
        self.last_diagnostics = out[1]
        return out[0]


class SinkhornLoss(nn.Module):
    r"""Entropic OT: :func:`~otae.discrepancies.sinkhorn` or its debiased divergence.

    .. math:: \langle P_\varepsilon, C\rangle,\ C_{ij} = \|x_i - y_j\|^p
              \quad\text{or}\quad S_\varepsilon = OT_\varepsilon(x, y)
              - \tfrac12 OT_\varepsilon(x, x) - \tfrac12 OT_\varepsilon(y, y)

    (``divergence=True``: :func:`~otae.discrepancies.sinkhorn_divergence`, GeomLoss).

    Args:
        epsilon: entropic regularisation in cost units; p: 1 or 2.
        divergence: the debiased divergence (``n_iters``, ``gradient``,
            ``epsilon_start`` unused) instead of the plain cost (``diameter`` unused).
        n_iters, gradient, epsilon_start, scaling, diameter: as the functions.
        diagnostics: plain cost only; call :func:`sinkhorn` with ``log=True`` and keep
            the dict in :attr:`last_diagnostics`.

    ``forward(x, y, *, a=None, b=None)``: (N, d) and (M, d) points, optional weights.

    Example::

        >>> loss_fn = SinkhornLoss(epsilon=0.1, divergence=True)
        >>> value = loss_fn(torch.randn(64, 8), torch.randn(32, 8))
    """

    def __init__(self, epsilon: float = 0.1, n_iters: int = 100, p: int = 2,
                 divergence: bool = False, gradient: str = "unrolled",
                 epsilon_start: float | None = None, scaling: float = 0.5,
                 diameter: float | None = None, diagnostics: bool = False) -> None:
        _positive(epsilon, "epsilon")
        n_iters = _integer(n_iters, "n_iters", 1)
        _choice(p, "p", SUPPORTED_P)
        _flag(divergence, "divergence")
        _choice(gradient, "gradient", GRADIENTS)
        if epsilon_start is not None:
            _positive(epsilon_start, "epsilon_start")
        _positive(scaling, "scaling")
        if not scaling < 1.0:
            raise ValueError(f"scaling must lie in (0, 1), got {scaling!r}")
        if diameter is not None:
            _positive(diameter, "diameter")
        _flag(diagnostics, "diagnostics")
        if divergence and diagnostics:
            raise ValueError("diagnostics=True needs divergence=False (the plain Sinkhorn cost)")
        if not divergence:  # the annealing must leave iterations at epsilon
            annealing_schedule(float(epsilon), n_iters, epsilon_start, float(scaling))
        super().__init__()
        self.epsilon, self.n_iters, self.p, self.divergence = epsilon, n_iters, p, divergence
        self.gradient, self.epsilon_start, self.scaling = gradient, epsilon_start, scaling
        self.diameter, self.diagnostics = diameter, diagnostics
        self.last_diagnostics: dict[str, Tensor] | None = None

    def forward(self, x: Tensor, y: Tensor, *, a: Tensor | None = None,
                b: Tensor | None = None) -> Tensor:
        if self.divergence:
            return sinkhorn_divergence(x, y, epsilon=self.epsilon, p=self.p, a=a, b=b,
                                       scaling=self.scaling, diameter=self.diameter)
        out = sinkhorn(x, y, epsilon=self.epsilon, n_iters=self.n_iters, p=self.p, a=a, b=b,
                       gradient=self.gradient, epsilon_start=self.epsilon_start,
                       scaling=self.scaling, **({"log": True} if self.diagnostics else {}))
        if not self.diagnostics:
            return out
        self.last_diagnostics = out[1]
        return out[0]


class MMDLoss(nn.Module):
    r"""Unbiased squared MMD, :func:`otae.discrepancies.mmd` (WAE-MMD).

    .. math:: \widehat{MMD}^2 = \overline{k(x_i, x_j)}_{i \ne j}
              + \overline{k(y_i, y_j)}_{i \ne j} - 2\, \overline{k(x_i, y_j)},

    with the IMQ kernel :math:`\sum_s Cs / (Cs + \|a - b\|^2)` or the Gaussian one,
    :math:`C = 2 d \sigma^2`. Unbiased: it can be negative.

    Args:
        kernel: ``"imq"`` or ``"gaussian"``; scale: :math:`\sigma^2` (None: 1);
        scales: multipliers s (``otae.discrepancies.mmd.WAE_SCALES``: the WAE code's).

    ``forward(x, y, *, a=None, b=None)``: optional sample weights (1-D, summing to 1).

    Example::

        >>> loss_fn = MMDLoss(kernel="imq")
        >>> value = loss_fn(torch.randn(64, 8), torch.randn(64, 8))
    """

    def __init__(self, kernel: str = "imq", scale: float | None = None,
                 scales: Sequence[float] = (1.0,)) -> None:
        _choice(kernel, "kernel", KERNELS)
        if scale is not None:
            _positive(scale, "scale")
        if isinstance(scales, (str, bytes)) or not isinstance(scales, Sequence) or not scales:
            raise ValueError(
                f"scales must be a non-empty sequence of finite numbers > 0, got {scales!r}"
            )
        for i, multiplier in enumerate(scales):
            _positive(multiplier, f"scales[{i}]")
        super().__init__()
        self.kernel, self.scale, self.scales = kernel, scale, tuple(scales)

    def forward(self, x: Tensor, y: Tensor, *, a: Tensor | None = None,
                b: Tensor | None = None) -> Tensor:
        return mmd(x, y, kernel=self.kernel, scale=self.scale, scales=self.scales,
                   a=a, b=b)
