"""Learnable implicit meta-priors of GWAE (Nakagawa et al., ICLR 2023, Sec. 4.2).

GWAE only ever *samples* its prior (the relational GW term and the critic work
from samples), so the prior can be any reparameterised pushforward ``z = g(eps)``
of fixed noise; restricting the family of ``g`` is how a meta-prior is imposed.
The families follow the authors' code (``ganmodokix/gwae``, ``build_sampler``):

* :class:`NeuralPrior` (``neural``): ``eps ~ N(0, I_d)`` through an MLP
  ``d -> 4d -> 4d -> 4d -> d`` with :class:`LeakySiLU` after each hidden layer;
* :class:`FactorisedNeuralPrior` (``factorised_neural``, the disentanglement
  meta-prior): the same network applied to each coordinate on its own (width 4 per
  coordinate), so ``z_k`` depends on ``eps_k`` only;
* :class:`FactorisedUniformPrior` (``factorised_uniform``): ``U[-sqrt 3, sqrt 3]^d``,
  unit variance, no parameters (``factorised_normal`` is
  :class:`~otae.priors.gaussian.StandardNormalPrior`);
* :class:`GumbelMixturePrior` (``gmm`` for GWAE, the clustering meta-prior): a
  mixture of ``K`` full-covariance Gaussians whose component is drawn by Gumbel-max.

The learnt families end in a batch normalisation without affine parameters
(momentum 0.5, as the authors): in training mode every batch of samples is
standardised per coordinate, so the prior's location and scale are fixed and only
its shape is learnt; in evaluation mode the running statistics are used. The layer
before it has no bias (the authors' has one): the normalisation cancels any bias, so
its gradient is zero up to rounding, which per-coordinate optimisers such as RMSprop
turn into full-size steps of random sign. The family of priors is the same. Initial
weights are drawn with the ``generator`` given to the constructor, with
``nn.Linear``'s default law (uniform in ``+-1/sqrt(fan_in)``), so a prior is
reproducible from a seed alone.

:class:`FactorisedQuantilePrior` is otae's earlier factorised prior (a monotone
tanh quantile map per coordinate, no normalisation), kept as
``factorised_quantile``; docs/gwae.md reports how it compares.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .. import noise
from .base import Prior

#: samples used by :meth:`_ImplicitPrior.component_means`, and the seed they are drawn with
MEAN_SAMPLES = 4096
MEAN_SEED = 0
#: momentum of the output batch normalisation (the authors' ``BATCHNORM_MOMENTUM``)
NORM_MOMENTUM = 0.5
#: hidden width per latent coordinate of the authors' samplers
WIDTH_RATIO = 4


def _uniform(shape: Sequence[int], bound: float, generator: torch.Generator | None) -> Tensor:
    return (2.0 * torch.rand(*shape, generator=generator) - 1.0) * bound


def _inverse_softplus(y: float) -> float:
    return y + math.log(-math.expm1(-y))


class LeakySiLU(nn.Module):
    """``(1 - a) * silu(x) + a * x``: SiLU with a linear leak of slope ``a`` (authors' 0.2)."""

    def __init__(self, negative_slope: float = 0.2) -> None:
        super().__init__()
        self.negative_slope = float(negative_slope)

    def forward(self, x: Tensor) -> Tensor:
        return (1.0 - self.negative_slope) * F.silu(x) + self.negative_slope * x

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"


def _output_norm(latent_dim: int) -> nn.BatchNorm1d:
    norm = nn.BatchNorm1d(latent_dim, momentum=NORM_MOMENTUM, affine=False)
    # prior samples are drawn for the global batch on every rank in data-parallel
    # training: the data-parallel conversion must not sum these statistics over ranks
    norm.sees_global_batch = True
    return norm


class _ImplicitPrior(Prior):
    """A one-component pushforward ``z = transform(eps)`` of ``eps ~ N(0, I_noise_dim)``."""

    noise_dim: int

    def transform(self, eps: Tensor) -> Tensor:
        """The pushforward ``g``: ``(n, noise_dim)`` noise to ``(n, latent_dim)`` codes."""
        raise NotImplementedError

    def sample(self, n: int, generator: noise.Generatorish = None) -> Tensor:
        return self.transform(self._noise(n, generator, self.noise_dim))

    def component_means(self) -> Tensor:
        """``(1, d)``: mean of :data:`MEAN_SAMPLES` samples drawn with seed :data:`MEAN_SEED`.

        Deterministic for fixed parameters; computed in evaluation mode and without
        gradient (plots only), so it never moves normalisation statistics.
        """
        generator = torch.Generator(device=self._device()).manual_seed(MEAN_SEED)
        was_training = self.training
        try:
            self.eval()
            with torch.no_grad():
                return self.sample(MEAN_SAMPLES, generator).mean(0, keepdim=True)
        finally:
            self.train(was_training)


def _linear(fan_in: int, fan_out: int, generator: torch.Generator | None,
            bias: bool = True) -> nn.Linear:
    linear = nn.Linear(fan_in, fan_out, bias=bias)
    bound = 1.0 / math.sqrt(fan_in)
    with torch.no_grad():
        linear.weight.copy_(_uniform((fan_out, fan_in), bound, generator))
        if bias:
            linear.bias.copy_(_uniform((fan_out,), bound, generator))
    return linear


def _sampler_net(widths: Sequence[int], layer, negative_slope: float) -> nn.Sequential:
    """``layer(fan_in, fan_out, bias)`` between consecutive ``widths``, LeakySiLU between
    them; the last layer has no bias (the output normalisation cancels it)."""
    modules: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        last = i == len(widths) - 2
        modules.append(layer(fan_in, fan_out, not last))
        if not last:
            modules.append(LeakySiLU(negative_slope))
    return nn.Sequential(*modules)


class NeuralPrior(_ImplicitPrior):
    """``z = BN(g(eps))``, ``eps ~ N(0, I_d)``, ``g`` an MLP ``d -> 4d -> 4d -> 4d -> d``.

    :class:`LeakySiLU` (slope 0.2) after each hidden layer; ``BN`` is the output
    normalisation of the module doc. ``hidden`` overrides the hidden widths
    (default ``(4d, 4d, 4d)``, the authors').
    """

    def __init__(
        self,
        latent_dim: int,
        hidden: Sequence[int] | None = None,
        *,
        negative_slope: float = 0.2,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(latent_dim, 1)
        d = self.latent_dim
        self.noise_dim = d
        hidden = (WIDTH_RATIO * d,) * 3 if hidden is None else tuple(int(h) for h in hidden)
        widths = [d, *hidden, d]
        if min(widths) < 1:
            raise ValueError(f"hidden sizes must be >= 1, got {list(hidden)}")
        self.net = _sampler_net(
            widths, lambda i, o, bias: _linear(i, o, generator, bias), negative_slope
        )
        self.norm = _output_norm(d)

    def transform(self, eps: Tensor) -> Tensor:
        return self.norm(self.net(eps))


class GroupedLinear(nn.Module):
    """``d`` independent linear maps, one per coordinate group: ``(n, d, i) -> (n, d, o)``.

    Group ``k`` reads only ``x[:, k, :]`` (a grouped 1x1 convolution). Weights and
    biases are drawn like ``nn.Linear(i, o)``'s, per group.
    """

    def __init__(self, groups: int, fan_in: int, fan_out: int,
                 generator: torch.Generator | None = None, bias: bool = True) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(fan_in)
        self.weight = nn.Parameter(_uniform((groups, fan_out, fan_in), bound, generator))
        self.bias = nn.Parameter(_uniform((groups, fan_out), bound, generator)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        out = torch.einsum("ndi,doi->ndo", x, self.weight)
        return out if self.bias is None else out + self.bias


class FactorisedNeuralPrior(_ImplicitPrior):
    """``z_k = BN_k(g_k(eps_k))``, ``eps ~ N(0, I_d)``: one small network per coordinate.

    Each ``g_k`` is an MLP ``1 -> 4 -> 4 -> 4 -> 1`` with :class:`LeakySiLU` (slope
    0.2), all ``d`` evaluated at once by :class:`GroupedLinear` layers; the output
    normalisation is per coordinate too, so the coordinates of ``z`` are independent
    by construction: the Jacobian of a batch of samples with respect to its noise
    only links equal coordinates (the disentanglement meta-prior).
    """

    def __init__(
        self,
        latent_dim: int,
        hidden: Sequence[int] = (WIDTH_RATIO,) * 3,
        *,
        negative_slope: float = 0.2,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(latent_dim, 1)
        d = self.latent_dim
        self.noise_dim = d
        widths = [1, *(int(h) for h in hidden), 1]
        if min(widths) < 1:
            raise ValueError(f"hidden sizes must be >= 1, got {list(hidden)}")
        self.net = _sampler_net(
            widths, lambda i, o, bias: GroupedLinear(d, i, o, generator, bias), negative_slope
        )
        self.norm = _output_norm(d)

    def transform(self, eps: Tensor) -> Tensor:
        return self.norm(self.net(eps.unsqueeze(-1)).squeeze(-1))


class FactorisedUniformPrior(Prior):
    """``U[-sqrt 3, sqrt 3]^d``: independent coordinates of mean 0 and variance 1."""

    def sample(self, n: int, generator: noise.Generatorish = None) -> Tensor:
        u = noise.rand((int(n), self.latent_dim), generator, device=self._device(),
                       dtype=self._dtype())
        return (2.0 * u - 1.0) * math.sqrt(3.0)

    def log_prob(self, z: Tensor) -> Tensor:
        inside = (z.abs() <= math.sqrt(3.0)).all(dim=1)
        log_density = -self.latent_dim * math.log(2.0 * math.sqrt(3.0))
        return torch.where(inside, log_density, -math.inf).to(z.dtype)

    def component_means(self) -> Tensor:
        return torch.zeros(1, self.latent_dim, device=self._device(), dtype=self._dtype())


#: how GumbelMixturePrior's scale matrices A_k act on the noise (its docstring)
MIXTURE_SCALES = ("column_sums", "matrix")


class GumbelMixturePrior(Prior):
    r"""GWAE's clustering meta-prior: a learnt mixture of ``K`` Gaussians.

    A sample draws its component ``c = argmax_k (log pi_k + g_k)``, ``g_k`` standard
    Gumbel noise (Gumbel-max: ``c ~ Categorical(pi)``), then ``z = BN(mu_c + S_c(eps))``,
    ``eps ~ N(0, I_d)``, with the output normalisation of the module doc. Each component
    has a ``d x d`` parameter matrix ``A_k``; initialisation as the authors':
    ``mu_k ~ N(0, I)``, ``A_k = I + 0.01 * N(0, 1)^{d x d}``, logits ``~ N(0, 1)``.

    ``scales`` says how ``A_k`` acts on the noise:

    * ``"column_sums"`` (default), the authors' code as it runs:
      ``S_k(eps)_i = eps_i * sum_j A_k[j, i]``. Their expression
      ``(eps[:, None, :] * A[c]).sum(dim=1)`` multiplies elementwise and sums over the
      matrix's rows, so each component is a *diagonal* Gaussian whose standard
      deviations are the column sums of ``A_k`` (about ``1 +- 0.01 sqrt(d)`` at
      initialisation);
    * ``"matrix"``: ``S_k(eps) = A_k^T eps``, a full-covariance component
      (covariance ``A_k^T A_k``), what a matrix per component suggests.

    Departure from the authors' code: there the component index comes from a hard
    ``argmax`` alone, so the mixture weights ``pi = softmax(logits)`` never receive a
    gradient and stay at their random initial values. Here the index is a
    *straight-through* Gumbel-softmax: the forward value is exactly the Gumbel-max
    sample above (the same law), and the backward pass uses the gradient of
    ``softmax((log pi + g) / temperature)``, so the weights are learnt.
    ``temperature`` sets only that surrogate gradient.
    """

    def __init__(
        self,
        latent_dim: int,
        n_components: int = 10,
        *,
        temperature: float = 1.0,
        scales: str = "column_sums",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(latent_dim, n_components)
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if scales not in MIXTURE_SCALES:
            raise ValueError(f"scales must be one of {', '.join(MIXTURE_SCALES)}, got {scales!r}")
        k, d = self.n_components, self.latent_dim
        self.temperature = float(temperature)
        self.scale_mode = scales
        self.means = nn.Parameter(torch.randn(k, d, generator=generator))
        self.scales = nn.Parameter(torch.eye(d) + 0.01 * torch.randn(k, d, d, generator=generator))
        self.logits = nn.Parameter(torch.randn(k, generator=generator))
        self.norm = _output_norm(d)

    @property
    def weights(self) -> Tensor:
        """``(K,)`` mixture weights ``softmax(logits)``."""
        return self.logits.softmax(0)

    def _components(self, eps: Tensor) -> Tensor:
        """``(n, K, d)``: ``mu_k + S_k(eps_n)`` for every component."""
        if self.scale_mode == "column_sums":
            return self.means + eps.unsqueeze(1) * self.scales.sum(1)
        return self.means + torch.einsum("ni,kij->nkj", eps, self.scales)

    def _component(self, eps: Tensor, k: int) -> Tensor:
        """``(n, d)``: ``mu_k + S_k(eps_n)`` for component ``k`` alone."""
        if self.scale_mode == "column_sums":
            return self.means[k] + eps * self.scales[k].sum(0)
        return self.means[k] + eps @ self.scales[k]

    def component_covariances(self) -> Tensor:
        """``(K, d, d)`` covariances of the components before the output normalisation:
        ``diag(column sums of A_k)^2`` or ``A_k^T A_k``."""
        if self.scale_mode == "column_sums":
            return torch.diag_embed(self.scales.sum(1).square())
        return self.scales.transpose(1, 2) @ self.scales

    def membership(self, n: int, generator: noise.Generatorish = None) -> Tensor:
        """``(n, K)`` straight-through one-hot component indicators (value: hard one-hot)."""
        u = noise.rand((int(n), self.n_components), generator, device=self._device(),
                       dtype=self._dtype())
        # Gumbel noise -log(-log u); u is in [0, 1): keep it off 0 so the log stays finite
        gumbel = -torch.log(-torch.log(u.clamp_min(torch.finfo(u.dtype).tiny)))
        scores = self.logits.log_softmax(0) + gumbel
        soft = (scores / self.temperature).softmax(1)
        hard = torch.zeros_like(soft).scatter_(1, scores.argmax(1, keepdim=True), 1.0)
        return hard + (soft - soft.detach())

    def sample(self, n: int, generator: noise.Generatorish = None) -> Tensor:
        """Randomness from ``generator``, in order: ``rand (n, K)`` (Gumbel), ``randn (n, d)``."""
        onehot = self.membership(n, generator)
        z = (onehot.unsqueeze(-1) * self._components(self._noise(n, generator))).sum(1)
        return self.norm(z)

    def _normalise_eval(self, z: Tensor) -> Tensor:
        """The output normalisation with its running statistics, whatever the mode."""
        return F.batch_norm(z, self.norm.running_mean, self.norm.running_var,
                            training=False, eps=self.norm.eps)

    def sample_component(self, k: int, n: int, generator: noise.Generatorish = None) -> Tensor:
        """Samples of component ``k``, normalised with the running statistics (a batch of
        one component cannot be standardised by its own statistics)."""
        self._check_component(k)
        eps = self._noise(n, generator)
        return self._normalise_eval(self._component(eps, k))

    def normalised_components(self) -> tuple[Tensor, Tensor]:
        """``(K, d)`` means and ``(K, d, d)`` covariances of the components after the
        output normalisation with its running statistics (an affine map per coordinate)."""
        inv_std = (self.norm.running_var + self.norm.eps).rsqrt()
        means = (self.means - self.norm.running_mean) * inv_std
        cov = self.component_covariances()
        return means, cov * inv_std[:, None] * inv_std[None, :]

    def log_responsibilities(self, z: Tensor) -> Tensor:
        """``(N, K)`` ``log pi_k + log N(z_n; m_k, S_k)`` in the normalised space (float64)."""
        means, cov = (t.detach().double() for t in self.normalised_components())
        z = z.detach().double()
        chol = torch.linalg.cholesky(cov)  # (K, d, d)
        diff = (z.unsqueeze(1) - means).unsqueeze(-1)  # (N, K, d, 1)
        solved = torch.linalg.solve_triangular(chol, diff, upper=False).squeeze(-1)
        maha = solved.square().sum(-1)
        log_det = 2.0 * chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        log_pi = self.logits.detach().double().log_softmax(0)
        return log_pi - 0.5 * (z.shape[1] * math.log(2 * math.pi) + log_det + maha)

    def log_prob(self, z: Tensor) -> Tensor:
        return self.log_responsibilities(z).logsumexp(1).to(z.dtype)

    def component_means(self) -> Tensor:
        return self.normalised_components()[0]


class FactorisedQuantilePrior(_ImplicitPrior):
    """Independent coordinates ``z_k = g_k(eps_k)``, ``eps ~ N(0, I_d)``, no normalisation.

    Each ``g_k`` is a one-hidden-layer network of ``hidden`` tanh units plus a
    linear skip term::

        g_k(e) = b_k + a_k e + sum_h v_kh tanh(w_kh e + c_kh)

    with ``a_k = softplus(.) > 0``. With ``monotone=True`` (default) also
    ``v_kh = softplus(.)`` and ``w_kh = softplus(.)``, so every ``g_k`` is strictly
    increasing: a learnable quantile function. At initialisation ``a_k = 1``,
    ``b_k = 0`` and the tanh part is small, so the prior starts close to ``N(0, I)``.
    """

    def __init__(
        self,
        latent_dim: int,
        hidden: int = 16,
        *,
        monotone: bool = True,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(latent_dim, 1)
        if int(hidden) < 1:
            raise ValueError(f"hidden must be >= 1, got {hidden}")
        self.noise_dim = self.latent_dim
        self.hidden = int(hidden)
        self.monotone = bool(monotone)
        d, h = self.latent_dim, self.hidden
        self.shift = nn.Parameter(torch.zeros(d))
        self.raw_scale = nn.Parameter(torch.full((d,), _inverse_softplus(1.0)))
        self.in_weight = nn.Parameter(torch.randn(d, h, generator=generator))
        self.in_bias = nn.Parameter(torch.randn(d, h, generator=generator))
        out = torch.randn(d, h, generator=generator)
        # small tanh contributions at init: softplus(-4) ~ 0.018 per unit, or N(0, 0.02^2)
        self.out_weight = nn.Parameter(-4.0 + 0.1 * out if self.monotone else 0.02 * out)

    def _weights(self) -> tuple[Tensor, Tensor]:
        if self.monotone:
            return F.softplus(self.in_weight), F.softplus(self.out_weight)
        return self.in_weight, self.out_weight

    def transform(self, eps: Tensor) -> Tensor:
        w, v = self._weights()
        units = torch.tanh(eps.unsqueeze(-1) * w + self.in_bias)  # (n, d, hidden)
        return self.shift + F.softplus(self.raw_scale) * eps + (units * v).sum(-1)


__all__ = [
    "MIXTURE_SCALES",
    "FactorisedNeuralPrior",
    "FactorisedQuantilePrior",
    "FactorisedUniformPrior",
    "GroupedLinear",
    "GumbelMixturePrior",
    "LeakySiLU",
    "NeuralPrior",
]
