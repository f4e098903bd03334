r"""VampPrior (Tomczak & Welling 2018): a mixture of the encoder's posteriors.

.. math:: p(z) = \frac1K \sum_{k=1}^K q(z \mid u_k),

with :math:`K` learnable image-shaped pseudo-inputs :math:`u_k` and :math:`q(z \mid x)`
the (diagonal Gaussian) posterior of the model's own encoder. The prior therefore needs
the encoder: :meth:`VampPrior.bind` stores a *non-registered* reference to it, so the
encoder's weights appear once in the model's ``state_dict`` (under ``encoder.``), not a
second time under ``prior.``. Only the pseudo-inputs belong to the prior.

The prior is not in the string registry (it needs the image shape and an encoder); the
``vampprior`` model builds it in its ``build_prior`` classmethod and binds it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .. import noise
from ..discrepancies.kl import log_prob_gaussian_mixture
from ..parallel import local_batches
from .base import Prior


class VampPrior(Prior):
    """Uniform mixture of ``q(z | u_k)`` over ``K`` learnable pseudo-inputs ``u_k``.

    Pseudo-inputs start uniform on ``[init_low, init_high]`` (default ``[0, 1]``, the
    pixel range: random images centred on 0.5), drawn with ``generator``.
    :meth:`sample` is stratified (``n / K`` draws per component, as the GMM prior) and
    reparameterised, so gradients reach the pseudo-inputs and the encoder.
    """

    def __init__(
        self,
        latent_dim: int,
        n_components: int,
        image_shape: Sequence[int],
        *,
        init_low: float = 0.0,
        init_high: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(latent_dim, n_components)
        shape = tuple(int(s) for s in image_shape)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"image_shape must be (channels, height, width), got {image_shape}")
        if not init_high > init_low:
            raise ValueError(f"init_high must exceed init_low, got [{init_low}, {init_high}]")
        self.image_shape = shape
        u = torch.rand(n_components, *shape, generator=generator)
        self.pseudo_inputs = nn.Parameter(init_low + (init_high - init_low) * u)
        object.__setattr__(self, "_encoder", None)

    # ------------------------------------------------------------------ encoder
    def bind(self, encoder: nn.Module) -> VampPrior:
        """Use ``encoder`` (a probabilistic encoder for this image shape and latent size).

        Stored with ``object.__setattr__``: not a submodule, so not in the state_dict.
        """
        if not getattr(encoder, "probabilistic", False):
            raise ValueError("VampPrior needs a probabilistic encoder (mean and logvar heads)")
        if getattr(encoder, "latent_dim", None) != self.latent_dim:
            raise ValueError(
                f"encoder latent size {getattr(encoder, 'latent_dim', None)} differs from the "
                f"prior's {self.latent_dim}"
            )
        if tuple(getattr(encoder, "image_shape", ())) != self.image_shape:
            raise ValueError(
                f"encoder image shape {getattr(encoder, 'image_shape', None)} differs from the "
                f"pseudo-inputs' {self.image_shape}"
            )
        object.__setattr__(self, "_encoder", encoder)
        return self

    @property
    def encoder(self) -> nn.Module:
        if self._encoder is None:
            raise RuntimeError("VampPrior is not bound to an encoder: call prior.bind(encoder)")
        return self._encoder

    def _components(self) -> tuple[Tensor, Tensor]:
        """Means and log-variances ``(K, d)`` of the posteriors at the pseudo-inputs."""
        # The pseudo-inputs are the same on every rank of a data-parallel run: their
        # batch-norm statistics are local (no collectives), which is exact.
        with local_batches(self.encoder):
            mean, logvar = self.encoder(self.pseudo_inputs)
        return mean, logvar

    # ------------------------------------------------------------------ distribution
    def gaussian_components(self) -> tuple[Tensor, Tensor]:
        mean, logvar = self._components()
        return mean, torch.exp(0.5 * logvar)

    def sample(self, n: int, generator: noise.Generatorish = None) -> Tensor:
        return self._mixture_sample(*self.gaussian_components(), n, generator)

    def sample_component(self, k: int, n: int, generator: noise.Generatorish = None) -> Tensor:
        self._check_component(k)
        # Encode only pseudo-input k.
        mean, logvar = self.encoder(self.pseudo_inputs[int(k) : int(k) + 1])
        return mean + torch.exp(0.5 * logvar) * self._noise(n, generator)

    def log_prob(self, z: Tensor) -> Tensor:
        mean, logvar = self._components()
        return log_prob_gaussian_mixture(z, mean, logvar)
