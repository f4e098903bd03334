"""Trained models as a folder of plain files: ``config.json`` + ``model.safetensors``.

:func:`save_pretrained` writes, and :func:`from_pretrained` reads back, a model built by
:func:`~otae.models.build_model` (any registered model, its prior, networks, learned
coefficients and batch-norm statistics):

* ``config.json``: the format version, the otae version, the model's config (its
  ``name`` selects the class from the registry), the networks (architecture and
  options), the image shape, and optionally what the data looked like (``data``) and
  the training settings the model came from (``training``);
* ``model.safetensors``: every parameter and buffer of ``model.state_dict()`` in its own
  dtype, with the format and otae version in the header metadata. No optimiser state,
  no random-number state.

Loading never executes code from the folder: JSON and safetensors are data formats, the
class comes from otae's registry by name, and anything that does not fit (an unknown
model or architecture, a missing, extra or differently shaped tensor, a newer format, a
file that is not safetensors) is refused with one ValueError line. A reloaded model
gives bit-identical ``encode`` / ``decode`` / ``sample`` outputs (tested for every
registered model).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from .._version import __version__
from .base import (
    CONFIG_FILE,
    FORMAT,
    MODELS,
    WEIGHTS_FILE,
    Autoencoder,
    build_model,
    model_config_from_dict,
)

__all__ = ["CONFIG_FILE", "FORMAT", "WEIGHTS_FILE", "from_pretrained", "save_pretrained"]



def save_pretrained(
    model: Autoencoder,
    directory: str | os.PathLike,
    *,
    data: dict[str, Any] | None = None,
    training: dict[str, Any] | None = None,
) -> Path:
    """``model.save_pretrained(directory, data=..., training=...)``
    (:meth:`~otae.models.Autoencoder.save_pretrained`)."""
    return model.save_pretrained(directory, data=data, training=training)


def _read_config(directory: Path) -> dict[str, Any]:
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise ValueError(
            f"{directory} holds no {CONFIG_FILE}: not a folder written by `otae export` or "
            "save_pretrained"
        )
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path} must hold a JSON object")
    version = config.get("format")
    if not isinstance(version, int) or version < 1:
        raise ValueError(f"{path} has no valid 'format' version")
    if version > FORMAT:
        raise ValueError(
            f"{path} is format {version}, written by a newer otae "
            f"({config.get('otae_version', '?')}); this otae {__version__} reads format "
            f"{FORMAT} at most: upgrade otae"
        )
    for key in ("model", "network", "image_shape"):
        if key not in config:
            raise ValueError(f"{path} lacks '{key}'")
    return config


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise ValueError(f"{path} is missing")
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ValueError(f"{path} is not a safetensors file ({first})") from None


def from_pretrained(path: str | os.PathLike, device: str | torch.device = "cpu") -> Autoencoder:
    """The model saved in folder ``path`` (:func:`save_pretrained`, ``otae export``), in
    eval mode on ``device``. One ValueError line for anything that does not fit."""
    directory = Path(path)
    if not directory.is_dir():
        raise ValueError(f"{directory}: no such folder (an export folder of `otae export`)")
    config = _read_config(directory)
    model_values = config["model"]
    if not isinstance(model_values, dict) or model_values.get("name") not in MODELS:
        name = model_values.get("name") if isinstance(model_values, dict) else model_values
        raise ValueError(
            f"{directory / CONFIG_FILE} names model {name!r}, which this otae does not "
            f"know (known: {', '.join(sorted(MODELS))})"
        )
    network = config["network"]
    if not isinstance(network, dict) or not isinstance(network.get("options", {}), dict):
        raise ValueError(f"{directory / CONFIG_FILE}: 'network' must be an object")
    try:
        image_shape = [int(s) for s in config["image_shape"]]
        model = build_model(
            model_config_from_dict(model_values),
            image_shape,
            str(network.get("architecture")),
            dict(network.get("options") or {}),
        )
    except (TypeError, ValueError) as err:
        raise ValueError(f"{directory / CONFIG_FILE}: {err}") from None
    tensors = _read_tensors(directory / WEIGHTS_FILE)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        parts = ([f"missing {', '.join(missing[:5])}"] if missing else []) + (
            [f"unexpected {', '.join(extra[:5])}"] if extra else []
        )
        raise ValueError(f"{directory / WEIGHTS_FILE} does not fit its config: {'; '.join(parts)}")
    for key, tensor in tensors.items():
        want = expected[key]
        if tuple(tensor.shape) != tuple(want.shape) or tensor.dtype != want.dtype:
            raise ValueError(
                f"{directory / WEIGHTS_FILE}: {key} is {tuple(tensor.shape)} {tensor.dtype}, "
                f"the model needs {tuple(want.shape)} {want.dtype}"
            )
    model.load_state_dict(tensors, strict=True)
    return model.to(device).eval()
