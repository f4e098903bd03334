"""GWAE (Nakagawa et al., ICLR 2023): Gromov-Wasserstein autoencoder with a learnable meta-prior.

GWAE minimises the GW metric between the (learnable) prior and the data
distribution. It is estimated on the generative side: for ``N`` prior samples
``z'_i`` and their decodings ``x'_i = dec(z'_i)``,

    L_GW = (1 / N^2) sum_{i, j} | (c / s) ||z'_i - z'_j|| - ||x'_i - x'_j|| |

(:func:`relational_gw_loss`), with ``c = exp(log_distance_coef)`` a learnt scalar
and ``s`` the mean per-dimension standard deviation of the batch of prior samples.
Because the generative model only stands in for the data if it matches them, the
objective adds a bound on the Wasserstein distance between the two joints
``p_data(x) q(z|x)`` ("encoder pairs") and ``p(z) p(x|z)`` ("decoder pairs"),
estimated by a critic ``f(x, z)``, a reconstruction term and an entropy term that
keeps the posteriors spread. The optimised total is

    lambda_rec * SSE + gamma * L_GW + lambda_w * W + lambda_h * (-sum_k logvar_k)

where the per-image terms (SSE, -sum logvar) are averaged over the batch
(``reduction="mean"``) or summed (``"sum"``), ``L_GW`` and ``W`` are batch-level.
``W = mean f(x, z) - mean f(x', z')`` is the critic's estimate of W1 between the
joints: the generator (encoder, decoder, prior, ``c``; ONE optimiser) minimises it
through the samples with the critic held fixed; the critic maximises it, minus a
penalty, in :meth:`GWAE.critic_loss`, which a trainer calls ``n_critic`` times per
batch with its own optimiser over :meth:`GWAE.critic_parameters`.

The defaults follow the authors' code (``ganmodokix/gwae``, ``models/gwae.py`` and
``settings/gwae.yaml``); docs/gwae.md compares the two point by point:

* the meta-priors of :mod:`otae.priors.meta` (``neural``, ``factorised_neural``,
  ``factorised_normal``, ``factorised_uniform``, ``gmm``);
* ``c`` is learnt as a logarithm, initialised at ``distance_coef_init = 2.5``;
  ``s`` is the unbiased standard deviation, clamped at 1e-8, not detached (then
  ``L_GW`` is invariant to rescaling the prior samples); the mean is over all
  ``N^2`` ordered pairs, the zero diagonal included;
* the critic (:class:`AuthorsCritic`): spectral-normalised stride-2 convolutions on
  images (an MLP on vector data) and an MLP on codes, their 64-wide features
  averaged into a joint MLP; the penalty is the one-centred gradient penalty at
  ``t * enc + (1 - t) * dec`` plus a drift term ``drift * (mean f_enc^2 + mean
  f_dec^2)``, the sum weighted by ``gp_weight`` (10);
* RMSprop at 1e-4 for both optimisers, batch 64, 5 critic steps per generator step
  on fresh pairs each.

Where otae departs, and why:

* the trainer takes the critic's steps *before* the generator's step on each batch
  (the authors take them after): the same alternation, shifted by half a batch;
* spectral normalisation runs one power iteration per critic step
  (:meth:`AuthorsCritic.power_iteration`), not one per forward pass: the critic
  changes only in its own steps, and a pure forward can be traced by
  ``torch.func`` and ``torch.compile``;
* posterior codes and prior samples go through the decoder in ONE pass
  (:meth:`GWAE.decode_both`), in the generator step and, for a decoder with batch
  statistics, in every critic step. The authors' decoder has no normalisation
  layers, so for it this changes nothing; with batch normalisation, separate passes
  would normalise each set with its own batch statistics in training while
  evaluation uses running statistics of their alternation (measured on ``shapes``: a
  test loss of 106 against 32 with batch statistics, after 2 epochs). A decoder
  without batch statistics decodes only the prior samples in the critic steps (the
  authors decode the codes too, and discard them);
* in :meth:`GWAE.loss` the critic is evaluated with *detached* parameters and the
  critic step draws its pairs without gradient, so neither step leaves gradients
  in the other's parameters (the authors zero them before each step instead).

``critic="mlp"`` keeps otae's earlier critic (:class:`JointCritic`, an MLP on
``concat(flatten(x), z)``), ``prior="factorised_quantile"`` its earlier factorised
prior.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn import functional as F

from .. import noise
from ..priors import GaussianMixturePrior, Prior, StandardNormalPrior
from ..priors.meta import (
    MIXTURE_SCALES,
    FactorisedNeuralPrior,
    FactorisedQuantilePrior,
    FactorisedUniformPrior,
    GumbelMixturePrior,
    NeuralPrior,
)
from .base import Autoencoder, LossTerms, ModelConfig, full_precision, register_model, upcast

#: meta-prior names accepted by ``model.prior`` for GWAE ("normal" = "factorised_normal")
META_PRIORS = (
    "neural", "factorised_neural", "factorised_normal", "factorised_uniform", "gmm",
    "factorised_quantile", "diagonal_gmm", "normal",
)
#: critic architectures: the authors' (default) or otae's earlier MLP on concat(x, z)
CRITICS = ("authors", "mlp")
#: width of the authors' critic features (x and z branches) and of its joint MLP
CRITIC_FEATURES = 64
CRITIC_WIDTH = 256


def _pairwise_distances(a: Tensor) -> Tensor:
    """``(N, N)`` Euclidean distances between the rows of ``a`` (flattened to ``(N, D)``).

    Direct differences rather than the Gram-matrix expansion: exact to rounding for
    images far from the origin, and zero-distance entries have zero gradient.
    """
    flat = a.flatten(1)
    return torch.cdist(flat, flat, compute_mode="donot_use_mm_for_euclid_dist")


def relational_gw_loss(
    z: Tensor, x: Tensor, coef: Tensor | float, *, detach_scale: bool = False
) -> Tensor:
    """GWAE's relational term ``(1/N^2) sum_{i,j} |(coef / s) ||z_i - z_j|| - ||x_i - x_j|||``.

    ``z`` ``(N, d)`` are prior samples, ``x`` ``(N, ...)`` their decodings (any
    trailing shape, flattened), ``coef`` a scalar, ``s = max(mean_k std(z[:, k]),
    1e-8)`` (unbiased std; detached if ``detach_scale``). The mean runs over all
    ``N^2`` ordered pairs, the zero diagonal included, as in the authors' code: it is
    ``(N - 1) / N`` times the mean over pairs ``i != j``. Needs ``N >= 2``.
    """
    n = z.shape[0]
    if z.dim() != 2 or x.shape[0] != n:
        raise ValueError(
            f"relational_gw_loss expects z (N, d) and x (N, ...), got {tuple(z.shape)} "
            f"and {tuple(x.shape)}"
        )
    if n < 2:
        raise ValueError(f"relational_gw_loss needs at least 2 samples, got {n}")
    scale = z.std(dim=0).mean().clamp_min(1e-8)
    if detach_scale:
        scale = scale.detach()
    return (coef / scale * _pairwise_distances(z) - _pairwise_distances(x)).abs().mean()


class SpectralNormalised(nn.Module):
    """A linear or convolution layer whose weight is divided by its spectral norm.

    ``sigma = u^T W v`` with ``W`` the weight flattened to ``(out, -1)`` and ``u, v``
    buffers kept by :meth:`power_iteration` (Miyato et al., ICLR 2018). Unlike
    ``torch.nn.utils.parametrizations.spectral_norm``, the forward pass never updates
    ``u`` and ``v``: it is a pure function of parameters and buffers (so
    ``torch.func.grad`` and ``torch.compile`` trace it), and the caller runs the
    iteration when the weights have changed. The gradient flows through ``W`` in
    ``sigma`` too, as in torch's version.
    """

    def __init__(self, layer: nn.Linear | nn.Conv2d, eps: float = 1e-12) -> None:
        super().__init__()
        self.layer = layer
        self.eps = float(eps)
        weight = layer.weight
        like = {"dtype": weight.dtype, "device": weight.device}
        # drawn from torch's global RNG like the layer's weights (seed it for reproducibility)
        u = torch.randn(weight.shape[0], **like)
        v = torch.randn(weight[0].numel(), **like)
        self.register_buffer("u", F.normalize(u, dim=0, eps=self.eps))
        self.register_buffer("v", F.normalize(v, dim=0, eps=self.eps))
        self.power_iteration()

    @torch.no_grad()
    def power_iteration(self) -> None:
        """One step of the power method on the current weight (in place, no gradient)."""
        w = self.layer.weight.flatten(1)
        self.v.copy_(F.normalize(w.t() @ self.u, dim=0, eps=self.eps))
        self.u.copy_(F.normalize(w @ self.v, dim=0, eps=self.eps))

    def forward(self, x: Tensor) -> Tensor:
        weight = self.layer.weight
        # sigma in the weights' precision, also under bf16 autocast (a dot product of
        # float32 u, v with a bf16 matrix-vector product fails, and loses digits)
        with torch.autocast(weight.device.type, enabled=False):
            sigma = torch.dot(self.u, weight.flatten(1).to(self.u.dtype) @ self.v)
        normalised = weight / sigma
        if isinstance(self.layer, nn.Conv2d):
            return self.layer._conv_forward(x, normalised, self.layer.bias)
        return F.linear(x, normalised, self.layer.bias)


def _sn_mlp(widths: Sequence[int], last_activation: bool) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        layers.append(SpectralNormalised(nn.Linear(fan_in, fan_out)))
        if last_activation or i < len(widths) - 2:
            layers.append(nn.LeakyReLU(0.2))
    return layers


def _conv_branch(image_shape: Sequence[int]) -> nn.Sequential:
    """Stride-2 4x4 convolutions (8, 16, 32, ... channels) with LeakyReLU(0.2) until the
    image is 1 pixel on its short side, then a linear map to the 64 features: on 64x64
    images exactly the authors' six layers."""
    channels, height, width = (int(s) for s in image_shape)
    layers: list[nn.Module] = []
    out = 8
    while min(height, width) > 1:
        layers += [SpectralNormalised(nn.Conv2d(channels, out, 4, 2, 1)), nn.LeakyReLU(0.2)]
        channels, out = out, out * 2
        height, width = (height - 2) // 2 + 1, (width - 2) // 2 + 1
    layers += [nn.Flatten(), *_sn_mlp([channels * height * width, CRITIC_FEATURES], False)]
    return nn.Sequential(*layers)


class AuthorsCritic(nn.Module):
    """``f(x, z) = joint((x_net(x) + z_net(z)) / 2 ...)``: the GWAE authors' critic.

    ``x_net``: spectral-normalised stride-2 convolutions on images of at least 4x4
    pixels (:func:`_conv_branch`), else an MLP ``D -> 256 -> 256 -> 64`` on the
    flattened input; ``z_net``: MLP ``d -> 256 -> 256 -> 64``; the two 64-wide feature
    vectors are concatenated and halved, then ``joint``: MLP ``128 -> 256 -> 256 -> 1``.
    Every layer is spectral-normalised, with LeakyReLU(0.2) between layers (and after
    ``z_net``'s last, as the authors).
    """

    def __init__(self, image_shape: Sequence[int], latent_dim: int) -> None:
        super().__init__()
        shape = tuple(int(s) for s in image_shape)
        if len(shape) == 3 and min(shape[1:]) >= 4:
            self.x_net = _conv_branch(shape)
        else:
            flat = math.prod(shape)
            self.x_net = nn.Sequential(
                nn.Flatten(), *_sn_mlp([flat, CRITIC_WIDTH, CRITIC_WIDTH, CRITIC_FEATURES], False)
            )
        self.z_net = nn.Sequential(
            *_sn_mlp([int(latent_dim), CRITIC_WIDTH, CRITIC_WIDTH, CRITIC_FEATURES], True)
        )
        self.joint = nn.Sequential(
            *_sn_mlp([2 * CRITIC_FEATURES, CRITIC_WIDTH, CRITIC_WIDTH, 1], False)
        )

    def power_iteration(self) -> None:
        """One power-method step for every spectral-normalised layer."""
        for module in self.modules():
            if isinstance(module, SpectralNormalised):
                module.power_iteration()

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        """``(N,)`` critic values of the pairs ``(x_i, z_i)``."""
        h = torch.cat([self.x_net(x), self.z_net(z)], dim=1) / 2
        return self.joint(h).squeeze(1)


class JointCritic(nn.Module):
    """``f(x, z)``: an MLP on ``concat(flatten(x), z)`` with LeakyReLU(0.2), scalar output."""

    def __init__(
        self, image_shape: Sequence[int], latent_dim: int, hidden: Sequence[int] = (512, 512)
    ) -> None:
        super().__init__()
        width = math.prod(int(s) for s in image_shape) + int(latent_dim)
        layers: list[nn.Module] = []
        for h in hidden:
            layers += [nn.Linear(width, int(h)), nn.LeakyReLU(0.2)]
            width = int(h)
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def power_iteration(self) -> None:
        """No spectral normalisation: nothing to do."""

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        """``(N,)`` critic values of the pairs ``(x_i, z_i)``."""
        return self.net(torch.cat([x.flatten(1), z], dim=1)).squeeze(1)


@dataclass
class GWAEConfig(ModelConfig):
    name: str = "gwae"
    #: meta-prior (:data:`META_PRIORS`, docs/gwae.md): "neural", "factorised_neural",
    #: "factorised_normal", "factorised_uniform", "gmm" (n_components; the authors' mixture
    #: with learnt weights), "factorised_quantile", "diagonal_gmm" (otae's stratified
    #: diagonal mixture)
    prior: str = "neural"
    #: weight of the per-image SSE (the authors' 0.5 * SSE)
    lambda_rec: float = 0.5
    #: weight of the critic's W1 estimate between encoder and decoder pairs
    lambda_w: float = 1.0
    #: weight of -sum_k logvar_k (entropy of the posteriors)
    lambda_h: float = 0.03
    #: weight of the critic's penalty (gradient penalty + drift) and critic steps per batch
    gp_weight: float = 10.0
    n_critic: int = 5
    #: drift term inside the penalty: drift * (mean f_enc^2 + mean f_dec^2)
    drift: float = 1e-4
    #: critic architecture: "authors" (spectral-normalised conv/MLP branches) or "mlp"
    critic: str = "authors"
    #: hidden sizes of the "mlp" critic
    critic_hidden: tuple[int, ...] = (512, 512)
    #: initial value of the learnt latent-to-data distance coefficient c (learnt as log c)
    distance_coef_init: float = 2.5
    #: stop the gradient through the prior samples' scale s in L_GW
    detach_scale: bool = False
    #: hidden sizes of the "neural" sampler; empty: the authors' (4d, 4d, 4d)
    sampler_hidden: tuple[int, ...] = ()
    #: tanh units per coordinate of "factorised_quantile"
    factorised_hidden: int = 16
    #: temperature of the straight-through Gumbel-softmax gradient of "gmm"'s weights
    gumbel_temperature: float = 1.0
    #: how "gmm"'s component matrices scale the noise: "column_sums" (the authors' code as
    #: it runs: diagonal components) or "matrix" (full covariance), GumbelMixturePrior
    gmm_scales: str = "column_sums"
    #: critic steps of a batch draw "fresh" encoder/decoder pairs each (an encoder and a
    #: decoder pass per step, the authors' way), or "shared": the first step's pairs serve
    #: all n_critic steps (one pass per batch; the interpolation points are still redrawn)
    critic_samples: str = "fresh"

    def validate(self) -> None:
        super().validate()
        if self.prior == "factorised":
            raise ValueError(
                "gwae model.prior 'factorised' was renamed: use 'factorised_neural' (the "
                "authors' disentanglement meta-prior) or 'factorised_quantile' (otae's earlier one)"
            )
        if self.prior not in META_PRIORS:
            raise ValueError(
                f"gwae model.prior must be one of {', '.join(META_PRIORS)}, got {self.prior!r}"
            )
        if self.critic not in CRITICS:
            raise ValueError(
                f"model.critic must be one of {', '.join(CRITICS)}, got {self.critic!r}"
            )
        for field in ("lambda_rec", "lambda_w", "lambda_h", "gp_weight", "drift"):
            if getattr(self, field) < 0:
                raise ValueError(f"model.{field} must be >= 0, got {getattr(self, field)}")
        if self.n_critic < 1:
            raise ValueError(f"model.n_critic must be >= 1, got {self.n_critic}")
        if not self.distance_coef_init > 0:
            raise ValueError(
                f"model.distance_coef_init must be > 0, got {self.distance_coef_init}"
            )
        if not self.gumbel_temperature > 0:
            raise ValueError(
                f"model.gumbel_temperature must be > 0, got {self.gumbel_temperature}"
            )
        for field in ("critic_hidden", "sampler_hidden"):
            if any(int(h) < 1 for h in getattr(self, field)):
                raise ValueError(f"model.{field} sizes must be >= 1, got {getattr(self, field)}")
        if self.gmm_scales not in MIXTURE_SCALES:
            raise ValueError(
                f"model.gmm_scales must be one of {', '.join(MIXTURE_SCALES)}, "
                f"got {self.gmm_scales!r}"
            )
        if self.critic_samples not in ("fresh", "shared"):
            raise ValueError(
                f"model.critic_samples must be 'fresh' or 'shared', got {self.critic_samples!r}"
            )
        if self.factorised_hidden < 1:
            raise ValueError(f"model.factorised_hidden must be >= 1, got {self.factorised_hidden}")
        if self.prior == "gmm" and self.n_components < 2:
            raise ValueError("gwae model.prior 'gmm' needs model.n_components >= 2")


def build_meta_prior(config: GWAEConfig, generator: torch.Generator | None = None) -> Prior:
    """The prior named by ``config.prior`` (one of :data:`META_PRIORS`)."""
    d = config.latent_dim
    if config.prior == "neural":
        return NeuralPrior(d, config.sampler_hidden or None, generator=generator)
    if config.prior == "factorised_neural":
        return FactorisedNeuralPrior(d, generator=generator)
    if config.prior in ("factorised_normal", "normal"):
        return StandardNormalPrior(d)
    if config.prior == "factorised_uniform":
        return FactorisedUniformPrior(d)
    if config.prior == "gmm":
        return GumbelMixturePrior(
            d, config.n_components, temperature=config.gumbel_temperature,
            scales=config.gmm_scales, generator=generator,
        )
    if config.prior == "factorised_quantile":
        return FactorisedQuantilePrior(d, config.factorised_hidden, generator=generator)
    if config.prior == "diagonal_gmm":
        return GaussianMixturePrior(d, config.n_components, generator=generator)
    raise ValueError(f"unknown GWAE meta-prior {config.prior!r}; known: {', '.join(META_PRIORS)}")


@register_model("gwae")
class GWAE(Autoencoder):
    """Relational GW term + critic-estimated W bound + reconstruction + entropy (docs/gwae.md)."""

    config_class = GWAEConfig
    probabilistic = True
    has_critic = True
    #: the authors' optimiser and batch size (settings/gwae.yaml), generator and critic
    default_optimizer: ClassVar[dict[str, Any]] = {"name": "rmsprop", "lr": 1e-4}
    default_critic_optimizer: ClassVar[dict[str, Any]] = {"name": "rmsprop", "lr": 1e-4}
    default_batch_size: ClassVar[int] = 64

    config: GWAEConfig

    def __init__(self, config: GWAEConfig, encoder, decoder, prior: Prior) -> None:
        super().__init__(config, encoder, decoder, prior)
        if config.critic == "authors":
            self.critic: AuthorsCritic | JointCritic = AuthorsCritic(
                self.image_shape, config.latent_dim
            )
        else:
            self.critic = JointCritic(self.image_shape, config.latent_dim, config.critic_hidden)
        self.log_distance_coef = nn.Parameter(torch.tensor(math.log(config.distance_coef_init)))
        #: the pairs of the batch's first critic step, with critic_samples="shared"
        self._critic_pairs: tuple[Tensor, Tensor, Tensor] | None = None
        #: the batch's posterior parameters, encoded at its first critic step
        self._critic_posterior: tuple[Tensor, Tensor | None] | None = None

    @classmethod
    def build_prior(cls, config, image_shape, generator):
        return build_meta_prior(config, generator)

    @property
    def distance_coef(self) -> Tensor:
        """The learnt latent-to-data distance coefficient ``c = exp(log_distance_coef)``."""
        return self.log_distance_coef.exp()

    # ------------------------------------------------------------------ pieces
    def gw_term(self, z_prior: Tensor, x_prior: Tensor) -> Tensor:
        """:func:`relational_gw_loss` of prior samples and their decodings with this ``c``."""
        return relational_gw_loss(
            z_prior, x_prior, self.distance_coef, detach_scale=self.config.detach_scale
        )

    def gradient_penalty(self, x_hat: Tensor, z_hat: Tensor) -> Tensor:
        """``mean_i (||grad_{(x, z)} f(x_hat_i, z_hat_i)|| - 1)^2`` (graph kept for the critic)."""
        params = dict(self.critic.named_parameters())

        def summed(x_in: Tensor, z_in: Tensor) -> Tensor:
            return functional_call(self.critic, params, (x_in, z_in)).sum()

        # pairs are independent: the gradient of the sum is each pair's own gradient.
        # torch.func.grad (not autograd.grad) so that torch.compile traces it; the outer
        # backward still reaches the critic's parameters through ``params``
        gx, gz = torch.func.grad(summed, argnums=(0, 1))(x_hat.detach(), z_hat.detach())
        norms = upcast(torch.cat([gx.flatten(1), gz.flatten(1)], dim=1)).norm(dim=1)
        return (norms - 1.0).pow(2).mean()

    def decode_both(self, z: Tensor, z_prior: Tensor) -> tuple[Tensor, Tensor]:
        """Decodings of posterior codes ``z`` and prior samples ``z_prior`` in one decoder pass.

        One batch, so that normalisation layers see the same mixture in training as
        their running statistics hold in evaluation: separate passes would normalise
        each set with its own batch statistics (docs/gwae.md, the measured difference).
        """
        decoded = self.decode(torch.cat([z, z_prior.to(z.dtype)]))
        return decoded[: z.shape[0]], decoded[z.shape[0]:]

    def decoder_mixes_batch(self) -> bool:
        """Whether a decoding depends on the other codes of its batch: a batch-norm layer
        of the decoder normalising with batch statistics (training mode, or no running
        statistics)."""
        return any(
            isinstance(m, nn.modules.batchnorm._BatchNorm)
            and (m.training or not m.track_running_stats)
            for m in self.decoder.modules()
        )

    def _joint_samples(
        self, x: Tensor, generator: noise.Generatorish,
        posterior: tuple[Tensor, Tensor | None] | None = None, reconstruct: bool = True,
    ) -> tuple[Tensor, Tensor | None, Tensor, Tensor, Tensor, Tensor | None]:
        """Encoder pair code ``z`` and its ``logvar``; the prior samples of the whole batch;
        this rank's decoder pairs ``(z_prior, x_prior)``; the reconstructions ``dec(z)``.

        ``posterior``: the batch's ``(mean, logvar)`` if already encoded. Randomness from
        ``generator``, in order: posterior draw, prior samples (both drawn for the global
        batch in data-parallel training; each rank decodes its rows). Without
        ``reconstruct`` (the critic's steps) the reconstructions are None and the codes
        are decoded only where the decoder normalises with batch statistics, so that
        ``x_prior`` is the same decoding as in the generator step.
        """
        mean, logvar = self.encode(x) if posterior is None else posterior
        z = self.reparameterise(mean, logvar, generator)
        z_prior_all = self.prior.sample(self.shards.global_rows(x.shape[0]), generator)
        z_prior = self.shards.local_rows(z_prior_all)
        if reconstruct or self.decoder_mixes_batch():
            x_rec, x_prior = self.decode_both(z, z_prior)
        else:
            # each image its own code's function: the reconstructions would be wasted work
            x_rec, x_prior = None, self.decode(z_prior.to(z.dtype))
        return z, logvar, z_prior_all, z_prior, x_prior, x_rec

    def critic_values(
        self, x: Tensor, z: Tensor, x_prior: Tensor, z_prior: Tensor,
        params: dict[str, Tensor] | None = None,
    ) -> tuple[Tensor, Tensor]:
        """``(f(x_i, z_i), f(x'_i, z'_i))``, float32 or wider, in ONE critic pass over both
        sets of pairs: the critic has no batch statistics, so each value is its pair's
        alone, and one pass of ``2N`` pairs costs less than two of ``N`` (fewer, larger
        convolutions). ``params``: the critic's parameters to use (e.g. detached)."""
        n = x.shape[0]
        xs = torch.cat([x, x_prior.to(x.dtype)])
        zs = torch.cat([z, z_prior.to(z.dtype)])
        values = upcast(
            self.critic(xs, zs) if params is None
            else functional_call(self.critic, params, (xs, zs))
        )  # fmt: skip
        return values[:n], values[n:]

    # ------------------------------------------------------------------ objective
    def regulariser(self, x, mean, logvar, z, generator):
        """``L_GW`` on fresh prior samples alone (:meth:`loss` is the full objective); the
        codes ``z`` are decoded beside them only so normalisation layers see the mixture."""
        z_prior = self.prior.sample(x.shape[0], generator)
        return self.gw_term(z_prior, self.decode_both(z, z_prior)[1]), {}

    def loss(self, x: Tensor, generator: noise.Generatorish = None) -> LossTerms:
        """Generator objective; ``reconstruction`` is the mean per-image SSE (the RAE paper's unit).

        Randomness from ``generator``, in order: the posterior draw (``randn (N, d)``),
        then the prior samples.
        """
        cfg = self.config
        z, logvar, z_prior_all, z_prior, x_prior, x_rec = self._joint_samples(x, generator)
        assert x_rec is not None
        sse = (upcast(x_rec) - x).pow(2).flatten(1).sum(1)
        # the relational term sees the global batch (x_prior gathered with gradients), in fp32
        with full_precision(x):
            gw = self.gw_term(upcast(z_prior_all), upcast(self.shards.gather(x_prior)))
        frozen = {name: p.detach() for name, p in self.critic.named_parameters()}
        f_enc, f_dec = self.critic_values(x, z, x_prior, z_prior, frozen)
        w_bound = f_enc.mean() - f_dec.mean()
        assert logvar is not None
        neg_logvar = self.reduce(-upcast(logvar).sum(1))
        total = (
            cfg.lambda_rec * self.reduce(sse)
            + cfg.gamma * gw
            + cfg.lambda_w * w_bound
            + cfg.lambda_h * neg_logvar
        )
        return {
            "total": total,
            "reconstruction": sse.mean(),
            "regulariser": gw,
            "w_bound": w_bound.detach(),
            "entropy": neg_logvar.detach(),
            "distance_coef": self.distance_coef.detach(),
        }

    def critic_loss(
        self, x: Tensor, generator: noise.Generatorish = None, reuse_samples: bool = False
    ) -> LossTerms:
        """Critic objective ``-W + gp_weight * (GP + drift * (mean f_enc^2 + mean f_dec^2))``
        (to minimise over the critic only).

        First one power-method step of the critic's spectral normalisation (in training
        mode). Encoder pairs ``(x, z ~ q(z|x))`` and decoder pairs ``(dec(z'), z' ~
        prior)`` are drawn without gradient; the one-centred gradient penalty ``GP`` is
        taken at ``t * enc + (1 - t) * dec``, ``t ~ U(0, 1)`` per pair. Randomness from
        ``generator``, in order: posterior draw, prior samples, ``t`` (``rand (N, 1)``).
        A call with ``reuse_samples=True`` (the trainer's later critic steps on a batch)
        reuses the posterior parameters of the batch's first call, as the authors encode
        the batch once for all critic steps; with ``critic_samples="shared"`` it reuses the
        whole pairs (only ``t`` is drawn) and costs no network pass.
        """
        if self.training:
            self.critic.power_iteration()
        shared = self.config.critic_samples == "shared"
        if shared and reuse_samples and self._critic_pairs is not None:
            z, z_prior, x_prior = self._critic_pairs
        else:
            with torch.no_grad():
                # the batch is encoded once: later steps redraw only z given (mean, logvar)
                posterior = self._critic_posterior if reuse_samples else None
                if posterior is None:
                    posterior = self.encode(x)
                z, _, _, z_prior, x_prior, _ = self._joint_samples(
                    x, generator, posterior, reconstruct=False
                )
            self._critic_pairs = (z, z_prior, x_prior) if shared else None
            self._critic_posterior = posterior
        n = x.shape[0]
        f_enc, f_dec = self.critic_values(x, z, x_prior, z_prior)
        w = f_enc.mean() - f_dec.mean()
        t = noise.rand((self.shards.global_rows(n), 1), generator, device=x.device, dtype=x.dtype)
        t = self.shards.local_rows(t)
        t_x = t.view(n, *([1] * (x.dim() - 1)))
        x_hat = t_x * x + (1.0 - t_x) * x_prior
        z_hat = t * z + (1.0 - t) * z_prior
        gp = self.gradient_penalty(x_hat, z_hat)
        drift = f_enc.square().mean() + f_dec.square().mean()
        total = -w + self.config.gp_weight * (gp + self.config.drift * drift)
        return {
            "total": total,
            "critic_w": w.detach(),
            "gradient_penalty": gp.detach(),
            "drift": drift.detach(),
        }

    def critic_parameters(self) -> list[nn.Parameter]:
        return list(self.critic.parameters())

    def training_only_modules(self) -> tuple[str, ...]:
        return ("critic",)
