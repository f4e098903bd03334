r"""FactorVAE (Kim & Mnih, ICML 2018, "Disentangling by Factorising"): the VAE objective plus
a weighted total correlation of the codes, estimated by a discriminator.

The total correlation of the aggregate posterior :math:`q(z)`,
:math:`TC = KL(q(z) \| \bar q(z))` with :math:`\bar q(z) = \prod_k q(z_k)`, has no closed
form. A discriminator :math:`D(z)`, the probability that :math:`z` comes from
:math:`q(z)` rather than :math:`\bar q(z)`, is trained to tell codes from codes whose
coordinates were shuffled independently across the batch (samples of
:math:`\bar q`: :func:`permute_dims`); at its optimum
:math:`D/(1 - D) = q(z) / \bar q(z)` (the density-ratio trick), so

.. math::
    TC \approx \mathbb{E}_{q(z)}\Big[\log \frac{D(z)}{1 - D(z)}\Big]
       = \mathbb{E}_{q(z)}[\text{logit}(z)],

the discriminator's logit (one output here, where the paper has two softmax outputs:
the logit is their difference). The model minimises, per image,

.. math::
    \text{SSE} + \gamma_{\text{model}} \big(KL(q(z|x) \| \mathcal{N}(0, I))
                 + \texttt{tc\_weight} \cdot \text{logit}(z)\big),

(the paper's :math:`\gamma` is ``tc_weight``, default 35: the paper's best FactorVAE on
dSprites, "2D Shapes", in its latent-traversal figure; the library's ``gamma``, the weight
of the whole regulariser, stays 1), and the discriminator minimises the cross-entropy

.. math::
    \tfrac12 \big(\text{mean}_i \operatorname{softplus}(-\text{logit}(z_i))
                 + \text{mean}_i \operatorname{softplus}(\text{logit}(\tilde z_i))\big)

(:func:`discriminator_loss`, the paper's discriminator objective with the sign flipped),
``z`` the codes and ``z~`` their permutation.

Choices where the paper differs or is silent:

* one batch: the paper draws a second batch for the permuted samples; the trainer hands
  a model one batch, so :meth:`FactorVAE.critic_loss` encodes the batch (without
  gradient), draws ``z ~ q(z|x)`` and permutes *those* codes. The two sets are then
  dependent (the same rows), which only matters for small batches;
* the order is the trainer's: ``n_critic`` (default 1) discriminator steps on the batch,
  then the VAE step (the paper takes the VAE step first). Each step draws its own
  reparameterisation noise;
* in the VAE step the discriminator is evaluated with detached parameters, so that step
  leaves no gradient in it; its own step draws the codes without gradient, so it leaves
  none in the encoder;
* the discriminator is an MLP of ``discriminator_depth`` hidden layers of
  ``discriminator_width`` units with LeakyReLU(0.2) (the paper: 6 x 1000);
* optimisers: the paper uses Adam 1e-4, betas (0.9, 0.999) for the VAE and Adam 1e-4,
  betas (0.5, 0.9) for the discriminator (:attr:`FactorVAE.default_optimizer`,
  :attr:`FactorVAE.default_critic_optimizer`). The trainer builds both from
  ``training.optimizer`` (``critic_lr`` and ``critic_betas`` for the discriminator's):
  the shipped config keeps the library's common protocol, the bench set
  ``shapes-fine-disentanglement`` the paper's;
* the reconstruction term is the library's per-image SSE (the paper: Bernoulli).

All randomness comes from the ``generator`` passed in (reparameterisation noise, the
permutations), and nothing synchronises with the host.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from .. import noise
from ..checks import check_tensor
from ..discrepancies import kl_standard_normal
from ..priors import Prior
from .base import Autoencoder, LossTerms, ModelConfig, register_model, upcast

__all__ = [
    "CodeDiscriminator",
    "FactorVAE",
    "FactorVAEConfig",
    "discriminator_loss",
    "permute_dims",
]


def permute_dims(z: Tensor, generator: noise.Generatorish = None) -> Tensor:
    """``z`` ``(M, d)`` with each column shuffled by its own uniform random permutation.

    Samples of the product of the batch's marginals: every column keeps its values (as a
    multiset), the dependence between columns is broken. The ``d`` permutations are the
    argsorts of one ``rand (M, d)`` draw from ``generator`` (one draw, no host sync; ties
    have probability ~``M^2 / 2^24`` per column in float32 and still give a permutation).
    """
    check_tensor(z, "z", ndims=(2,))
    keys = noise.rand(z.shape, generator, device=z.device, dtype=torch.float32)
    return z.gather(0, keys.argsort(dim=0))


def discriminator_loss(logits_codes: Tensor, logits_permuted: Tensor) -> Tensor:
    r"""Cross-entropy of a discriminator labelling codes 1 and permuted codes 0:
    :math:`\frac12(\text{mean}\,\operatorname{softplus}(-\ell) +
    \text{mean}\,\operatorname{softplus}(\tilde\ell))`, i.e.
    :math:`-\frac12(\text{mean} \log D(z) + \text{mean} \log(1 - D(\tilde z)))`."""
    return 0.5 * (F.softplus(-logits_codes).mean() + F.softplus(logits_permuted).mean())


class CodeDiscriminator(nn.Module):
    """``logit(z)``: an MLP with ``depth`` hidden layers of ``width`` units, LeakyReLU(0.2)."""

    def __init__(self, latent_dim: int, width: int = 1000, depth: int = 6) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        size = int(latent_dim)
        for _ in range(int(depth)):
            layers += [nn.Linear(size, int(width)), nn.LeakyReLU(0.2)]
            size = int(width)
        layers.append(nn.Linear(size, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        """``(M,)`` logits of "drawn from q(z)" against "from the product of its marginals"."""
        return self.net(z).squeeze(1)


@dataclass
class FactorVAEConfig(ModelConfig):
    name: str = "factorvae"
    prior: str = "normal"
    #: the paper's gamma: weight of the discriminator's TC estimate (35: dSprites)
    tc_weight: float = 35.0
    #: discriminator MLP: hidden layers and their width (the paper: 6 x 1000)
    discriminator_depth: int = 6
    discriminator_width: int = 1000
    #: discriminator steps per VAE step (the trainer's critic loop)
    n_critic: int = 1

    def validate(self) -> None:
        super().validate()
        if self.prior != "normal":
            raise ValueError(
                "factorvae uses the analytic KL to N(0, I): model.prior must be 'normal'"
            )
        if self.tc_weight < 0:
            raise ValueError(f"model.tc_weight must be >= 0, got {self.tc_weight}")
        if self.discriminator_depth < 0:
            raise ValueError(
                f"model.discriminator_depth must be >= 0, got {self.discriminator_depth}"
            )
        if self.discriminator_width < 1:
            raise ValueError(
                f"model.discriminator_width must be >= 1, got {self.discriminator_width}"
            )
        if self.n_critic < 1:
            raise ValueError(f"model.n_critic must be >= 1, got {self.n_critic}")


@register_model("factorvae")
class FactorVAE(Autoencoder):
    """FactorVAE: analytic KL + ``tc_weight`` x a discriminator's total-correlation estimate."""

    config_class = FactorVAEConfig
    probabilistic = True
    has_critic = True
    #: the paper's optimisers (documentation: the trainer uses ``training.optimizer``)
    default_optimizer: ClassVar[dict[str, Any]] = {
        "name": "adam", "lr": 1e-4, "betas": (0.9, 0.999)
    }
    default_critic_optimizer: ClassVar[dict[str, Any]] = {
        "name": "adam", "lr": 1e-4, "betas": (0.5, 0.9)
    }

    config: FactorVAEConfig

    def __init__(self, config: FactorVAEConfig, encoder, decoder, prior: Prior) -> None:
        super().__init__(config, encoder, decoder, prior)
        self.discriminator = CodeDiscriminator(
            config.latent_dim, config.discriminator_width, config.discriminator_depth
        )

    def tc_logits(self, z: Tensor) -> Tensor:
        """``(M,)`` discriminator logits with its parameters detached (the VAE step)."""
        frozen = {name: p.detach() for name, p in self.discriminator.named_parameters()}
        return upcast(functional_call(self.discriminator, frozen, (z,)))

    def regulariser(self, x, mean, logvar, z, generator):
        """Per sample ``KL(q(z|x) || N(0, I)) + tc_weight * logit(z)``; extras ``kl``, ``tc``
        (both reduced like the regulariser, unweighted)."""
        kl = kl_standard_normal(mean, logvar)
        tc = self.tc_logits(z)
        extras = {"kl": self.reduce(kl).detach(), "tc": self.reduce(tc).detach()}
        return kl + self.config.tc_weight * tc, extras

    def critic_loss(
        self, x: Tensor, generator: noise.Generatorish = None, reuse_samples: bool = False
    ) -> LossTerms:
        """Discriminator cross-entropy (:func:`discriminator_loss`) on the batch's codes and
        their dimension-wise permutation.

        Randomness from ``generator``, in order: the posterior draw (``randn (M, d)``), the
        permutation keys (``rand (M, d)``); both for the global batch in data-parallel
        training, where the codes are gathered so that the permutation mixes all ranks'
        rows (each rank then keeps its rows: the same pairs as in one process). Also
        returns the discriminator's accuracy on the two sets (threshold logit 0).
        """
        with torch.no_grad():
            mean, logvar = self.encode(x)
            z = upcast(self.reparameterise(mean, logvar, generator))
            permuted = self.shards.local_rows(permute_dims(self.shards.gather(z), generator))
        logits = upcast(self.discriminator(z))
        logits_permuted = upcast(self.discriminator(permuted))
        total = discriminator_loss(logits, logits_permuted)
        accuracy = 0.5 * ((logits > 0).float().mean() + (logits_permuted < 0).float().mean())
        return {"total": total, "critic_accuracy": accuracy.detach()}

    def critic_parameters(self) -> list[nn.Parameter]:
        return list(self.discriminator.parameters())

    def training_only_modules(self) -> tuple[str, ...]:
        return ("discriminator",)
