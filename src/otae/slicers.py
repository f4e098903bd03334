r"""Stateful direction samplers ("slicers") for the sliced discrepancies.

A slicer owns a ``torch.Generator`` and returns directions in the (d, L) layout that
``projections=`` of :mod:`otae.discrepancies` expects. Owning the generator makes a
training run reproducible and resumable: :meth:`Slicer.state_dict` /
:meth:`Slicer.load_state_dict` checkpoint the generator state, so the directions
drawn after a restart are the ones an uninterrupted run would have drawn.

=============================== ===============================================
:class:`UniformSlicer`          uniform on S^{d-1} (the SFG / SW directions)
:class:`VonMisesFisherSlicer`   :math:`vMF(\epsilon, \kappa)`
:class:`PowerSphericalSlicer`   :math:`PS(\epsilon, \kappa)`
:class:`MixtureVonMisesFisherSlicer` :math:`\frac1k \sum_i vMF(\epsilon_i, \kappa)`, stratified
=============================== ===============================================

The pure samplers live in :mod:`otae.sphere`.
"""

from __future__ import annotations

from typing import Any

import torch

from . import sphere
from .checks import check_count, check_positive, check_tensor

__all__ = [
    "Slicer",
    "UniformSlicer",
    "VonMisesFisherSlicer",
    "PowerSphericalSlicer",
    "MixtureVonMisesFisherSlicer",
]


class Slicer:
    """Base class: owns the generator, the output dtype/device and the checkpoint state.

    Args:
        dim: d, the dimension of the directions (d >= 2 for the concentrated slicers).
        seed: seeds a new CPU generator. Exactly one of ``seed`` / ``generator`` may be
            given; with neither, a new generator is seeded non-deterministically.
        generator: a generator to use (and advance) instead.
        dtype, device: of the returned directions; draws happen on the generator's
            device and are moved.

    Subclasses implement :meth:`_sample` returning (n, d) unit vectors.
    """

    def __init__(
        self,
        dim: int,
        *,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        self.dim = check_count(dim, "dim")
        if seed is not None and generator is not None:
            raise ValueError("give at most one of seed and generator")
        if generator is None:
            generator = torch.Generator()
            if seed is None:
                generator.seed()
            else:
                generator.manual_seed(check_count(seed, "seed", minimum=0))
        self.generator = generator
        self.dtype = dtype
        self.device = torch.device(device) if device is not None else torch.device("cpu")

    def _sample(self, n: int) -> torch.Tensor:
        raise NotImplementedError

    def directions(self, n_projections: int) -> torch.Tensor:
        """``n_projections`` fresh unit directions, shape (d, L), detached."""
        check_count(n_projections, "n_projections")
        with torch.no_grad():
            return self._sample(n_projections).T

    __call__ = directions

    def state_dict(self) -> dict[str, Any]:
        """The generator state (a CPU ``ByteTensor``), to restore with :meth:`load_state_dict`."""
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dim={self.dim}, dtype={self.dtype}, device={self.device})"


class UniformSlicer(Slicer):
    """Directions uniform on S^{d-1} (as :func:`otae.sphere.uniform_directions`)."""

    def _sample(self, n: int) -> torch.Tensor:
        return sphere.uniform_directions(n, self.dim, generator=self.generator, dtype=self.dtype,
                                         device=self.device)


class _ConcentratedSlicer(Slicer):
    """Directions concentrated around fixed location(s) ``loc`` with concentration ``kappa``."""

    _loc_ndim = 1

    def __init__(self, loc: torch.Tensor, kappa: float, **kwargs: Any) -> None:
        check_tensor(loc, "loc", ndims=(self._loc_ndim,))
        super().__init__(loc.shape[-1], **kwargs)
        if self.dim < 2:
            raise ValueError(f"loc must have dimension d >= 2, got d = {self.dim}")
        norm = loc.norm(dim=-1, keepdim=True)
        if not bool((norm > 0).all()):
            raise ValueError("loc must be non-zero (it is normalised onto the sphere)")
        self.loc = (loc / norm).detach().to(dtype=self.dtype, device=self.device)
        self.kappa = check_positive(kappa, "kappa", allow_zero=True)

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]}, kappa={self.kappa})"


class VonMisesFisherSlicer(_ConcentratedSlicer):
    r"""Directions from :math:`vMF(\epsilon, \kappa)`; ``loc`` (d,) is normalised."""

    def _sample(self, n: int) -> torch.Tensor:
        return sphere.sample_von_mises_fisher(self.loc, self.kappa, n, generator=self.generator)


class PowerSphericalSlicer(_ConcentratedSlicer):
    r"""Directions from :math:`PS(\epsilon, \kappa)`; ``loc`` (d,) is normalised."""

    def _sample(self, n: int) -> torch.Tensor:
        return sphere.sample_power_spherical(self.loc, self.kappa, n, generator=self.generator)


class MixtureVonMisesFisherSlicer(_ConcentratedSlicer):
    r"""Directions from the uniform mixture :math:`\frac1k\sum_i vMF(\epsilon_i, \kappa)`.

    ``locs`` (k, d), rows normalised. Stratified: each call gives every component
    floor(L/k) or ceil(L/k) directions (see :func:`otae.sphere.sample_spherical_mixture`).
    """

    _loc_ndim = 2

    def __init__(self, locs: torch.Tensor, kappa: float, **kwargs: Any) -> None:
        super().__init__(locs, kappa, **kwargs)

    @property
    def locs(self) -> torch.Tensor:
        """The (k, d) unit component locations (the same tensor as ``loc``)."""
        return self.loc

    def _sample(self, n: int) -> torch.Tensor:
        return sphere.sample_spherical_mixture(self.loc, self.kappa, n, distribution="vmf",
                                               generator=self.generator)
