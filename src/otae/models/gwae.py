"""GWAE (Nakagawa et al., ICLR 2023): Gromov-Wasserstein autoencoder with a learnable meta-prior.

GWAE minimises the GW metric between the (learnable) prior and the data
distribution. It is estimated on the generative side: for ``N`` prior samples
``z'_i`` and their decodings ``x'_i = dec(z'_i)``,

    L_GW = mean_{i<j} | (nu / s) ||z'_i - z'_j|| - ||x'_i - x'_j|| |

(:func:`relational_gw_loss`), with ``nu`` a learnable scalar and ``s`` the mean
per-dimension standard deviation of the batch of prior samples. Because the
generative model only stands in for the data if it matches them, the objective
adds a bound on the Wasserstein distance between the two joints
``p_data(x) q(z|x)`` ("encoder pairs") and ``p(z) p(x|z)`` ("decoder pairs"),
estimated by a WGAN-GP critic ``f(x, z)``, a reconstruction term and an entropy
term that keeps the posteriors spread. The optimised total is

    lambda_rec * SSE + gamma * L_GW + lambda_w * W + lambda_h * (-sum_k logvar_k)

where the per-image terms (SSE, -sum logvar) are averaged over the batch
(``reduction="mean"``) or summed (``"sum"``), ``L_GW`` and ``W`` are batch-level.
``W = mean f(x, z) - mean f(x', z')`` is the critic's estimate of W1 between the
joints: the generator (encoder, decoder, prior, ``nu``) minimises it through
the samples with the critic held fixed; the critic maximises it, minus a
gradient penalty, in :meth:`GWAE.critic_loss`, which a trainer calls
``n_critic`` times per batch with its own optimiser over
:meth:`GWAE.critic_parameters` before one step on :meth:`GWAE.loss`.

Choices where the description (spec §4, "code") is silent:

* pairs: the unordered pairs ``i < j``; the mean over all ordered pairs
  ``i != j`` is the same number (the summand is symmetric); the diagonal, which
  is identically 0, is excluded;
* ``s`` is the unbiased (``N - 1``) standard deviation per dimension, averaged
  over dimensions, and by default *not* detached: ``L_GW`` is then exactly
  invariant to rescaling the prior samples (value and gradient agree), so the
  prior's scale is left to the W bound and ``nu`` alone sets the ratio of latent
  to data distances. ``detach_scale=True`` stops the gradient through ``s``;
* ``nu`` is a raw scalar parameter (not log-parameterised), initialised at
  ``nu_init``;
* the critic is an MLP with LeakyReLU(0.2) layers on ``concat(flatten(x), z)``
  (no normalisation layers: the gradient penalty is per sample);
* in :meth:`GWAE.loss` the critic is evaluated with *detached* parameters, so
  the generator step leaves no gradient in the critic; :meth:`GWAE.critic_loss`
  draws the encoder and decoder pairs without gradient, so the critic step
  leaves none in the generator;
* the entropy term is reported (``"entropy"``) unweighted, as the reduced
  ``-sum_k logvar_k`` (for a diagonal Gaussian, ``-2 H(q(z|x)) + const``);
* ``lambda_w = 1`` (the weight of the W bound is not given);
* posterior codes and prior samples go through the decoder in ONE pass
  (:meth:`GWAE.decode_both`), in the generator step and in every critic step. The
  decoder is the only network that sees two code distributions, and with batch
  normalisation separate passes would normalise each with its own batch statistics
  in training while evaluation uses running statistics of their alternation: while
  the prior and the aggregate posterior differ (all of early training), the decoder
  then reconstructs far worse in evaluation mode than in training (measured on
  ``shapes``: a test loss of 106 against 32 with batch statistics, after 2 epochs).
  One pass gives training and evaluation the same statistics, those of the mixture.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.func import functional_call

from .. import noise
from ..priors import GaussianMixturePrior, Prior, StandardNormalPrior
from ..priors.meta import FactorisedPrior, NeuralSamplerPrior
from .base import Autoencoder, LossTerms, ModelConfig, full_precision, register_model, upcast

#: meta-prior names accepted by ``model.prior`` for GWAE
META_PRIORS = ("neural", "factorised", "gmm", "normal")


def _pairwise_distances(a: Tensor) -> Tensor:
    """``(N, N)`` Euclidean distances between the rows of ``a`` (flattened to ``(N, D)``).

    Direct differences rather than the Gram-matrix expansion: exact to rounding for
    images far from the origin, and zero-distance entries have zero gradient.
    """
    flat = a.flatten(1)
    return torch.cdist(flat, flat, compute_mode="donot_use_mm_for_euclid_dist")


def relational_gw_loss(
    z: Tensor, x: Tensor, nu: Tensor | float, *, detach_scale: bool = False
) -> Tensor:
    """GWAE's relational term ``mean_{i<j} |(nu / s) ||z_i - z_j|| - ||x_i - x_j|||``.

    ``z`` ``(N, d)`` are prior samples, ``x`` ``(N, ...)`` their decodings (any
    trailing shape, flattened), ``nu`` a scalar, ``s = mean_k std(z[:, k])``
    (unbiased std; detached if ``detach_scale``). Equal to the mean over all ordered
    pairs ``i != j``. Needs ``N >= 2``.
    """
    n = z.shape[0]
    if z.dim() != 2 or x.shape[0] != n:
        raise ValueError(
            f"relational_gw_loss expects z (N, d) and x (N, ...), got {tuple(z.shape)} "
            f"and {tuple(x.shape)}"
        )
    if n < 2:
        raise ValueError(f"relational_gw_loss needs at least 2 samples, got {n}")
    scale = z.std(dim=0).mean()
    if detach_scale:
        scale = scale.detach()
    i, j = torch.triu_indices(n, n, offset=1, device=z.device)
    dz = _pairwise_distances(z)[i, j]
    dx = _pairwise_distances(x)[i, j]
    return (nu / scale * dz - dx).abs().mean()


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

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        """``(N,)`` critic values of the pairs ``(x_i, z_i)``."""
        return self.net(torch.cat([x.flatten(1), z], dim=1)).squeeze(1)


@dataclass
class GWAEConfig(ModelConfig):
    name: str = "gwae"
    #: meta-prior: "neural" (MLP sampler), "factorised", "gmm" (n_components), "normal"
    prior: str = "neural"
    #: weight of the per-image SSE (the authors' 0.5 * SSE)
    lambda_rec: float = 0.5
    #: weight of the critic's W1 estimate between encoder and decoder pairs
    lambda_w: float = 1.0
    #: weight of -sum_k logvar_k (entropy of the posteriors)
    lambda_h: float = 0.03
    #: WGAN-GP penalty weight and critic steps per generator step (the trainer's loop)
    gp_weight: float = 10.0
    n_critic: int = 5
    #: initial value of the learnable latent-to-data distance ratio
    nu_init: float = 2.5
    #: stop the gradient through the prior samples' scale s in L_GW
    detach_scale: bool = False
    critic_hidden: tuple[int, ...] = (512, 512)
    #: hidden sizes of the "neural" sampler; tanh units per coordinate of "factorised"
    sampler_hidden: tuple[int, ...] = (128, 128)
    factorised_hidden: int = 16
    #: critic steps of a batch draw "fresh" encoder/decoder pairs each (an encoder and a
    #: decoder pass per step), or "shared": the first step's pairs serve all n_critic
    #: steps (one pass per batch; the interpolation points are still redrawn)
    critic_samples: str = "fresh"

    def validate(self) -> None:
        super().validate()
        if self.prior not in META_PRIORS:
            raise ValueError(
                f"gwae model.prior must be one of {', '.join(META_PRIORS)}, got {self.prior!r}"
            )
        for field in ("lambda_rec", "lambda_w", "lambda_h", "gp_weight"):
            if getattr(self, field) < 0:
                raise ValueError(f"model.{field} must be >= 0, got {getattr(self, field)}")
        if self.n_critic < 1:
            raise ValueError(f"model.n_critic must be >= 1, got {self.n_critic}")
        if not self.nu_init > 0:
            raise ValueError(f"model.nu_init must be > 0, got {self.nu_init}")
        for field in ("critic_hidden", "sampler_hidden"):
            if any(int(h) < 1 for h in getattr(self, field)):
                raise ValueError(f"model.{field} sizes must be >= 1, got {getattr(self, field)}")
        if self.critic_samples not in ("fresh", "shared"):
            raise ValueError(
                f"model.critic_samples must be 'fresh' or 'shared', got {self.critic_samples!r}"
            )
        if self.factorised_hidden < 1:
            raise ValueError(f"model.factorised_hidden must be >= 1, got {self.factorised_hidden}")


def build_meta_prior(config: GWAEConfig, generator: torch.Generator | None = None) -> Prior:
    """The prior named by ``config.prior`` (one of :data:`META_PRIORS`)."""
    d = config.latent_dim
    if config.prior == "neural":
        return NeuralSamplerPrior(d, config.sampler_hidden, generator=generator)
    if config.prior == "factorised":
        return FactorisedPrior(d, config.factorised_hidden, generator=generator)
    if config.prior == "gmm":
        return GaussianMixturePrior(d, config.n_components, generator=generator)
    if config.prior == "normal":
        return StandardNormalPrior(d)
    raise ValueError(f"unknown GWAE meta-prior {config.prior!r}; known: {', '.join(META_PRIORS)}")


@register_model("gwae")
class GWAE(Autoencoder):
    """Relational GW term + critic-estimated W bound + reconstruction + entropy (module doc)."""

    config_class = GWAEConfig
    probabilistic = True
    has_critic = True
    #: the authors' optimiser and batch size (spec §4), for the generator and the critic
    default_optimizer: ClassVar[dict[str, Any]] = {"name": "rmsprop", "lr": 1e-4}
    default_critic_optimizer: ClassVar[dict[str, Any]] = {"name": "rmsprop", "lr": 1e-4}
    default_batch_size: ClassVar[int] = 64

    config: GWAEConfig

    def __init__(self, config: GWAEConfig, encoder, decoder, prior: Prior) -> None:
        super().__init__(config, encoder, decoder, prior)
        self.critic = JointCritic(self.image_shape, config.latent_dim, config.critic_hidden)
        self.nu = nn.Parameter(torch.tensor(float(config.nu_init)))
        #: the pairs of the batch's first critic step, with critic_samples="shared"
        self._critic_pairs: tuple[Tensor, Tensor, Tensor] | None = None

    @classmethod
    def build_prior(cls, config, image_shape, generator):
        return build_meta_prior(config, generator)

    # ------------------------------------------------------------------ pieces
    def gw_term(self, z_prior: Tensor, x_prior: Tensor) -> Tensor:
        """:func:`relational_gw_loss` of prior samples and their decodings with this ``nu``."""
        return relational_gw_loss(z_prior, x_prior, self.nu, detach_scale=self.config.detach_scale)

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
        their running statistics hold in evaluation (module doc).
        """
        decoded = self.decode(torch.cat([z, z_prior.to(z.dtype)]))
        return decoded[: z.shape[0]], decoded[z.shape[0]:]

    def _joint_samples(
        self, x: Tensor, generator: noise.Generatorish
    ) -> tuple[Tensor, Tensor | None, Tensor, Tensor, Tensor, Tensor]:
        """Encoder pair code ``z`` and its ``logvar``; the prior samples of the whole batch;
        this rank's decoder pairs ``(z_prior, x_prior)``; the reconstructions ``dec(z)``.

        Randomness from ``generator``, in order: posterior draw, prior samples (both
        drawn for the global batch in data-parallel training; each rank decodes its rows).
        """
        mean, logvar = self.encode(x)
        z = self.reparameterise(mean, logvar, generator)
        z_prior_all = self.prior.sample(self.shards.global_rows(x.shape[0]), generator)
        z_prior = self.shards.local_rows(z_prior_all)
        x_rec, x_prior = self.decode_both(z, z_prior)
        return z, logvar, z_prior_all, z_prior, x_prior, x_rec

    # ------------------------------------------------------------------ objective
    def regulariser(self, x, mean, logvar, z, generator):
        """``L_GW`` on fresh prior samples alone (:meth:`loss` is the full objective); the
        codes ``z`` are decoded beside them only so normalisation layers see the mixture."""
        z_prior = self.prior.sample(x.shape[0], generator)
        return self.gw_term(z_prior, self.decode_both(z, z_prior)[1]), {}

    def loss(self, x: Tensor, generator: noise.Generatorish = None) -> LossTerms:
        """Generator objective; ``reconstruction`` is the mean per-image SSE (spec §1 units).

        Randomness from ``generator``, in order: the posterior draw (``randn (N, d)``),
        then the prior samples.
        """
        cfg = self.config
        z, logvar, z_prior_all, z_prior, x_prior, x_rec = self._joint_samples(x, generator)
        sse = (upcast(x_rec) - x).pow(2).flatten(1).sum(1)
        # the relational term sees the global batch (x_prior gathered with gradients), in fp32
        with full_precision(x):
            gw = self.gw_term(upcast(z_prior_all), upcast(self.shards.gather(x_prior)))
        frozen = {name: p.detach() for name, p in self.critic.named_parameters()}
        f_enc = upcast(functional_call(self.critic, frozen, (x, z)))
        f_dec = upcast(functional_call(self.critic, frozen, (x_prior, z_prior)))
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
            "nu": self.nu.detach().clone(),
        }

    def critic_loss(
        self, x: Tensor, generator: noise.Generatorish = None, reuse_samples: bool = False
    ) -> LossTerms:
        """Critic objective ``-W + gp_weight * GP`` (to minimise over the critic only).

        Encoder pairs ``(x, z ~ q(z|x))`` and decoder pairs ``(dec(z'), z' ~ prior)`` are
        drawn without gradient; the penalty is taken at ``t * enc + (1 - t) * dec``,
        ``t ~ U(0, 1)`` per pair. Randomness from ``generator``, in order: posterior
        draw, prior samples, ``t`` (``rand (N, 1)``). With ``critic_samples="shared"`` a
        call with ``reuse_samples=True`` reuses the previous call's pairs (only ``t`` is
        drawn): the trainer's later critic steps on a batch then cost no network pass.
        """
        shared = self.config.critic_samples == "shared"
        if shared and reuse_samples and self._critic_pairs is not None:
            z, z_prior, x_prior = self._critic_pairs
        else:
            with torch.no_grad():
                z, _, _, z_prior, x_prior, _ = self._joint_samples(x, generator)
            self._critic_pairs = (z, z_prior, x_prior) if shared else None
        n = x.shape[0]
        w = upcast(self.critic(x, z)).mean() - upcast(self.critic(x_prior, z_prior)).mean()
        t = noise.rand((self.shards.global_rows(n), 1), generator, device=x.device, dtype=x.dtype)
        t = self.shards.local_rows(t)
        t_x = t.view(n, *([1] * (x.dim() - 1)))
        x_hat = t_x * x + (1.0 - t_x) * x_prior
        z_hat = t * z + (1.0 - t) * z_prior
        gp = self.gradient_penalty(x_hat, z_hat)
        total = -w + self.config.gp_weight * gp
        return {"total": total, "critic_w": w.detach(), "gradient_penalty": gp.detach()}

    def critic_parameters(self) -> list[nn.Parameter]:
        return list(self.critic.parameters())
