r"""Sinkhorn autoencoder (Patrini et al., UAI 2019): deterministic encoder, any prior.

.. math:: R = \langle P_\varepsilon, C \rangle,\quad C_{ij} = \|z_i - y_j\|^p,\quad
          y_j \sim p(z),

the transport cost of the entropic plan after ``n_iters`` log-domain Sinkhorn
iterations (:func:`otae.discrepancies.sinkhorn`; the module :class:`otae.losses.SinkhornLoss`
is ``model.discrepancy_loss``), or with ``divergence: true`` the
debiased Sinkhorn divergence
:math:`S_\varepsilon = OT_\varepsilon(q, p) - \frac12 OT_\varepsilon(q, q) -
\frac12 OT_\varepsilon(p, p)` (:func:`otae.discrepancies.sinkhorn_divergence`, GeomLoss;
``n_iters`` is then unused: GeomLoss anneals epsilon). A batch-level scalar between the
codes and as many prior samples drawn from the ``generator`` passed to ``loss``.

The prior is ``model.prior``: ``normal``, ``gmm``, or the hyperspherical
``sphere_uniform`` / ``vmf`` (:mod:`otae.priors.sphere`; ``prior_kappa`` and
``prior_learnable`` configure the vMF mixture). With a prior on the sphere the codes
are projected onto :math:`S^{d-1}` in :meth:`SinkhornAE.encode` (``F.normalize``), so
embeddings, reconstructions and the loss all see spherical codes, and the learnable
vMF locations are renormalised after each optimiser step (the prior's ``end_of_batch``,
which :meth:`~otae.models.Autoencoder.end_of_batch` runs for every model).

``epsilon``, ``n_iters`` and ``p`` are free parameters; the defaults (0.1, 100, 2) are
those of :func:`~otae.discrepancies.sinkhorn`. ``epsilon`` is in the units of the cost:
squared distances are about ``2d`` between N(0, I) codes, at most 4 on the sphere.

``gradient`` picks how the Sinkhorn cost is differentiated. The default ``implicit``
iterates without autograd (a few hundred operations per step, no host
synchronisation) and differentiates the fixed point; ``unrolled`` differentiates
through the iterations (the original SAE; several thousand operations). The value is
the same. At the paper's setting (epsilon 0.1, 100 iterations, latent 8) Sinkhorn has
not converged (column marginals off by about 10 %), and the implicit gradient is the
closer one to the converged value's gradient (cosine 0.99 against 0.87 to 0.96 for
the unrolled one, measured on N(0, I) clouds). ``epsilon_start`` > 0 anneals epsilon
from that value by ``epsilon_scaling`` per iteration (a fixed schedule counted in
``n_iters``), which converges much faster but changes the value of unconverged runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from ..discrepancies.sinkhorn import GRADIENTS, SUPPORTED_P, annealing_schedule
from ..losses import SinkhornLoss
from ..priors import build_prior
from . import _checks
from .base import ModelConfig, PriorSampleAutoencoder, register_model

SPHERE_PRIORS = ("sphere_uniform", "vmf")


@dataclass
class SAEConfig(ModelConfig):
    name: str = "sae"
    prior: str = "normal"
    #: entropic regularisation, in the units of the cost ||x - y||^p
    epsilon: float = 0.1
    #: Sinkhorn iterations; unused with divergence=True
    n_iters: int = 100
    #: "implicit" (fixed-point gradient, no autograd through the loop) or "unrolled"
    gradient: str = "implicit"
    #: first epsilon of an annealing schedule (cost units); 0: no annealing
    epsilon_start: float = 0.0
    #: ratio between consecutive annealed epsilons, in (0, 1)
    epsilon_scaling: float = 0.5
    #: exponent of the ground cost, 1 or 2
    p: int = 2
    #: debiased Sinkhorn divergence (GeomLoss) instead of the plain Sinkhorn cost
    divergence: bool = False
    #: vmf prior only: concentration and whether the locations are learnt
    prior_kappa: float = 20.0
    prior_learnable: bool = True

    def validate(self) -> None:
        super().validate()
        _checks.known_prior(self.prior, "sae")
        if self.prior in SPHERE_PRIORS:
            _checks.sphere_dim(self.latent_dim, f"the {self.prior} prior")
        _checks.positive(self.epsilon, "epsilon")
        _checks.count(self.n_iters, "n_iters")
        _checks.choice(self.gradient, "gradient", GRADIENTS)
        _checks.positive(self.epsilon_start, "epsilon_start", allow_zero=True)
        _checks.positive(self.epsilon_scaling, "epsilon_scaling")
        if self.epsilon_scaling >= 1.0:
            raise ValueError(
                f"model.epsilon_scaling must lie in (0, 1), got {self.epsilon_scaling!r}"
            )
        if self.epsilon_start > 0.0:  # the schedule must leave iterations at epsilon
            annealing_schedule(self.epsilon, self.n_iters, self.epsilon_start,
                               self.epsilon_scaling)
        _checks.choice(self.p, "p", SUPPORTED_P)
        if self.diagnostics and self.divergence:
            raise ValueError(
                "model.diagnostics needs model.divergence: false (GeomLoss does not expose "
                "the iterations of the Sinkhorn divergence)"
            )
        _checks.positive(self.prior_kappa, "prior_kappa", allow_zero=True)


@register_model("sae")
class SinkhornAE(PriorSampleAutoencoder):
    """``R = <P_eps, C>`` (or ``S_eps``) between codes and prior samples."""

    config_class = SAEConfig
    loss_class = SinkhornLoss

    @classmethod
    def build_prior(cls, config, image_shape, generator):
        options = {}
        if config.prior == "vmf":
            options = {"kappa": config.prior_kappa, "learnable": config.prior_learnable}
        return build_prior(
            config.prior, config.latent_dim, config.n_components, generator=generator, **options
        )

    @property
    def on_sphere(self) -> bool:
        return bool(getattr(self.prior, "on_sphere", False))

    def encode(self, x):
        mean, logvar = super().encode(x)
        return (F.normalize(mean, dim=-1) if self.on_sphere else mean), logvar

    def loss_options(self):
        c = self.config
        return {
            "epsilon": c.epsilon, "n_iters": c.n_iters, "p": c.p, "divergence": c.divergence,
            "gradient": c.gradient, "epsilon_start": c.epsilon_start or None,
            # the divergence keeps GeomLoss's annealing ratio: epsilon_scaling belongs
            # to the plain cost's schedule
            "scaling": 0.5 if c.divergence else c.epsilon_scaling,
            "diagnostics": c.diagnostics,
        }

    def discrepancy(self, z, y, generator):
        return self.synced_loss()(z, y)  # Sinkhorn draws nothing
