"""One base class for every autoencoder, its typed config, and the model registry.

A model is an encoder, a decoder and a prior plus *one* method, :meth:`Autoencoder.regulariser`,
that says how the batch posterior is pulled towards the prior. Everything else
(encoding, reparameterisation, reconstruction, sampling, conditional
generation, the loss bookkeeping) lives here once.

Units. ``loss()["reconstruction"]`` is always the mean over the batch
of the per-image *sum* of squared errors: the RAE paper's "Rec. loss" unit.
The optimised ``total`` is either

* ``reduction="mean"``: ``mean_i SSE_i + gamma * R``, or
* ``reduction="sum"`` (the RAE authors' code): ``sum_i SSE_i + gamma * R``,

where a per-sample regulariser (a KL term, shape ``(N,)``) is averaged or summed
accordingly, and a batch-level regulariser (a discrepancy between two point
clouds, a scalar) enters as computed, at the scale its own options choose
(e.g. ``scale="rae_authors"`` for the paper's sliced FGW).
"""

from __future__ import annotations

import inspect
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from .. import noise
from .._io import atomic_write, atomic_write_text
from .._version import __version__
from ..nn import Decoder, Encoder
from ..parallel import BatchShards
from ..priors import Prior, build_prior
from ..typed_config import from_dict, to_dict


@dataclass
class ModelConfig:
    """Fields every model has; each model extends it with its own dataclass."""

    name: str = ""
    latent_dim: int = 8
    #: weight of the regulariser (eq. 5)
    gamma: float = 1.0
    #: prior family (see ``otae list``) and its number of mixture components
    prior: str = "normal"
    n_components: int = 10
    #: "mean": per-image averages; "sum": per-batch sums as in the RAE authors' code
    reduction: str = "mean"
    #: models with an iterative solver (P-RAE, SAE, the spherical family): log what the
    #: solver did each step (``train_solver_*`` columns of history.csv: marginal error,
    #: last change, objective gain of the search...); costs extra operations per step
    diagnostics: bool = False

    def validate(self) -> None:
        if self.latent_dim < 1:
            raise ValueError(f"model.latent_dim must be >= 1, got {self.latent_dim}")
        if self.gamma < 0:
            raise ValueError(f"model.gamma must be >= 0, got {self.gamma}")
        if self.n_components < 1:
            raise ValueError(f"model.n_components must be >= 1, got {self.n_components}")
        if self.reduction not in ("mean", "sum"):
            raise ValueError(f"model.reduction must be 'mean' or 'sum', got {self.reduction!r}")


LossTerms = dict[str, Tensor]


class Autoencoder(nn.Module):
    """Encoder + decoder + prior; subclasses define :meth:`regulariser`.

    Class attributes a subclass sets:

    * ``config_class``: its :class:`ModelConfig` subclass;
    * ``probabilistic``: whether the encoder outputs a Gaussian posterior
      ``(mean, logvar)`` (sampled with the reparameterisation trick) or a point.
    """

    config_class: ClassVar[type[ModelConfig]] = ModelConfig
    probabilistic: ClassVar[bool] = False
    #: models with an adversarial critic (GWAE) set this and implement critic_loss
    has_critic: ClassVar[bool] = False
    #: whether :meth:`regulariser` is one scalar of the whole batch (an OT discrepancy
    #: between point clouds) rather than per-sample values: in data-parallel training
    #: its inputs are then gathered from every rank (``otae.parallel``)
    batch_regulariser: ClassVar[bool] = False
    #: a batch-level regulariser that also needs the images (gathered too)
    regulariser_reads_images: ClassVar[bool] = False
    #: the :mod:`otae.losses` module computing the regulariser, built from
    #: :meth:`loss_options` as the submodule ``discrepancy_loss``; None: no such module
    loss_class: ClassVar[type[nn.Module] | None] = None

    def __init__(self, config: ModelConfig, encoder: Encoder, decoder: Decoder, prior: Prior):
        super().__init__()
        config.validate()
        if encoder.latent_dim != config.latent_dim or decoder.latent_dim != config.latent_dim:
            raise ValueError(
                f"encoder/decoder latent sizes ({encoder.latent_dim}, {decoder.latent_dim}) "
                f"differ from model.latent_dim={config.latent_dim}"
            )
        if encoder.probabilistic != self.probabilistic:
            kind = "probabilistic" if self.probabilistic else "deterministic"
            raise ValueError(f"{type(self).__name__} needs a {kind} encoder")
        if prior.latent_dim != config.latent_dim:
            raise ValueError(
                f"prior latent size {prior.latent_dim} differs from "
                f"model.latent_dim={config.latent_dim}"
            )
        self.config = config
        self.encoder = encoder
        self.decoder = decoder
        self.prior = prior
        #: image shape, architecture and network options when built by :func:`build_model`
        #: (what :mod:`otae.models.pretrained` needs to rebuild it); None otherwise
        self.build_spec: dict[str, Any] | None = None
        #: this process's share of the batch in data-parallel training (set by the trainer)
        self.shards = BatchShards()
        # A prior built on the model's own encoder (VampPrior) holds an unregistered
        # reference to it, so the encoder's weights are stored once, under ``encoder.``.
        bind = getattr(prior, "bind", None)
        if callable(bind):
            bind(self.encoder)
        if config.diagnostics and not self.logs_solver:
            raise ValueError(
                f"model.diagnostics: {type(self).__name__} has no iterative solver to report on "
                "(P-RAE, SAE and the spherical family have one)"
            )
        if self.loss_class is not None:
            self.discrepancy_loss = self.loss_class(**self.loss_options())

    @property
    def logs_solver(self) -> bool:
        """Whether :attr:`loss_class` is an iterative solver that reports diagnostics."""
        return self.loss_class is not None and "diagnostics" in inspect.signature(
            self.loss_class
        ).parameters

    def solver_extras(self) -> dict[str, Tensor]:
        """The scalar diagnostics of the last regulariser call as ``solver_<key>`` extras
        (empty unless ``config.diagnostics``); plans and traces are left out of the logs."""
        if not self.config.diagnostics:
            return {}
        info = self.discrepancy_loss.last_diagnostics
        if info is None:
            return {}
        return {
            f"solver_{key}": torch.as_tensor(value, dtype=torch.float32)
            for key, value in info.items()
            if not isinstance(value, Tensor) or value.dim() == 0
        }

    def loss_options(self) -> dict[str, Any]:
        """Keyword arguments of :attr:`loss_class` read from ``config``."""
        return {}

    def synced_loss(self) -> nn.Module:
        """``discrepancy_loss`` with the options of the current config.

        The config stays the source of truth: a field edited after construction takes
        effect at the next call (only changed attributes are set, so a compiled step
        sees no mutation).
        """
        loss = self.discrepancy_loss
        for name, value in self.loss_options().items():
            if getattr(loss, name) != value:
                setattr(loss, name, value)
        return loss

    # ------------------------------------------------------------------ building
    @classmethod
    def build_prior(
        cls, config: ModelConfig, image_shape: Sequence[int], generator: torch.Generator | None
    ) -> Prior:
        """The prior this model uses; default: ``config.prior`` from the registry."""
        return build_prior(
            config.prior, config.latent_dim, config.n_components, generator=generator
        )

    # ------------------------------------------------------------------ forward pieces
    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.encoder.image_shape

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """Posterior ``(mean, logvar)``, each ``(N, d)``; ``logvar`` is None if deterministic."""
        return self.encoder(x)

    def reparameterise(
        self, mean: Tensor, logvar: Tensor | None, generator: noise.Generatorish = None
    ) -> Tensor:
        """One reparameterised draw ``mean + exp(logvar / 2) * eps`` (or ``mean``).

        In data-parallel training the noise is drawn for the whole global batch and
        each rank keeps its rows, so every row gets the noise it gets in one process.
        """
        if logvar is None:
            return mean
        eps = self.batch_randn(mean, generator)
        return mean + torch.exp(0.5 * logvar) * eps

    def batch_randn(self, like: Tensor, generator: noise.Generatorish) -> Tensor:
        """Standard normal noise shaped like the local rows ``like`` (drawn globally)."""
        shape = (self.shards.global_rows(like.shape[0]), *like.shape[1:])
        eps = noise.randn(shape, generator, device=like.device, dtype=like.dtype)
        return self.shards.local_rows(eps)

    def embed(self, x: Tensor) -> Tensor:
        """Codes used for downstream use and latent plots: the posterior means."""
        return self.encode(x)[0]

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder(z)

    def reconstruct(self, x: Tensor) -> Tensor:
        """Decode the posterior mean (no sampling noise)."""
        return self.decode(self.embed(x))

    def save_pretrained(
        self,
        directory: str | os.PathLike,
        *,
        data: dict[str, Any] | None = None,
        training: dict[str, Any] | None = None,
        with_critic: bool = False,
    ) -> Path:
        """Write this model to ``directory`` (created if needed) as ``config.json`` and
        ``model.safetensors``; returns the folder. ``data`` / ``training``: optional plain
        dicts stored in ``config.json`` (the data spec the model expects, the settings it was
        trained with). A model not built by :func:`~otae.models.build_model`, or of a class
        the registry does not know under its config's name, is refused (ValueError): it
        could not be rebuilt from the files.

        The modules only training uses (:meth:`training_only_modules`: GWAE's critic,
        FactorVAE's discriminator) are left out unless ``with_critic``: encoding,
        decoding and sampling do not read them, and FactorVAE's discriminator is most of
        its parameters. ``config.json`` lists what was left out (``omitted_modules``);
        a model reloaded without them has them at their initial values."""
        from safetensors.torch import save as save_tensors

        spec = self.build_spec
        name = getattr(self.config, "name", None)
        if spec is None or MODELS.get(name) is not type(self):
            raise ValueError(
                f"save_pretrained needs a model built by otae.models.build_model from a "
                f"registered model (got {type(self).__name__} named {name!r}): from_pretrained "
                "rebuilds it by name; register a custom model with otae.models.register_model"
            )
        directory = Path(directory)
        config = {
            "format": FORMAT,
            "otae_version": __version__,
            "model": to_dict(self.config),
            "network": {
                "architecture": spec["architecture"],
                "options": spec["network_options"],
            },
            "image_shape": list(spec["image_shape"]),
            "data": data,
            "training": training,
            "omitted_modules": [] if with_critic else list(self.training_only_modules()),
        }
        omitted = tuple(f"{name}." for name in config["omitted_modules"])
        # own contiguous copies: safetensors refuses shared or strided storage
        tensors = {
            k: v.detach().to("cpu").contiguous().clone()
            for k, v in self.state_dict().items()
            if not k.startswith(omitted)
        }
        metadata = {"format": str(FORMAT), "otae_version": __version__}
        payload = save_tensors(tensors, metadata=metadata)
        atomic_write(directory / WEIGHTS_FILE, lambda handle: handle.write(payload))
        atomic_write_text(directory / CONFIG_FILE, json.dumps(config, indent=2) + "\n")
        return directory

    def sample(self, n: int, generator: noise.Generatorish = None) -> Tensor:
        """``n`` generated images: decoded prior samples."""
        return self.decode(self.prior.sample(n, generator))

    def sample_component(self, k: int, n: int, generator: noise.Generatorish = None) -> Tensor:
        """``n`` images generated from prior component ``k`` (conditional generation)."""
        return self.decode(self.prior.sample_component(k, n, generator))

    # ------------------------------------------------------------------ objective
    def regulariser(
        self,
        x: Tensor,
        mean: Tensor,
        logvar: Tensor | None,
        z: Tensor,
        generator: noise.Generatorish,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """``(R, extras)``: ``R`` is per-sample ``(N,)`` or batch-level ``()``.

        ``extras`` are further named scalars to log (detached by the caller).
        """
        raise NotImplementedError

    def reduce(self, values: Tensor) -> Tensor:
        """Reduce a per-sample ``(N,)`` term by ``config.reduction``; scalars pass through.

        In data-parallel training ``values`` are this rank's rows and the result is
        this rank's share, scaled so that the ranks' *average* is the global
        reduction (a local sum is multiplied by the world size).
        """
        if values.dim() == 0:
            return values
        if self.config.reduction == "sum":
            return values.sum() * self.shards.sum_scale
        return values.mean()

    def batch_regulariser_inputs(
        self, x: Tensor, mean: Tensor, logvar: Tensor | None, z: Tensor
    ) -> tuple[Tensor, Tensor, Tensor | None, Tensor]:
        """The regulariser's inputs, gathered over ranks (with gradients) for batch-level
        terms in ``global`` mode, and in float32: OT discrepancies are not computed in
        reduced precision (sorted-projection differences, moment expansions of the FGW
        cost and Sinkhorn's ``cost / epsilon`` cancel or amplify rounding that bf16's
        8-bit mantissa makes large)."""
        if self.batch_regulariser:
            gather = self.shards.gather
            mean, z = gather(mean), gather(z)
            logvar = None if logvar is None else gather(logvar)
            if self.regulariser_reads_images:  # none of the shipped batch-level terms does
                x = gather(x)
        return upcast(x), upcast(mean), None if logvar is None else upcast(logvar), upcast(z)

    def loss(self, x: Tensor, generator: noise.Generatorish = None) -> LossTerms:
        """Loss terms of a batch: ``reconstruction``, ``regulariser``, ``total`` (+ extras)."""
        mean, logvar = self.encode(x)
        z = self.reparameterise(mean, logvar, generator)
        x_hat = self.decode(z)
        sse = (upcast(x_hat) - x).pow(2).flatten(1).sum(1)
        with full_precision(x):
            reg, extras = self.regulariser(
                *self.batch_regulariser_inputs(x, mean, logvar, z), generator
            )
        reg = self.reduce(reg)
        total = self.reduce(sse) + self.config.gamma * reg
        return {"total": total, "reconstruction": sse.mean(), "regulariser": reg, **extras}

    def reconstruction_objective(
        self, x: Tensor, generator: noise.Generatorish = None
    ) -> Tensor:
        """The reconstruction part of the objective alone (a plain autoencoder step).

        Used to time a step without the regulariser; same encoder noise as :meth:`loss`.
        """
        mean, logvar = self.encode(x)
        z = self.reparameterise(mean, logvar, generator)
        return self.reduce((upcast(self.decode(z)) - x).pow(2).flatten(1).sum(1))

    def critic_loss(
        self, x: Tensor, generator: noise.Generatorish = None, reuse_samples: bool = False
    ) -> LossTerms:
        """Loss of the adversarial critic on batch ``x``; ``reuse_samples``: a later critic
        step on the same batch (a model may reuse the first step's samples)."""
        raise NotImplementedError(f"{type(self).__name__} has no critic")

    def critic_parameters(self) -> list[nn.Parameter]:
        return []

    def training_only_modules(self) -> tuple[str, ...]:
        """Names of the submodules that only training uses (a critic), which an export
        may leave out: :meth:`encode`, :meth:`decode` and :meth:`sample` never read them."""
        return ()

    def draw_schedule_key(self) -> tuple:
        """State on which the sequence of random draws of :meth:`loss` depends (hashable).

        A compiled step records a model's draws once per key (otae.training.compiled):
        a model that draws differently in some state (e.g. a search that draws random
        starts until it has a warm start) returns that state here.
        """
        return ()

    def end_of_batch(self) -> None:
        """Hook after each optimiser step (e.g. to keep parameters on a manifold).

        Runs the prior's own hook (the vMF mixture renormalises its locations there).
        """
        self.prior.end_of_batch()


class PriorSampleAutoencoder(Autoencoder):
    """Deterministic encoder; ``R`` is a batch-level discrepancy between the codes and
    as many prior samples (WAE, SWAE, D-RAE, SAE, the spherical sliced FGW family).

    :meth:`regulariser` draws the ``N`` prior samples from the ``generator`` passed to
    :meth:`loss` *first*, then hands both point clouds to :meth:`discrepancy`, which may
    draw further randomness (directions, search starts) from the same generator.
    """

    probabilistic = False
    batch_regulariser = True

    def regulariser(self, x, mean, logvar, z, generator):
        y = self.prior.sample(z.shape[0], generator)
        return self.discrepancy(z, y, generator), self.solver_extras()

    def discrepancy(self, z: Tensor, y: Tensor, generator: noise.Generatorish) -> Tensor:
        """Scalar discrepancy between codes ``z`` and prior samples ``y``, both ``(N, d)``;
        default: the ``discrepancy_loss`` module with the loss's ``generator``."""
        return self.synced_loss()(z, y, generator=generator)


def upcast(t: Tensor) -> Tensor:
    """``t`` in float32 if it is in a reduced precision (bf16/fp16 under autocast)."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def full_precision(like: Tensor):
    """Autocast off for ``like``'s device type (a no-op outside autocast regions)."""
    return torch.autocast(like.device.type, enabled=False)


# ---------------------------------------------------------------------- registry
MODELS: dict[str, type[Autoencoder]] = {}

#: the version of the folder layout :meth:`Autoencoder.save_pretrained` writes (a newer
#: one is refused by :func:`otae.models.from_pretrained`)
FORMAT = 1
#: the files of a saved model
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


def register_model(name: str) -> Callable[[type[Autoencoder]], type[Autoencoder]]:
    def decorate(cls: type[Autoencoder]) -> type[Autoencoder]:
        if name in MODELS:
            raise ValueError(f"model {name!r} registered twice")
        MODELS[name] = cls
        cls.model_name = name  # type: ignore[attr-defined]
        return cls

    return decorate


def get_model_class(name: str) -> type[Autoencoder]:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(
            f"unknown model {name!r}; known models: {', '.join(sorted(MODELS))}"
        ) from None


def model_config_from_dict(values: dict[str, Any]) -> ModelConfig:
    """Typed config of the model named in ``values['name']``; unknown keys are an error."""
    if "name" not in values:
        raise ValueError("model config needs a 'name' (see `otae list`)")
    cls = get_model_class(str(values["name"])).config_class
    config = from_dict(cls, values, "model")
    config.validate()
    return config


def build_model(
    config: ModelConfig,
    image_shape: Sequence[int],
    architecture: str = "mlp",
    network_options: dict[str, Any] | None = None,
    generator: torch.Generator | None = None,
) -> Autoencoder:
    """Model ``config.name`` with networks ``architecture`` for images ``image_shape``.

    ``generator`` seeds the prior's random initialisation (network weights use
    torch's global RNG: seed it with ``torch.manual_seed`` for reproducibility).
    """
    from ..nn import build_networks

    config.validate()
    cls = get_model_class(config.name)
    encoder, decoder = build_networks(
        architecture, image_shape, config.latent_dim, cls.probabilistic, **(network_options or {})
    )
    prior = cls.build_prior(config, image_shape, generator)
    model = cls(config, encoder, decoder, prior)
    # what rebuilds this model from its config alone (otae.models.pretrained)
    model.build_spec = {
        "image_shape": [int(s) for s in image_shape],
        "architecture": architecture,
        "network_options": dict(network_options or {}),
    }
    return model
