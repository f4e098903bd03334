"""The prior interface every model talks to.

A prior is an ``nn.Module`` (it may have learnable parameters) over codes in
``R^d``. Sampling is reparameterised wherever the prior is learnable, so that
regularisers computed on prior samples (sliced FGW, MMD, Sinkhorn...) train the
prior too. Every sampler takes an explicit generator: a ``torch.Generator`` or one of
the replayable stand-ins of :mod:`otae.noise` (:data:`otae.noise.Generatorish`), through
which every draw goes, so that sampling can run inside a compiled training step. Samples
have static shapes and sampling makes no host synchronisation.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .. import noise
from ..constants import device_constant


class Prior(nn.Module):
    """Base class: a distribution over ``R^latent_dim`` with ``n_components`` parts.

    Subclasses implement :meth:`sample` and, where the prior is a mixture,
    :meth:`sample_component`. ``log_prob`` and ``gaussian_components`` are
    optional: models that need them (KL by Monte Carlo, hierarchical FGW) say so
    with a clear error when the prior lacks them.
    """

    def __init__(self, latent_dim: int, n_components: int = 1) -> None:
        super().__init__()
        if int(latent_dim) < 1:
            raise ValueError(f"latent_dim must be >= 1, got {latent_dim}")
        if int(n_components) < 1:
            raise ValueError(f"n_components must be >= 1, got {n_components}")
        self.latent_dim = int(latent_dim)
        self.n_components = int(n_components)

    def _device(self) -> torch.device:
        for tensor in list(self.parameters()) + list(self.buffers()):
            return tensor.device
        return torch.device("cpu")

    def _dtype(self) -> torch.dtype:
        for tensor in list(self.parameters()) + list(self.buffers()):
            if tensor.is_floating_point():
                return tensor.dtype
        return torch.get_default_dtype()

    def _noise(self, n: int, generator: noise.Generatorish, dim: int | None = None) -> Tensor:
        """``(n, dim)`` standard normals (``dim`` defaults to ``latent_dim``) drawn with
        ``generator`` on the prior's device and dtype: the ``eps`` of reparameterised samplers.
        """
        width = self.latent_dim if dim is None else int(dim)
        return noise.randn((int(n), width), generator, device=self._device(), dtype=self._dtype())

    def component_labels(self, n: int) -> Tensor:
        """``(n,)`` component index of each row returned by :meth:`sample`.

        Mixture priors sample stratified (:func:`stratified_counts`): rows come grouped
        by component, ``n / K`` each, the remainder to the first components. Built once
        per ``(n, K, device)`` and shared (no per-call host copy): do not modify it in place.
        """
        return device_constant(
            _stratified_labels, int(n), self.n_components, dtype=torch.int64, device=self._device()
        )

    def _mixture_sample(self, means: Tensor, stds: Tensor, n: int,
                        generator: noise.Generatorish) -> Tensor:
        """``(n, d)`` stratified draws ``mu_k + sigma_k * eps`` of the uniform mixture of
        diagonal Gaussians with ``(K, d)`` means and standard deviations, in the row order
        of :meth:`component_labels` (reparameterised: gradients reach both tables)."""
        # One gather of both tables, one fused multiply-add: few operations, static shapes.
        mean, std = torch.cat((means, stds), 1)[self.component_labels(n)].chunk(2, 1)
        return torch.addcmul(mean, std, self._noise(n, generator))

    def sample(self, n: int, generator: noise.Generatorish = None) -> Tensor:
        """``(n, latent_dim)`` samples (stratified over components for mixtures)."""
        raise NotImplementedError

    def sample_component(self, k: int, n: int, generator: noise.Generatorish = None) -> Tensor:
        """``(n, latent_dim)`` samples from component ``k`` (conditional generation)."""
        self._check_component(k)
        return self.sample(n, generator)

    def log_prob(self, z: Tensor) -> Tensor:
        """``(n,)`` log-density of codes ``z`` of shape ``(n, latent_dim)``."""
        raise NotImplementedError(
            f"{type(self).__name__} has no tractable density; use a model whose "
            "regulariser works from samples (e.g. sliced FGW, MMD, Sinkhorn)"
        )

    def gaussian_components(self) -> tuple[Tensor, Tensor]:
        """Means and standard deviations ``(K, d)``, ``(K, d)`` of a Gaussian mixture."""
        raise NotImplementedError(
            f"{type(self).__name__} is not a mixture of diagonal Gaussians; the "
            "hierarchical FGW regulariser (P-RAE) needs one (prior: gmm or normal)"
        )

    def component_means(self) -> Tensor:
        """``(K, d)`` representative location of each component (for latent plots)."""
        return self.gaussian_components()[0]

    def end_of_batch(self) -> None:
        """Hook run after each optimiser step (e.g. to put parameters back on a manifold)."""

    def _check_component(self, k: int) -> None:
        if not 0 <= int(k) < self.n_components:
            raise ValueError(
                f"component index k={k} out of range for a prior with "
                f"{self.n_components} component(s)"
            )


def _stratified_labels(n: int, n_components: int, *, dtype, device) -> Tensor:
    """The labels of :meth:`Prior.component_labels`, built on ``device`` without a host copy:
    the first ``extra`` components have ``base + 1`` rows, the others ``base``."""
    base, extra = divmod(n, n_components)
    rows = torch.arange(n, dtype=dtype, device=device)
    if base == 0:  # n < K: one row for each of the first n components
        return rows
    head = extra * (base + 1)
    return torch.where(rows < head, rows // (base + 1), extra + (rows - head) // base)


def stratified_counts(n: int, n_components: int) -> list[int]:
    """Split ``n`` draws over components as evenly as possible (N/K each, as the RAE authors do)."""
    base, extra = divmod(int(n), int(n_components))
    return [base + (1 if k < extra else 0) for k in range(n_components)]
