r"""β-TCVAE (Chen, Li, Grosse & Duvenaud, NeurIPS 2018, "Isolating Sources of
Disentanglement in VAEs"): the VAE's KL split into three terms, each with its own weight.

For a training example :math:`n`, its code :math:`z \sim q(z|n)`, the aggregate
posterior :math:`q(z) = \frac1N \sum_n q(z|n)` and the factorised prior
:math:`p(z) = \prod_k p(z_k)`, the paper decomposes

.. math::
    \mathbb{E}_{p(n)} KL(q(z|n) \| p(z)) =
    \underbrace{KL(q(z, n) \| q(z) p(n))}_{\text{index-code MI}}
    + \underbrace{KL(q(z) \| \textstyle\prod_k q(z_k))}_{\text{total correlation}}
    + \underbrace{\textstyle\sum_k KL(q(z_k) \| p(z_k))}_{\text{dimension-wise KL}}

and optimises reconstruction :math:`+ \alpha\,MI + \beta\,TC + \gamma\,\text{dim-KL}`
(defaults :math:`\alpha = \gamma = 1`, :math:`\beta = 6`). Each term is an expectation
over :math:`(n, z) \sim q(z, n)` of a difference of log densities, estimated on the
batch's own samples :math:`z_i \sim q(z|x_i)`, :math:`i = 1..M`:

.. math::
    MI_i = \log q(z_i|x_i) - \log \hat q(z_i),\quad
    TC_i = \log \hat q(z_i) - \textstyle\sum_k \log \hat q(z_{ik}),\quad
    \text{dimKL}_i = \textstyle\sum_k \log \hat q(z_{ik}) - \log p(z_i),

which telescope: :math:`MI_i + TC_i + \text{dimKL}_i = \log q(z_i|x_i) - \log p(z_i)`,
the one-sample estimate of :math:`KL(q(z|x_i) \| p)` (unbiased for the VAE's closed-form
KL). With all three weights 1 the objective is therefore the VAE's, in expectation.

The densities of the aggregate posterior are estimated from the batch
(:func:`log_aggregate_densities`), with :math:`L_{ijk} = \log \mathcal{N}(z_{ik};
\mu_{jk}, e^{\ell_{jk}})`:

* ``"mws"``, minibatch-weighted sampling (the paper's estimator, in its appendix, and its
  code): :math:`\log \hat q(z_i) = \operatorname{logsumexp}_j \sum_k L_{ijk} - \log(NM)`
  and :math:`\log \hat q(z_{ik}) = \operatorname{logsumexp}_j L_{ijk} - \log(NM)`. The
  dataset size :math:`N` only adds constants: :math:`+\log(NM)` to every MI_i,
  :math:`(d - 1)\log(NM)` to every TC_i, :math:`-d\log(NM)` to every dimKL_i (their sum
  is unchanged), so it changes the logged values, never a gradient. The estimate is
  biased: :math:`\frac1M\sum_j q(z|x_j)` is already a density estimate of
  :math:`q(z)`, and the extra :math:`1/N` shifts the values by those constants.
  With :math:`N = 1` it is exactly the log density of the batch's own mixture
  :math:`\frac1M \sum_j q(z|x_j)`.
* ``"mss"``, a stratified estimator: the batch is the example itself plus
  :math:`M - 1` others drawn without replacement from the other :math:`N - 1`, so
  :math:`q(z_i) = \frac1N q(z_i|x_i) + \frac{N-1}{N}\,\text{mean}_{n \ne i} q(z_i|n)`
  is estimated without bias by the weights :math:`1/N` (own term) and
  :math:`\frac{N-1}{N(M-1)}` (each other term). At :math:`N = M` it is the batch
  mixture (the same numbers as ``"mws"`` at :math:`N = 1`); for :math:`N \gg M` the
  own term's weight vanishes. (The authors' code has a stratified option too, with a
  different weight matrix; this is the plain unbiased weighting.)

The model cannot know the training set's size (the trainer builds it from the config
and the image shape alone), so :math:`N` is the config field ``dataset_size``, default
60000 (MNIST's training set). Both estimators are of the densities at the batch's own
samples: like any kernel density estimate, they need posteriors wide enough to overlap
(a batch of near-point posteriors in several dimensions is a set of separate spikes, and
its "TC" is then that of a discrete law, about :math:`(d - 1)\log M`, whatever the
codes' dependence).

Units follow :class:`~otae.models.vae.VAE`: every term is per image, summed over the
latent dimensions, in nats. The MI, TC and dimKL of sample :math:`i` depend on the whole
batch, so the regulariser is batch-level (``batch_regulariser``): in data-parallel
training it sees the global batch, and it is reduced inside (mean over the batch, or sum
with ``reduction="sum"``). The reconstruction term is the library's per-image SSE, as for
every model (the paper's Bernoulli likelihood is not used).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from ..checks import check_same, check_tensor
from .base import Autoencoder, ModelConfig, register_model

__all__ = [
    "ESTIMATORS",
    "BetaTCVAE",
    "BetaTCVAEConfig",
    "KLDecomposition",
    "kl_decomposition",
    "log_aggregate_densities",
    "total_correlation_mws",
]

#: estimators of the aggregate posterior's densities: minibatch-weighted (``"mws"``) and
#: stratified (``"mss"``) sampling, both described in the module docstring
ESTIMATORS = ("mws", "mss")

_LOG_2PI = math.log(2.0 * math.pi)


class KLDecomposition(NamedTuple):
    """Per-sample terms, each ``(M,)``; their batch means estimate the paper's terms."""

    mi: Tensor
    tc: Tensor
    dim_kl: Tensor


def _check_inputs(z: Tensor, mean: Tensor, logvar: Tensor, dataset_size: int,
                  estimator: str) -> None:
    check_tensor(z, "z", ndims=(2,))
    check_tensor(mean, "mean", ndims=(2,))
    check_tensor(logvar, "logvar", ndims=(2,))
    check_same(z, mean, ("z", "mean"))
    check_same(z, logvar, ("z", "logvar"))
    if int(dataset_size) < 1:
        raise ValueError(f"dataset_size must be >= 1, got {dataset_size}")
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {', '.join(ESTIMATORS)}, got {estimator!r}")


def _log_weights(m: int, dataset_size: int, estimator: str, like: Tensor) -> Tensor | float:
    """Log importance weight of ``q(z_i | x_j)`` in the estimate of ``q(z_i)``: a constant
    (mws) or an ``(M, M)`` matrix (mss; own term on the diagonal)."""
    n = float(dataset_size)
    if estimator == "mws":
        return -math.log(n * m)
    others = (n - 1.0) / (n * max(m - 1, 1))
    # log(0) = -inf for N = 1 (the other examples carry no weight); logsumexp handles it
    weights = torch.full((m, m), others, dtype=like.dtype, device=like.device)
    weights.fill_diagonal_(1.0 / n)
    return weights.log()


def log_aggregate_densities(
    z: Tensor, mean: Tensor, logvar: Tensor, dataset_size: int, estimator: str = "mws"
) -> tuple[Tensor, Tensor, Tensor]:
    r"""``(log q(z_i|x_i), log q̂(z_i), Σ_k log q̂(z_ik))``, each ``(M,)``, with the
    estimator ``estimator`` of the module docstring.

    ``z``, ``mean``, ``logvar``: ``(M, d)`` codes and their diagonal Gaussian posteriors.
    The ``(M, M, d)`` tensor :math:`L_{ijk}` is formed once; the joint density sums it
    over ``k`` before the log-sum-exp over ``j``, the marginals after.
    """
    _check_inputs(z, mean, logvar, dataset_size, estimator)
    m = z.shape[0]
    # L[i, j, k] = log N(z_ik; mean_jk, exp(logvar_jk))
    diff = z.unsqueeze(1) - mean.unsqueeze(0)
    log_normal = -0.5 * (_LOG_2PI + logvar + diff.square() * torch.exp(-logvar))
    log_q_own = torch.diagonal(log_normal, dim1=0, dim2=1).sum(0)  # (d, M) -> (M,)
    log_w = _log_weights(m, dataset_size, estimator, z)
    if isinstance(log_w, float):
        log_q = torch.logsumexp(log_normal.sum(2), dim=1) + log_w
        log_q_marginals = (torch.logsumexp(log_normal, dim=1) + log_w).sum(1)
    else:
        log_q = torch.logsumexp(log_normal.sum(2) + log_w, dim=1)
        log_q_marginals = torch.logsumexp(log_normal + log_w.unsqueeze(2), dim=1).sum(1)
    return log_q_own, log_q, log_q_marginals


def kl_decomposition(
    z: Tensor, mean: Tensor, logvar: Tensor, dataset_size: int, estimator: str = "mws"
) -> KLDecomposition:
    r"""Per-sample ``(MI_i, TC_i, dimKL_i)`` of the batch, each ``(M,)``, for the
    standard normal prior (estimators: the module docstring).

    .. math::
        MI_i = \log q(z_i|x_i) - \log \hat q(z_i),\
        TC_i = \log \hat q(z_i) - \textstyle\sum_k \log \hat q(z_{ik}),\
        \text{dimKL}_i = \textstyle\sum_k \log \hat q(z_{ik}) - \log \mathcal{N}(z_i; 0, I).

    Their sum is :math:`\log q(z_i|x_i) - \log \mathcal{N}(z_i; 0, I)` up to rounding.
    """
    log_q_own, log_q, log_q_marginals = log_aggregate_densities(
        z, mean, logvar, dataset_size, estimator
    )
    log_p = -0.5 * (_LOG_2PI + z.square()).sum(1)
    return KLDecomposition(
        mi=log_q_own - log_q, tc=log_q - log_q_marginals, dim_kl=log_q_marginals - log_p
    )


def total_correlation_mws(z: Tensor, mean: Tensor, logvar: Tensor, dataset_size: int) -> Tensor:
    r"""Per-sample minibatch-weighted-sampling estimate of the total correlation, ``(M,)``.

    .. math::
        TC_i = \operatorname{logsumexp}_j \sum_k L_{ijk}
               - \sum_k \operatorname{logsumexp}_j L_{ijk} + (d - 1) \log(NM),

    :math:`L_{ijk} = \log \mathcal{N}(z_{ik}; \mu_{jk}, e^{\ell_{jk}})`, ``N`` the dataset
    size, ``M`` the batch size (Chen et al. 2018, appendix, and the authors' code). Its
    batch mean estimates :math:`KL(q(z) \| \prod_k q(z_k))`; with ``dataset_size=1`` it is
    the total correlation of the batch's mixture :math:`\frac1M \sum_j q(z|x_j)` at its
    own samples.
    """
    _, log_q, log_q_marginals = log_aggregate_densities(z, mean, logvar, dataset_size, "mws")
    return log_q - log_q_marginals


@dataclass
class BetaTCVAEConfig(ModelConfig):
    name: str = "betatcvae"
    prior: str = "normal"
    #: the paper's alpha, beta, gamma: weights of the index-code MI, the total
    #: correlation and the dimension-wise KL (``gamma`` is the weight of the whole
    #: regulariser, as for every model)
    mi_weight: float = 1.0
    tc_weight: float = 6.0
    dim_kl_weight: float = 1.0
    #: N, the training set's size (the model cannot see it); 60000: MNIST
    dataset_size: int = 60000
    #: "mws" (the paper's minibatch-weighted sampling) or "mss" (stratified; module doc)
    estimator: str = "mws"

    def validate(self) -> None:
        super().validate()
        if self.prior != "normal":
            raise ValueError(
                "betatcvae's decomposition is for N(0, I): model.prior must be 'normal'"
            )
        for field in ("mi_weight", "tc_weight", "dim_kl_weight"):
            if getattr(self, field) < 0:
                raise ValueError(f"model.{field} must be >= 0, got {getattr(self, field)}")
        if self.dataset_size < 1:
            raise ValueError(f"model.dataset_size must be >= 1, got {self.dataset_size}")
        if self.estimator not in ESTIMATORS:
            raise ValueError(
                f"model.estimator must be one of {', '.join(ESTIMATORS)}, got {self.estimator!r}"
            )


@register_model("betatcvae")
class BetaTCVAE(Autoencoder):
    """β-TCVAE: ``mi_weight * MI + tc_weight * TC + dim_kl_weight * dimKL`` on the batch.

    MI, TC and dimKL are the index-code mutual information, total correlation and
    dimension-wise KL that the VAE's KL splits into, estimated from the batch
    (:func:`kl_decomposition`; docs/disentanglement.md for the measurements).
    """

    config_class = BetaTCVAEConfig
    probabilistic = True
    # each sample's terms depend on the whole batch's posteriors
    batch_regulariser = True

    config: BetaTCVAEConfig

    def regulariser(self, x, mean, logvar, z, generator):
        cfg = self.config
        terms = kl_decomposition(z, mean, logvar, cfg.dataset_size, cfg.estimator)
        # batch-level: reduced here (in data-parallel training over the global batch)
        reduce = torch.sum if cfg.reduction == "sum" else torch.mean
        mi, tc, dim_kl = reduce(terms.mi), reduce(terms.tc), reduce(terms.dim_kl)
        value = cfg.mi_weight * mi + cfg.tc_weight * tc + cfg.dim_kl_weight * dim_kl
        return value, {"mi": mi.detach(), "tc": tc.detach(), "dim_kl": dim_kl.detach()}
