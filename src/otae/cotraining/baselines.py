r"""The multi-view feature learners of the RAE paper's Table 4, behind one interface.

Every method is an object with ``fit(train_views)`` (a list of (N_s, d_s) arrays, one
per view; unsupervised) and ``transform(views) -> np.ndarray`` features for the
downstream classifier (paired rows of all views). Paired methods need paired rows (all
N_s equal); the unpaired autoencoder methods also accept views with different samples
and row counts (each view's batches are drawn from its own rows). Autoencoder methods
concatenate the latent means of the views (:meth:`AutoencoderFeatures.view_features`
gives them per view); ``transform(views, epoch=e)`` uses the weights saved at the end of
epoch ``e`` (one of ``AESettings.checkpoints``).

Methods (``METHODS``; ``pairing`` says whether training uses the row correspondence):

* ``"independent"`` (unpaired): :class:`~otae.cotraining.model.MultiViewAutoencoders` with
  ``tau = 0``: per view reconstruction + ``gamma`` x hierarchical W to N(0, I), no
  relational term.
* ``"coreg"`` (paired): least-squares co-regularisation (Sindhwani et al. 2005): the pair
  term is :math:`\frac1N \sum_i \lVert \mu_{s,i} - \mu_{t,i} \rVert^2` between the latent
  MEANS of the paired rows. With unequal latent sizes only the first
  :math:`\min(k_s, k_t)` coordinates are compared.
* ``"cca"`` (paired, S = 2): scikit-learn's :class:`~sklearn.cross_decomposition.CCA`
  with ``n_components = min(latent, d_1, d_2)`` on the (already standardised) paired
  training views; features are the two views' canonical projections, concatenated.
* ``"aes_cca"`` (paired): a deep-CCA-like correlation term (in the spirit of Wang et al.
  2015, not their full whitened objective): with :math:`k = \min(k_s, k_t)`, the paired
  latent means are standardised per coordinate over the batch,
  :math:`a_{ij} = (\mu_{s,ij} - \bar\mu_{s,j}) / (\mathrm{sd}_j + 10^{-6})` and likewise
  :math:`b`, and the pair term is :math:`-\sum_{j<k} \frac1N \sum_i a_{ij} b_{ij}`, minus
  the sum of the batch correlations of the matched coordinates (bounded below by -k).
  Nothing decorrelates different coordinates.
* ``"aes_w"`` (unpaired): the relational term replaced by the hierarchical Wasserstein
  distance (``hierarchical_fgw`` with ``beta = 0``) between the two views' posterior
  component sets. W compares points ACROSS the two latent spaces, so they need one
  dimension: the smaller latent (means and std devs) is zero-padded, i.e. embedded as a
  coordinate subspace of the larger one. Unlike GW this is NOT invariant to rotations of
  one view's latent space.
* ``"aes_gw"`` (unpaired, ours): ``MultiViewAutoencoders`` with ``tau > 0`` and the
  hierarchical GW relational term.

All autoencoder methods share the architecture, optimiser, epochs, ``gamma``, ``tau``
and prior term (:class:`AESettings`); only the pair term and the pairing differ. The
paired ones train on batches drawn with ONE permutation for all views.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from ..discrepancies import hierarchical_fgw
from ..discrepancies.gromov import require_pot
from .model import (
    MultiViewAutoencoders,
    Posterior,
    register_multiview,
    train_cotraining,
    zero_pad,
)

__all__ = [
    "AESettings",
    "AutoencoderFeatures",
    "CCAAutoencoders",
    "CCAFeatures",
    "CoRegAutoencoders",
    "METHODS",
    "METHOD_LABELS",
    "METHOD_PAIRING",
    "WassersteinAutoencoders",
    "make_method",
]

#: Method names in Table 4 order.
METHODS = ("independent", "coreg", "cca", "aes_cca", "aes_w", "aes_gw")
METHOD_LABELS = {
    "independent": "Independent AEs",
    "coreg": "AEs+CoReg",
    "cca": "CCA",
    "aes_cca": "AEs+CCA",
    "aes_w": "AEs+W",
    "aes_gw": "AEs+GW",
}
METHOD_PAIRING = {
    "independent": "unpaired",
    "coreg": "paired",
    "cca": "paired",
    "aes_cca": "paired",
    "aes_w": "unpaired",
    "aes_gw": "unpaired",
}


@register_multiview
class CoRegAutoencoders(MultiViewAutoencoders):
    """Pair term: mean squared distance of the paired latent means (first min(k) coords)."""

    def pair_term_value(
        self,
        s: int,
        t: int,
        post_s: Posterior,
        post_t: Posterior,
        generator: torch.Generator | None,
    ) -> Tensor:
        k = min(post_s.dim, post_t.dim)
        return (post_s.mean[:, :k] - post_t.mean[:, :k]).square().sum(1).mean()


@register_multiview
class CCAAutoencoders(MultiViewAutoencoders):
    """Pair term: minus the summed batch correlations of matched latent-mean coordinates."""

    eps = 1e-6

    def pair_term_value(
        self,
        s: int,
        t: int,
        post_s: Posterior,
        post_t: Posterior,
        generator: torch.Generator | None,
    ) -> Tensor:
        k = min(post_s.dim, post_t.dim)

        def standardised(m: Tensor) -> Tensor:
            m = m[:, :k] - m[:, :k].mean(0, keepdim=True)
            return m / (m.square().mean(0, keepdim=True).sqrt() + self.eps)

        return -(standardised(post_s.mean) * standardised(post_t.mean)).mean(0).sum()


@register_multiview
class WassersteinAutoencoders(MultiViewAutoencoders):
    """Pair term: hierarchical W (HFGW, beta = 0) between the views' posterior components.

    The smaller latent is zero-padded to the larger size (not rotation invariant).
    """

    def pair_term_value(
        self,
        s: int,
        t: int,
        post_s: Posterior,
        post_t: Posterior,
        generator: torch.Generator | None,
    ) -> Tensor:
        if post_s.std is None or post_t.std is None:
            raise ValueError("the AEs+W baseline needs probabilistic autoencoders")
        dim = max(post_s.dim, post_t.dim)
        return hierarchical_fgw(
            zero_pad(post_s.mean, dim),
            zero_pad(post_s.std, dim),
            zero_pad(post_t.mean, dim),
            zero_pad(post_t.std, dim),
            beta=0.0,
            n_outer=self.hfgw_steps,
        )


_MODEL_CLASSES: dict[str, tuple[type[MultiViewAutoencoders], bool, bool]] = {
    # name: (class, paired training, relational term on (tau > 0))
    "independent": (MultiViewAutoencoders, False, False),
    "coreg": (CoRegAutoencoders, True, True),
    "aes_cca": (CCAAutoencoders, True, True),
    "aes_w": (WassersteinAutoencoders, False, True),
    "aes_gw": (MultiViewAutoencoders, False, True),
}


@dataclass(frozen=True)
class AESettings:
    """Architecture and training of every autoencoder method (defaults: paper + our choices).

    ``latent_dim`` 20, ``gamma`` 1, ``tau`` 0.5, probabilistic AEs, hierarchical
    discrepancies are the paper's; hidden sizes, epochs, batch size and learning rate
    are ours (the paper defers them to its supplement). ``checkpoints``: epochs whose
    weights are kept for model selection (the last epoch is always kept). A value out of
    range (``epochs`` or ``latent_dim`` < 1, ``tau`` outside [0, 1], ``gamma`` < 0 or not
    finite, ``lr`` <= 0 or not finite) raises a ValueError naming the field.
    """

    latent_dim: int | tuple[int, ...] = 20
    hidden: tuple[int, ...] = (256,)
    probabilistic: bool = True
    discrepancy: str = "hierarchical"
    gamma: float = 1.0
    tau: float = 0.5
    epochs: int = 30
    batch_size: int = 100
    lr: float = 1e-3
    hfgw_steps: int = 20
    checkpoints: tuple[int, ...] = ()
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        # ``otae multiview`` relies on these checks (it names the option in the message)
        for name in ("epochs", "latent_dim"):
            value = getattr(self, name)
            if any(v < 1 for v in (value if isinstance(value, (tuple, list)) else (value,))):
                raise ValueError(f"{name} must be >= 1, got {value}")
        if not 0.0 <= self.tau <= 1.0:
            raise ValueError(f"tau must lie in [0, 1], got {self.tau}")
        if not 0.0 <= self.gamma < math.inf:
            raise ValueError(f"gamma must be finite and >= 0, got {self.gamma}")
        if not 0.0 < self.lr < math.inf:
            raise ValueError(f"lr must be a finite number > 0, got {self.lr}")
        if self.discrepancy == "empirical":  # POT is optional: say so before any work
            require_pot()


def _as_tensors(views: Sequence[np.ndarray | Tensor]) -> list[Tensor]:
    return [torch.as_tensor(np.asarray(v, dtype=np.float32)) for v in views]


class AutoencoderFeatures:
    """``fit`` / ``transform`` wrapper of one autoencoder method of :data:`METHODS`."""

    def __init__(
        self,
        name: str,
        settings: AESettings | None = None,
        seed: int = 0,
        view_names: Sequence[str] | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        if name not in _MODEL_CLASSES:
            raise ValueError(f"unknown autoencoder method {name!r}; one of {list(_MODEL_CLASSES)}")
        self.name = name
        self.settings = settings or AESettings()
        self.seed = int(seed)
        self.view_names = view_names
        self.log = log
        self.model: MultiViewAutoencoders | None = None
        self.snapshots: dict[int, dict[str, Tensor]] = {}
        self.history: list[dict[str, float]] = []

    @property
    def paired(self) -> bool:
        return _MODEL_CLASSES[self.name][1]

    @property
    def checkpoints(self) -> list[int]:
        """Epochs ``transform`` accepts (sorted; the last epoch included)."""
        return sorted(self.snapshots)

    def build(self, input_dims: Sequence[int]) -> MultiViewAutoencoders:
        cls, _, relational = _MODEL_CLASSES[self.name]
        s = self.settings
        return cls(
            input_dims,
            s.latent_dim,
            s.hidden,
            probabilistic=s.probabilistic,
            gamma=s.gamma,
            tau=s.tau if relational else 0.0,
            discrepancy=s.discrepancy,
            hfgw_steps=s.hfgw_steps,
            view_names=self.view_names,
            seed=self.seed,
            **s.extra,
        )

    def fit(self, train_views: Sequence[np.ndarray | Tensor]) -> AutoencoderFeatures:
        """Train on one array per view; row counts may differ unless the method is paired."""
        views = _as_tensors(train_views)
        self.model = self.build([v.shape[1] for v in views])
        s = self.settings
        keep = {e for e in s.checkpoints if 1 <= e <= s.epochs} | {s.epochs}
        self.snapshots = {}

        def snapshot(epoch: int, model: MultiViewAutoencoders) -> None:
            if epoch in keep:
                self.snapshots[epoch] = copy.deepcopy(model.state_dict())

        self.history = train_cotraining(
            self.model,
            views,
            epochs=s.epochs,
            batch_size=s.batch_size,
            lr=s.lr,
            paired=self.paired,
            seed=self.seed,
            log=self.log,
            on_epoch_end=snapshot,
        )
        return self

    def transform(
        self, views: Sequence[np.ndarray | Tensor], epoch: int | None = None
    ) -> np.ndarray:
        if self.model is None:
            raise RuntimeError(f"{self.name}: call fit before transform")
        epoch = max(self.snapshots) if epoch is None else int(epoch)
        if epoch not in self.snapshots:
            raise ValueError(f"no checkpoint at epoch {epoch}; have {self.checkpoints}")
        self.model.load_state_dict(self.snapshots[epoch])
        return self.model.features(_as_tensors(views)).numpy()

    def view_features(
        self, views: Sequence[np.ndarray | Tensor], epoch: int | None = None
    ) -> list[np.ndarray]:
        """The latent means of each view, i.e. :meth:`transform` split per view."""
        features = self.transform(views, epoch)
        return np.split(features, np.cumsum(self.model.latent_dims)[:-1], axis=1)


class CCAFeatures:
    """Linear CCA (scikit-learn) on two paired views; features = both canonical projections."""

    name = "cca"
    paired = True

    def __init__(self, n_components: int = 20, max_iter: int = 1000) -> None:
        self.n_components = int(n_components)
        self.max_iter = int(max_iter)
        self.cca = None

    @property
    def checkpoints(self) -> list[int]:
        return [0]

    def fit(self, train_views: Sequence[np.ndarray]) -> CCAFeatures:
        from sklearn.cross_decomposition import CCA

        if len(train_views) != 2:
            raise ValueError(f"CCA takes exactly 2 views, got {len(train_views)}")
        x, y = (np.asarray(v, dtype=np.float64) for v in train_views)
        k = min(self.n_components, x.shape[1], y.shape[1], x.shape[0])
        self.cca = CCA(n_components=k, max_iter=self.max_iter).fit(x, y)
        return self

    def transform(self, views: Sequence[np.ndarray], epoch: int | None = None) -> np.ndarray:
        if self.cca is None:
            raise RuntimeError("cca: call fit before transform")
        x, y = (np.asarray(v, dtype=np.float64) for v in views)
        xs, ys = self.cca.transform(x, y)
        return np.concatenate([xs, ys], 1).astype(np.float32)


def make_method(
    name: str,
    settings: AESettings | None = None,
    seed: int = 0,
    view_names: Sequence[str] | None = None,
    log: Callable[[str], None] | None = None,
):
    """A fresh, unfitted method of :data:`METHODS` (CCA uses ``latent_dim`` components)."""
    settings = settings or AESettings()
    if name == "cca":
        latent = settings.latent_dim
        return CCAFeatures(latent if isinstance(latent, int) else min(latent))
    return AutoencoderFeatures(name, settings, seed=seed, view_names=view_names, log=log)
