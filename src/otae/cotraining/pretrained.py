"""Multi-view (co-training) models as a folder of plain files, as single models are.

:meth:`~otae.cotraining.MultiViewAutoencoders.save_pretrained` (or
:func:`save_pretrained`) writes, and :func:`from_pretrained` reads back, a
:class:`~otae.cotraining.MultiViewAutoencoders` (or one of the baselines' subclasses)
with S views:

* ``config.json``: the format and otae versions, ``"kind": "multiview"``, and under
  ``multiview`` the class name (one of :data:`~otae.cotraining.MULTIVIEW_CLASSES`) and
  every constructor argument (input and latent sizes, hidden sizes per view,
  probabilistic, discrepancy, gamma, tau, the discrepancy's options, the view names),
  optionally ``data`` and ``training`` (plain dicts: e.g. the views' preprocessing, the
  settings it was trained with);
* ``model.safetensors``: every view's encoder and decoder (``autoencoders.<s>.*``).

The readers are those of single models (:mod:`otae.models.pretrained`): nothing from the
folder is executed, the class comes from a fixed table by name, and a newer format, an
unknown class or argument, a missing, extra or reshaped tensor, a file that is not
safetensors, or a single model's folder is refused in one ValueError line. A Hugging
Face Hub repo id is downloaded first (its data files only). A reloaded model gives
bit-identical :meth:`~otae.cotraining.MultiViewAutoencoders.features` and per-view
``encode`` / ``decode``.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any

import torch

from ..models.pretrained import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    load_checked_state,
    read_config,
    read_tensors,
    resolve_folder,
)
from . import baselines  # noqa: F401  (registers the baselines' classes)
from .model import MULTIVIEW_CLASSES, MultiViewAutoencoders

__all__ = ["from_pretrained", "save_pretrained"]

#: constructor arguments that are not stored: the weights come from the file
_NOT_STORED = {"self", "seed"}


def save_pretrained(
    model: MultiViewAutoencoders,
    directory: str | os.PathLike,
    *,
    data: dict[str, Any] | None = None,
    training: dict[str, Any] | None = None,
) -> Path:
    """``model.save_pretrained(directory, data=..., training=...)``
    (:meth:`~otae.cotraining.MultiViewAutoencoders.save_pretrained`)."""
    return model.save_pretrained(directory, data=data, training=training)


def _build(values: Any, path: Path) -> MultiViewAutoencoders:
    if not isinstance(values, dict):
        raise ValueError(f"{path}: 'multiview' must be an object")
    values = dict(values)
    name = values.pop("class", None)
    cls = MULTIVIEW_CLASSES.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ValueError(
            f"{path} names multi-view class {name!r}, which this otae does not know "
            f"(known: {', '.join(MULTIVIEW_CLASSES)})"
        )
    accepted = set(inspect.signature(MultiViewAutoencoders.__init__).parameters) - _NOT_STORED
    unknown = sorted(set(values) - accepted)
    if unknown:
        raise ValueError(f"{path}: unknown multi-view argument(s) {', '.join(unknown)}")
    if "input_dims" not in values:
        raise ValueError(f"{path}: 'multiview' lacks 'input_dims'")
    # POT is needed to train with the "empirical" discrepancy, not to encode: build the
    # networks without asking for it, then restore the discrepancy
    empirical = values.get("discrepancy") == "empirical"
    if empirical:
        values["discrepancy"] = "sliced"
    try:
        model = cls(**values)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: {err}") from None
    if empirical:
        model.discrepancy = "empirical"
    return model


def from_pretrained(
    path: str | os.PathLike,
    device: str | torch.device = "cpu",
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> MultiViewAutoencoders:
    """The multi-view model saved in folder ``path`` (:func:`save_pretrained`), in eval
    mode on ``device``; one ValueError line for anything that does not fit. ``path`` may
    be a Hugging Face Hub repo id that is no local folder
    (:func:`otae.models.pretrained.resolve_folder`: ``revision``, ``cache_dir``)."""
    directory = resolve_folder(path, revision=revision, cache_dir=cache_dir)
    if not directory.is_dir():
        raise ValueError(f"{directory}: no such folder (a folder written by save_pretrained)")
    config = read_config(directory, required=("multiview",), kind="multiview")
    model = _build(config["multiview"], directory / CONFIG_FILE)
    tensors = read_tensors(directory / WEIGHTS_FILE)
    load_checked_state(model, tensors, directory / WEIGHTS_FILE)
    return model.to(device).eval()
