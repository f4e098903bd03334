r"""Relational co-training of S >= 2 autoencoders on vector views (RAE paper §4, eq. 14).

Each view s has its own MLP autoencoder (input size :math:`d_s`, hidden sizes and latent
size :math:`k_s` may differ between views) and its own prior :math:`p_s = N(0, I_{k_s})`.
For one batch per view the objective is the generalisation of eq. 14 to S views

.. math::

    \sum_s \big[\mathrm{rec}_s + \gamma (1-\tau) D(q_s, p_s)\big]
      + \frac{2 \gamma \tau}{S - 1} \sum_{s < t} D_{gw}(q_s, q_t),

which for S = 2 is eq. 14 exactly (factor :math:`2\gamma\tau`); with S views each view
takes part in S - 1 pairs, so the factor keeps the relational weight per view at
:math:`2\gamma\tau` whatever S. :math:`\mathrm{rec}_s` is the batch mean of the
per-sample SUM of squared errors; :math:`q_s` is the batch posterior of view s.

The batches of the views need not be paired: :func:`epoch_batches` draws an independent
permutation per view unless ``paired=True``, and nothing in the loss uses the row order
across views (every pair term is a transport problem between the two sets).

Discrepancies (``discrepancy=``):

* ``"hierarchical"`` (the paper's choice, probabilistic AEs). :math:`D` is the
  hierarchical Wasserstein distance, :func:`~otae.discrepancies.hierarchical_fgw` with
  ``beta = 0``, between the N posterior components :math:`N(\mu_i, \mathrm{diag}\,
  \sigma_i^2)` of the batch and the prior. By default (``prior_components=None``) the
  prior is ONE component :math:`N(0, I)`, so the plan is trivial and
  :math:`D = \frac1N \sum_i \lVert\mu_i\rVert^2 + \lVert\sigma_i - 1\rVert^2`; with
  ``prior_components=K`` the prior is instead its empirical measure on K fresh draws
  :math:`y_k \sim N(0, I)` (Dirac components, :math:`\sigma = 0`), which matches the
  aggregate posterior to the prior but also pulls the posterior std devs to 0.
  :math:`D_{gw}` is the hierarchical GW distance, ``hierarchical_fgw(beta=1)``, between
  the two views' component sets. GW compares intra-set costs only, so different latent
  sizes are allowed: the smaller latent (means and std devs) is zero-padded to the larger
  size, which leaves every intra-set cost :math:`W_2^2` unchanged (isometric embedding)
  and only feeds a cross cost that ``beta = 1`` multiplies by 0.
* ``"sliced"`` (deterministic AEs). :math:`D` = :func:`~otae.discrepancies.
  sliced_wasserstein` between the codes and N prior draws; :math:`D_{gw}` =
  :func:`~otae.discrepancies.sliced_gw` between the two views' codes. Sliced GW projects
  both sets on SHARED directions, so it needs one dimension: the smaller code is
  zero-padded to the larger dimension (an isometric embedding, so the true GW is
  unchanged; the sliced estimate is not rotation invariant in any case).
* ``"empirical"`` (small batches). :math:`D_{gw}` = :func:`~otae.discrepancies.
  empirical_gw` (POT's conditional gradient, squared Euclidean intra costs, any
  dimensions) between the codes; :math:`D` = sliced Wasserstein (``prior_term="sliced"``)
  or the IMQ MMD of WAE (``prior_term="mmd"``) between the codes and prior draws.

"Codes" are the reparameterised samples :math:`z = \mu + \sigma \odot \epsilon` for
probabilistic AEs and the means for deterministic ones.

Randomness: :meth:`MultiViewAutoencoders.loss` takes a ``torch.Generator`` and draws, in
this order: the noise :math:`\epsilon_s` of each view (probabilistic AEs, ``randn`` of
the mean's shape, view by view), then per view the prior draws its :math:`D` needs
(K or N rows), then per pair the shared directions of sliced GW (``"sliced"`` only).
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from ..discrepancies import (
    empirical_gw,
    hierarchical_fgw,
    input_checks,
    mmd,
    sliced_gw,
    sliced_wasserstein,
)
from ..discrepancies.gromov import require_pot
from ..sphere import uniform_directions
from ..training import NonFiniteLossError

__all__ = [
    "DISCREPANCIES",
    "MULTIVIEW_CLASSES",
    "CoTrainingDiverged",
    "MultiViewAutoencoders",
    "Posterior",
    "ViewAutoencoder",
    "epoch_batches",
    "prior_discrepancy",
    "register_multiview",
    "relational_discrepancy",
    "train_cotraining",
    "zero_pad",
]

Discrepancy = Literal["hierarchical", "sliced", "empirical"]
DISCREPANCIES = ("hierarchical", "sliced", "empirical")
PriorTerm = Literal["sliced", "mmd"]


@dataclass
class Posterior:
    """Batch posterior of one view: means, std devs (None if deterministic) and codes."""

    mean: Tensor
    std: Tensor | None
    code: Tensor

    @property
    def dim(self) -> int:
        return int(self.mean.shape[1])


def zero_pad(x: Tensor, dim: int) -> Tensor:
    """(N, k) -> (N, dim) by appending ``dim - k`` zero columns (isometric embedding)."""
    k = x.shape[1]
    if k > dim:
        raise ValueError(f"cannot pad a {k}-d tensor to {dim} dimensions")
    if k == dim:
        return x
    return torch.cat((x, x.new_zeros(x.shape[0], dim - k)), 1)


def _mlp(sizes: Sequence[int]) -> nn.Sequential:
    """Linear layers between consecutive ``sizes`` with ReLU between them (not after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(int(a), int(b)))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class ViewAutoencoder(nn.Module):
    """MLP autoencoder of one vector view.

    Encoder: ``hidden`` ReLU layers, then a linear mean head and (probabilistic) a linear
    log-variance head. Decoder: the reversed hidden sizes with ReLU, then a linear layer to
    the ``input_dim`` features (no output non-linearity: views are preprocessed, e.g.
    standardised, not bounded).
    """

    def __init__(
        self,
        input_dim: int,
        latent_dim: int,
        hidden: Sequence[int] = (256,),
        probabilistic: bool = True,
    ) -> None:
        super().__init__()
        if int(input_dim) < 1 or int(latent_dim) < 1:
            raise ValueError(
                f"input_dim and latent_dim must be >= 1, got {input_dim}, {latent_dim}"
            )
        self.input_dim, self.latent_dim = int(input_dim), int(latent_dim)
        self.probabilistic = bool(probabilistic)
        hidden = [int(h) for h in hidden]
        body: list[nn.Module] = []
        width = self.input_dim
        for h in hidden:
            body += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.body = nn.Sequential(*body)
        self.mean_head = nn.Linear(width, self.latent_dim)
        self.logvar_head = nn.Linear(width, self.latent_dim) if self.probabilistic else None
        self.decoder = _mlp([self.latent_dim, *reversed(hidden), self.input_dim])

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        if not isinstance(x, Tensor) or x.dim() != 2 or x.shape[1] != self.input_dim:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"view autoencoder expects (N, {self.input_dim}) input, got {got}")
        h = self.body(x)
        logvar = self.logvar_head(h) if self.logvar_head is not None else None
        return self.mean_head(h), logvar

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder(z)


def _per_view(value, n_views: int) -> list:
    """Broadcast one value to all views, or check a per-view sequence has S entries."""
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        if len(value) == n_views and all(
            isinstance(v, Sequence) and not isinstance(v, (str, bytes)) for v in value
        ):
            return [tuple(v) for v in value]
    return [value] * n_views


def prior_discrepancy(
    kind: Discrepancy,
    post: Posterior,
    *,
    generator: torch.Generator | None = None,
    prior_components: int | None = None,
    prior_term: PriorTerm = "sliced",
    n_projections: int = 50,
    hfgw_steps: int = 20,
) -> Tensor:
    """D(q_s, N(0, I)) of the module docstring for one view's batch posterior."""
    n, d = post.mean.shape
    if kind == "hierarchical":
        if post.std is None:
            raise ValueError("discrepancy='hierarchical' needs a probabilistic autoencoder")
        if prior_components is None:
            mu_q, sigma_q = post.mean.new_zeros(1, d), post.mean.new_ones(1, d)
        else:
            mu_q = torch.randn(
                int(prior_components), d, generator=generator, dtype=post.mean.dtype
            ).to(post.mean.device)
            sigma_q = torch.zeros_like(mu_q)
        return hierarchical_fgw(post.mean, post.std, mu_q, sigma_q, beta=0.0, n_outer=hfgw_steps)
    prior = torch.randn(n, d, generator=generator, dtype=post.code.dtype).to(post.code.device)
    if kind == "empirical" and prior_term == "mmd":
        return mmd(post.code, prior)
    directions = (
        uniform_directions(n_projections, d, generator=generator, dtype=post.code.dtype)
        .to(post.code.device)
        .T
    )
    return sliced_wasserstein(post.code, prior, projections=directions)


def relational_discrepancy(
    kind: Discrepancy,
    post_s: Posterior,
    post_t: Posterior,
    *,
    generator: torch.Generator | None = None,
    n_projections: int = 50,
    hfgw_steps: int = 20,
    gw_max_iter: int = 1000,
) -> Tensor:
    """D_gw(q_s, q_t) of the module docstring; latent sizes may differ."""
    dim = max(post_s.dim, post_t.dim)
    if kind == "hierarchical":
        if post_s.std is None or post_t.std is None:
            raise ValueError("discrepancy='hierarchical' needs probabilistic autoencoders")
        return hierarchical_fgw(
            zero_pad(post_s.mean, dim),
            zero_pad(post_s.std, dim),
            zero_pad(post_t.mean, dim),
            zero_pad(post_t.std, dim),
            beta=1.0,
            n_outer=hfgw_steps,
        )
    if kind == "sliced":
        x, y = zero_pad(post_s.code, dim), zero_pad(post_t.code, dim)
        directions = (
            uniform_directions(n_projections, dim, generator=generator, dtype=x.dtype)
            .to(x.device)
            .T
        )
        return sliced_gw(x, y, projections=directions)
    if kind == "empirical":
        return empirical_gw(post_s.code, post_t.code, max_iter=gw_max_iter)
    raise ValueError(f"discrepancy must be one of {DISCREPANCIES}, got {kind!r}")


#: the classes a saved folder may name (``multiview.class`` of its ``config.json``), by
#: class name: :class:`MultiViewAutoencoders` and the baselines' subclasses
#: (:func:`register_multiview`)
MULTIVIEW_CLASSES: dict[str, type[MultiViewAutoencoders]] = {}


def register_multiview(cls: type[MultiViewAutoencoders]) -> type[MultiViewAutoencoders]:
    """Class decorator: ``cls`` may be saved and rebuilt by its name
    (:meth:`MultiViewAutoencoders.save_pretrained`, :func:`otae.cotraining.from_pretrained`)."""
    if cls.__name__ in MULTIVIEW_CLASSES:
        raise ValueError(f"multi-view class {cls.__name__!r} registered twice")
    MULTIVIEW_CLASSES[cls.__name__] = cls
    return cls


@register_multiview
class MultiViewAutoencoders(nn.Module):
    """S >= 2 autoencoders co-trained with the relational objective (module docstring).

    Args:
        input_dims: feature count d_s of each view (S >= 2 entries).
        latent_dims: one latent size for all views, or one per view (paper: 20).
        hidden: hidden sizes of every encoder (decoders use them reversed), or one
            sequence per view.
        probabilistic: mean and log-variance heads, reparameterised codes (default);
            ``False`` gives deterministic encoders (codes = means).
        gamma, tau: weights of eq. 14 (paper: 1 and 0.5); ``tau = 0`` drops the
            relational term (independent AEs), ``tau = 1`` the prior terms.
        discrepancy: ``"hierarchical"``, ``"sliced"`` or ``"empirical"``.
        prior_components: ``"hierarchical"`` only: None = the prior as one N(0, I)
            component; K = K Dirac components at fresh N(0, I) draws.
        prior_term: ``"empirical"`` only: D = sliced W (``"sliced"``) or MMD (``"mmd"``).
        n_projections: directions of the sliced terms. hfgw_steps: proximal steps of
            ``hierarchical_fgw``. gw_max_iter: POT iterations of ``empirical_gw``.
        view_names: names used in the loss dict (default ``view0``, ``view1``, ...).
        seed: if given, the weights are initialised from ``torch.manual_seed(seed)``
            inside ``torch.random.fork_rng`` (the global RNG is left untouched).
    """

    def __init__(
        self,
        input_dims: Sequence[int],
        latent_dims: int | Sequence[int] = 20,
        hidden: Sequence[int] | Sequence[Sequence[int]] = (256,),
        probabilistic: bool = True,
        gamma: float = 1.0,
        tau: float = 0.5,
        discrepancy: Discrepancy = "hierarchical",
        prior_components: int | None = None,
        prior_term: PriorTerm = "sliced",
        n_projections: int = 50,
        hfgw_steps: int = 20,
        gw_max_iter: int = 1000,
        view_names: Sequence[str] | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        input_dims = [int(d) for d in input_dims]
        n_views = len(input_dims)
        if n_views < 2:
            raise ValueError(f"co-training needs at least 2 views, got {n_views}")
        if isinstance(latent_dims, int):
            latent_dims = [latent_dims] * n_views
        latent_dims = [int(k) for k in latent_dims]
        if len(latent_dims) != n_views:
            raise ValueError(f"latent_dims has {len(latent_dims)} entries for {n_views} views")
        hiddens = _per_view(hidden, n_views)
        if discrepancy not in DISCREPANCIES:
            raise ValueError(f"discrepancy must be one of {DISCREPANCIES}, got {discrepancy!r}")
        if discrepancy == "empirical":  # fail before training, not at its first batch
            require_pot()
        if discrepancy == "hierarchical" and not probabilistic:
            raise ValueError("discrepancy='hierarchical' needs probabilistic=True")
        if prior_term not in ("sliced", "mmd"):
            raise ValueError(f"prior_term must be 'sliced' or 'mmd', got {prior_term!r}")
        if not 0.0 <= float(tau) <= 1.0 or float(gamma) < 0.0:
            raise ValueError(f"need gamma >= 0 and tau in [0, 1], got {gamma}, {tau}")
        names = list(view_names) if view_names is not None else [f"view{i}" for i in range(n_views)]
        if len(names) != n_views or len(set(names)) != n_views:
            raise ValueError(f"view_names must be {n_views} distinct names, got {names}")
        self.view_names = names
        self.input_dims, self.latent_dims = input_dims, latent_dims
        self.probabilistic = bool(probabilistic)
        self.gamma, self.tau = float(gamma), float(tau)
        self.discrepancy = discrepancy
        self.prior_components = prior_components
        self.prior_term = prior_term
        self.n_projections, self.hfgw_steps = int(n_projections), int(hfgw_steps)
        self.gw_max_iter = int(gw_max_iter)
        rng = torch.random.fork_rng() if seed is not None else contextlib.nullcontext()
        with rng:
            if seed is not None:
                torch.manual_seed(int(seed))
            self.autoencoders = nn.ModuleList(
                ViewAutoencoder(d, k, h, probabilistic)
                for d, k, h in zip(input_dims, latent_dims, hiddens, strict=True)
            )

    @property
    def n_views(self) -> int:
        return len(self.autoencoders)

    @property
    def pair_weight(self) -> float:
        """2 gamma tau / (S - 1): the weight of each pair term."""
        return 2.0 * self.gamma * self.tau / (self.n_views - 1)

    @property
    def prior_weight(self) -> float:
        """gamma (1 - tau): the weight of each view's prior term."""
        return self.gamma * (1.0 - self.tau)

    def encode(self, view_index: int, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """(mean, logvar) of view ``view_index``; logvar is None for deterministic AEs."""
        return self.autoencoders[view_index].encode(x)

    def decode(self, view_index: int, z: Tensor) -> Tensor:
        return self.autoencoders[view_index].decode(z)

    def posterior(
        self, view_index: int, x: Tensor, generator: torch.Generator | None = None
    ) -> Posterior:
        """Encode and reparameterise (noise drawn from ``generator``)."""
        mean, logvar = self.encode(view_index, x)
        if logvar is None:
            return Posterior(mean, None, mean)
        std = torch.exp(0.5 * logvar)
        eps = torch.randn(mean.shape, generator=generator, dtype=mean.dtype).to(mean.device)
        return Posterior(mean, std, mean + std * eps)

    @torch.no_grad()
    def features(self, views: Sequence[Tensor]) -> Tensor:
        """Concatenated latent means of paired rows of all views, (N, sum_s k_s)."""
        if len(views) != self.n_views:
            raise ValueError(f"expected {self.n_views} views, got {len(views)}")
        was_training = self.training
        self.eval()
        try:
            return torch.cat([self.encode(i, x)[0] for i, x in enumerate(views)], 1)
        finally:
            self.train(was_training)

    def pretrained_arguments(self) -> dict[str, Any]:
        """The class name and every constructor argument but ``seed``, as plain values:
        what ``config.json`` of :meth:`save_pretrained` holds under ``multiview``."""
        return {
            "class": type(self).__name__,
            "input_dims": list(self.input_dims),
            "latent_dims": list(self.latent_dims),
            "hidden": [
                [int(m.out_features) for m in view.body if isinstance(m, nn.Linear)]
                for view in self.autoencoders
            ],
            "probabilistic": self.probabilistic,
            "gamma": self.gamma,
            "tau": self.tau,
            "discrepancy": self.discrepancy,
            "prior_components": self.prior_components,
            "prior_term": self.prior_term,
            "n_projections": self.n_projections,
            "hfgw_steps": self.hfgw_steps,
            "gw_max_iter": self.gw_max_iter,
            "view_names": list(self.view_names),
        }

    def save_pretrained(
        self,
        directory: str | os.PathLike,
        *,
        data: dict[str, Any] | None = None,
        training: dict[str, Any] | None = None,
    ) -> Path:
        """Write this model to ``directory`` (created if needed) as ``config.json``
        (``"kind": "multiview"``, :meth:`pretrained_arguments`, ``data`` and ``training``:
        optional plain dicts) + ``model.safetensors`` (every view's encoder and decoder);
        returns the folder. :func:`otae.cotraining.from_pretrained` reloads it. A class
        not in :data:`MULTIVIEW_CLASSES` is refused (ValueError): it could not be rebuilt."""
        from ..models.pretrained import write_pretrained

        name = type(self).__name__
        if MULTIVIEW_CLASSES.get(name) is not type(self):
            raise ValueError(
                f"save_pretrained rebuilds a multi-view model by its class name; {name} is "
                f"not one of {', '.join(MULTIVIEW_CLASSES)} (otae.cotraining.MULTIVIEW_CLASSES)"
            )
        config = {"kind": "multiview", "multiview": self.pretrained_arguments(), "data": data,
                  "training": training}  # fmt: skip
        return write_pretrained(directory, config, self.state_dict())

    # Hooks the baselines override -------------------------------------------------------
    def prior_term_value(
        self, view_index: int, post: Posterior, generator: torch.Generator | None
    ) -> Tensor:
        """D(q_s, p_s) for one view."""
        return prior_discrepancy(
            self.discrepancy,
            post,
            generator=generator,
            prior_components=self.prior_components,
            prior_term=self.prior_term,
            n_projections=self.n_projections,
            hfgw_steps=self.hfgw_steps,
        )

    def pair_term_value(
        self,
        s: int,
        t: int,
        post_s: Posterior,
        post_t: Posterior,
        generator: torch.Generator | None,
    ) -> Tensor:
        """D_gw(q_s, q_t) for one pair s < t."""
        return relational_discrepancy(
            self.discrepancy,
            post_s,
            post_t,
            generator=generator,
            n_projections=self.n_projections,
            hfgw_steps=self.hfgw_steps,
            gw_max_iter=self.gw_max_iter,
        )

    # -------------------------------------------------------------------------------------
    def loss(
        self, batches: Sequence[Tensor], generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """The objective and its terms for one batch per view (rows need not be paired).

        Returns a dict: ``total``; per view ``rec_<name>`` and ``reg_<name>`` (the
        unweighted D); ``pair_<name_s>_<name_t>`` per pair (unweighted D_gw); and
        ``relational``, the unweighted sum of the pair terms. ``total`` is
        ``sum rec + prior_weight * sum reg + pair_weight * relational``. With ``tau = 0``
        no pair term is computed (``relational`` is 0); with ``tau = 1`` no prior term.
        """
        if len(batches) != self.n_views:
            raise ValueError(f"expected {self.n_views} batches, got {len(batches)}")
        posts = [self.posterior(i, x, generator) for i, x in enumerate(batches)]
        terms: dict[str, Tensor] = {}
        total = batches[0].new_zeros(())
        for i, (x, post) in enumerate(zip(batches, posts, strict=True)):
            rec = (self.decode(i, post.code) - x).square().sum(1).mean()
            terms[f"rec_{self.view_names[i]}"] = rec
            total = total + rec
        for i, post in enumerate(posts):
            if self.prior_weight > 0:
                reg = self.prior_term_value(i, post, generator)
                total = total + self.prior_weight * reg
            else:
                reg = total.new_zeros(())
            terms[f"reg_{self.view_names[i]}"] = reg
        relational = total.new_zeros(())
        if self.pair_weight > 0:
            for s in range(self.n_views):
                for t in range(s + 1, self.n_views):
                    value = self.pair_term_value(s, t, posts[s], posts[t], generator)
                    terms[f"pair_{self.view_names[s]}_{self.view_names[t]}"] = value
                    relational = relational + value
            total = total + self.pair_weight * relational
        terms["relational"] = relational
        terms["total"] = total
        return terms


def epoch_batches(
    sizes: Sequence[int],
    batch_size: int,
    paired: bool,
    generator: torch.Generator | None = None,
) -> list[list[Tensor]]:
    """Row indices of the batches of one epoch: a list of steps, each one index tensor per view.

    Unpaired (default use): each view draws its OWN permutation of its rows, so the k-th
    rows of two views' batches are unrelated samples. Paired: one permutation shared by
    all views (all sizes must agree). Every step has ``min(batch_size, min(sizes))`` rows
    in every view; there are ``min(sizes) // that`` steps (the incomplete tail of each
    permutation is dropped, so the sliced terms see equal batch sizes).
    """
    sizes = [int(n) for n in sizes]
    if paired and len(set(sizes)) != 1:
        raise ValueError(f"paired batches need views with equal row counts, got {sizes}")
    b = min(int(batch_size), min(sizes))
    if b < 2:
        raise ValueError(f"batches need at least 2 rows, got batch_size={batch_size}, {sizes}")
    steps = min(sizes) // b
    if paired:
        perm = torch.randperm(sizes[0], generator=generator)
        perms = [perm] * len(sizes)
    else:
        perms = [torch.randperm(n, generator=generator) for n in sizes]
    return [[p[k * b : (k + 1) * b] for p in perms] for k in range(steps)]


class CoTrainingDiverged(NonFiniteLossError):
    """Co-training stopped at the first step whose objective was not finite, or after the
    first epoch that left a parameter non-finite.

    ``epoch`` (1-based), ``step`` (1-based batch index within the epoch, or None when
    the parameters were found non-finite at the end of the epoch), ``terms`` (the step's
    loss terms as floats, empty for a parameter check) and ``non_finite`` (the names of
    the terms, or of the parameters, that were not finite, in order).
    """

    def __init__(
        self,
        epoch: int,
        step: int | None,
        terms: dict[str, float],
        non_finite: list[str],
    ) -> None:
        self.epoch, self.step, self.terms, self.non_finite = epoch, step, terms, non_finite
        where = f"epoch {epoch}, step {step}" if step is not None else f"the end of epoch {epoch}"
        what = "loss terms" if step is not None else "parameters"
        names = ", ".join(non_finite[:4]) + (", ..." if len(non_finite) > 4 else "")
        super().__init__(f"co-training diverged at {where}: non-finite {what} {names}")


def _non_finite_terms(terms: dict[str, float]) -> list[str]:
    # The per-view and pair terms name the culprit; "relational" and "total" only echo it.
    named = [k for k, v in terms.items() if not math.isfinite(v)]
    specific = [k for k in named if k not in ("relational", "total")]
    return specific or named


def train_cotraining(
    model: MultiViewAutoencoders,
    train_views: Sequence[Tensor],
    *,
    epochs: int,
    batch_size: int = 100,
    lr: float = 1e-3,
    paired: bool = False,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
    on_epoch_end: Callable[[int, MultiViewAutoencoders], None] | None = None,
) -> list[dict[str, float]]:
    """Adam on the model's loss; deterministic given ``seed`` (shuffles and noise).

    One ``torch.Generator`` seeded with ``seed`` draws the permutations of
    :func:`epoch_batches` and all noise of :meth:`MultiViewAutoencoders.loss`.
    ``on_epoch_end(epoch, model)`` (1-based epoch) lets a caller snapshot checkpoints.
    Input checks of :mod:`otae.discrepancies` are switched off inside the loop.

    The loop stops with :class:`CoTrainingDiverged` at the first step whose loss is not
    finite (before that step's update), or at the end of an epoch that left a parameter
    non-finite; the loss terms are read on the host every step anyway (for the epoch
    means), so the check costs no extra synchronisation.

    Returns one dict per epoch: ``epoch``, ``seconds`` and the epoch means of all terms.
    """
    if len(train_views) != model.n_views:
        raise ValueError(f"expected {model.n_views} views, got {len(train_views)}")
    views = [torch.as_tensor(v, dtype=torch.float32) for v in train_views]
    generator = torch.Generator().manual_seed(int(seed))
    optimiser = torch.optim.Adam(model.parameters(), lr=float(lr))
    history: list[dict[str, float]] = []
    model.train()
    for epoch in range(1, int(epochs) + 1):
        start = time.perf_counter()
        sums: dict[str, float] = {}
        steps = epoch_batches([len(v) for v in views], batch_size, paired, generator)
        for step, idx in enumerate(steps, 1):
            with input_checks(False):
                terms = model.loss([v[i] for v, i in zip(views, idx, strict=True)], generator)
            values = {key: float(value.detach()) for key, value in terms.items()}
            if not math.isfinite(values["total"]):
                raise CoTrainingDiverged(epoch, step, values, _non_finite_terms(values))
            optimiser.zero_grad(set_to_none=True)
            terms["total"].backward()
            optimiser.step()
            for key, value in values.items():
                sums[key] = sums.get(key, 0.0) + value
        bad = [name for name, p in model.named_parameters() if not bool(torch.isfinite(p).all())]
        if bad:
            raise CoTrainingDiverged(epoch, None, {}, bad)
        record = {"epoch": float(epoch), "seconds": time.perf_counter() - start}
        record.update({k: v / max(len(steps), 1) for k, v in sums.items()})
        history.append(record)
        if log is not None:
            log(
                f"epoch {epoch}: total {record['total']:.4g} relational "
                f"{record['relational']:.4g} ({record['seconds']:.2f} s)"
            )
        if on_epoch_end is not None:
            on_epoch_end(epoch, model)
    model.eval()
    return history
