"""Trained models as a folder of plain files: ``config.json`` + ``model.safetensors``.

:func:`save_pretrained` writes, and :func:`from_pretrained` reads back, a model built by
:func:`~otae.models.build_model` (any registered model, its prior, networks, learned
coefficients and batch-norm statistics):

* ``config.json``: the format version, the otae version, the model's config (its
  ``name`` selects the class from the registry), the networks (architecture and
  options), the image shape, and optionally what the data looked like (``data``) and
  the training settings the model came from (``training``);
* ``model.safetensors``: every parameter and buffer of ``model.state_dict()`` in its own
  dtype, with the format and otae version in the header metadata, except the modules
  only training uses (a critic: ``omitted_modules`` in ``config.json``) unless they are
  asked for. No optimiser state, no random-number state.

Loading never executes code from the folder: JSON and safetensors are data formats, the
class comes from otae's registry by name, and anything that does not fit (an unknown
model or architecture, a missing, extra or differently shaped tensor, a newer format, a
file that is not safetensors) is refused with one ValueError line. A reloaded model
gives bit-identical ``encode`` / ``decode`` / ``sample`` outputs (tested for every
registered model).

The Hugging Face Hub (optional, ``pip install 'otae[hub]'``): :func:`from_pretrained`
also takes a Hub repo id (``"user/name"``) that is no local folder. It downloads the
folder's data files only (:data:`HUB_FILES`: never a script or a pickle) into
huggingface_hub's cache and loads them as a local folder. Without a network, or for a
repo that does not exist, it fails in one line (:class:`HubError`, an ``OSError``).
``otae export RUN OUT --push user/name`` uploads a folder
(:func:`otae.export.push_to_hub`).

The readers below (:func:`read_config`, :func:`read_tensors`, :func:`load_checked_state`,
:func:`resolve_folder`) and the writer :func:`write_pretrained` are shared with the
multi-view models of :mod:`otae.cotraining` (:func:`otae.cotraining.from_pretrained`).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._io import atomic_write, atomic_write_text
from .._optional import require
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

__all__ = [
    "CONFIG_FILE",
    "FORMAT",
    "HUB_FILES",
    "WEIGHTS_FILE",
    "HubError",
    "first_line",
    "from_pretrained",
    "is_hub_repo_id",
    "load_checked_state",
    "read_config",
    "read_tensors",
    "resolve_folder",
    "save_pretrained",
    "write_pretrained",
]

#: the files of a saved folder that go to and come from the Hugging Face Hub: data only
#: (no script, no pickle is ever downloaded or uploaded)
HUB_FILES = [CONFIG_FILE, WEIGHTS_FILE, "README.md", "samples.png"]

#: ``namespace/name`` of the Hub: letters, digits, ``-``, ``_``, ``.``
_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}")

#: the ``kind`` of ``config.json``: a single autoencoder (no key, the first layout) or
#: the multi-view models of otae.cotraining
KINDS = {
    "autoencoder": "a single autoencoder: load it with otae.models.from_pretrained",
    "multiview": "a multi-view (co-training) model: load it with otae.cotraining.from_pretrained",
}


class HubError(OSError):
    """The Hugging Face Hub could not be reached, has no such repo, refused the request,
    or needs a token; the message is one line that says which and what to do."""


def first_line(err: BaseException) -> str:
    """The first non-empty line of an exception's message (its type name if none)."""
    for line in str(err).splitlines():
        if line.strip():
            return line.strip()
    return type(err).__name__


def save_pretrained(
    model: Autoencoder,
    directory: str | os.PathLike,
    *,
    data: dict[str, Any] | None = None,
    training: dict[str, Any] | None = None,
    with_critic: bool = False,
) -> Path:
    """``model.save_pretrained(directory, data=..., training=..., with_critic=...)``
    (:meth:`~otae.models.Autoencoder.save_pretrained`)."""
    return model.save_pretrained(directory, data=data, training=training,
                                 with_critic=with_critic)  # fmt: skip


def write_pretrained(
    directory: str | os.PathLike, config: dict[str, Any], state: Mapping[str, torch.Tensor]
) -> Path:
    """Write ``config`` (``format`` and ``otae_version`` added in front) to ``config.json``
    and the tensors ``state`` (copied to the CPU, contiguous) to ``model.safetensors`` in
    ``directory`` (created if needed), each file atomically; returns the folder."""
    from safetensors.torch import save as save_tensors

    directory = Path(directory)
    values = {"format": FORMAT, "otae_version": __version__, **config}
    # own contiguous copies: safetensors refuses shared or strided storage
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    metadata = {"format": str(FORMAT), "otae_version": __version__}
    payload = save_tensors(tensors, metadata=metadata)
    atomic_write(directory / WEIGHTS_FILE, lambda handle: handle.write(payload))
    atomic_write_text(directory / CONFIG_FILE, json.dumps(values, indent=2) + "\n")
    return directory


def read_config(
    directory: str | os.PathLike,
    required: Iterable[str] = ("model", "network", "image_shape"),
    kind: str = "autoencoder",
) -> dict[str, Any]:
    """The JSON object of ``directory/config.json``, checked: a format this otae reads, the
    ``kind`` of model asked for (``"autoencoder"``, ``"multiview"``), the ``required``
    keys. One ValueError line otherwise."""
    directory = Path(directory)
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
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"{path} has no valid 'format' version")
    if version > FORMAT:
        raise ValueError(
            f"{path} is format {version}, written by a newer otae "
            f"({config.get('otae_version', '?')}); this otae {__version__} reads format "
            f"{FORMAT} at most: upgrade otae"
        )
    found = config.get("kind", "autoencoder")
    if found != kind:
        what = KINDS.get(found) if isinstance(found, str) else None
        raise ValueError(
            f"{path} holds {what}" if what else f"{path} has an unknown 'kind' {found!r}"
        )
    for key in required:
        if key not in config:
            raise ValueError(f"{path} lacks '{key}'")
    return config


def read_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of the safetensors file ``path`` on the CPU (one ValueError line for a
    missing file or one that is not safetensors: nothing in it is executed)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path} is missing")
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"{path} is not a safetensors file ({first_line(err)})") from None


def load_checked_state(
    module: nn.Module,
    tensors: Mapping[str, torch.Tensor],
    path: str | os.PathLike,
    omitted: Iterable[str] = (),
) -> None:
    """Load ``tensors`` into ``module`` if they are exactly its state: the same names, each
    of the same shape and dtype; otherwise one ValueError line naming the file ``path``
    and what does not fit (the module is left untouched). ``omitted``: submodules the
    file leaves out on purpose (an export without its critic); they keep their values."""
    prefixes = tuple(f"{name}." for name in omitted)
    own = module.state_dict()
    expected = {k: v for k, v in own.items() if not k.startswith(prefixes)}
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        parts = ([f"missing {', '.join(missing[:5])}"] if missing else []) + (
            [f"unexpected {', '.join(extra[:5])}"] if extra else []
        )
        raise ValueError(f"{path} does not fit its config: {'; '.join(parts)}")
    for key, tensor in tensors.items():
        want = expected[key]
        if tuple(tensor.shape) != tuple(want.shape) or tensor.dtype != want.dtype:
            raise ValueError(
                f"{path}: {key} is {tuple(tensor.shape)} {tensor.dtype}, "
                f"the model needs {tuple(want.shape)} {want.dtype}"
            )
    module.load_state_dict({**own, **tensors}, strict=True)


def is_hub_repo_id(path: str | os.PathLike) -> bool:
    """Whether ``path`` reads as a Hugging Face Hub repo id, ``namespace/name`` (letters,
    digits, ``-``, ``_``, ``.``; no ``..``). Says nothing of a local folder of that name."""
    text = os.fspath(path)
    return isinstance(text, str) and bool(_REPO_ID.fullmatch(text)) and ".." not in text


def resolve_folder(
    path: str | os.PathLike,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> Path:
    """The local folder ``path``, or, when ``path`` is no local folder but reads as a Hub
    repo id (:func:`is_hub_repo_id`), the snapshot of that repo's :data:`HUB_FILES`
    downloaded by huggingface_hub (at ``revision``, into ``cache_dir``: by default its
    own cache). Nothing else of the repo is downloaded. Failures are one line: a
    :class:`~otae._optional.MissingDependencyError` without huggingface_hub, a
    :class:`HubError` without a network or for a repo the Hub does not have."""
    directory = Path(path)
    if directory.is_dir() or not is_hub_repo_id(path):
        return directory
    return _download(os.fspath(path), revision, cache_dir)


def _download(repo_id: str, revision: str | None, cache_dir) -> Path:
    hub = require(
        "huggingface_hub",
        feature=f"{repo_id} is no local folder; loading it from the Hugging Face Hub",
        install="otae[hub]",
    )
    from huggingface_hub import errors

    where = f"{repo_id}" + (f" at revision {revision}" if revision else "")
    try:
        folder = hub.snapshot_download(
            repo_id,
            repo_type="model",
            revision=revision,
            cache_dir=None if cache_dir is None else os.fspath(cache_dir),
            allow_patterns=list(HUB_FILES),
            library_name="otae",
            library_version=__version__,
        )
    except (errors.RepositoryNotFoundError, errors.RevisionNotFoundError) as err:
        raise HubError(
            f"{repo_id} is no local folder, nor a model repo on the Hugging Face Hub that "
            f"you can read ({where}; a private or gated repo needs `hf auth login` or "
            f"HF_TOKEN): {first_line(err)}"
        ) from None
    except errors.HfHubHTTPError as err:
        reason = first_line(err)
        raise HubError(f"the Hugging Face Hub refused to send {where}: {reason}") from None
    except errors.HFValidationError as err:
        raise ValueError(f"{repo_id}: not a valid Hub repo id ({first_line(err)})") from None
    except OSError as err:
        # offline mode, no network, an unreachable endpoint (LocalEntryNotFoundError)
        reason = first_line(err).removeprefix("Got: ")
        raise HubError(
            f"{repo_id} is no local folder, and otae could not reach the Hugging Face Hub to "
            f"fetch it (no network, or HF_HUB_OFFLINE=1, and not in the local cache): {reason}"
        ) from None
    folder = Path(folder)
    if not (folder / CONFIG_FILE).is_file():
        raise ValueError(
            f"the Hub repo {where} holds no {CONFIG_FILE}: not a folder written by "
            "`otae export` or save_pretrained"
        )
    return folder


def from_pretrained(
    path: str | os.PathLike,
    device: str | torch.device = "cpu",
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> Autoencoder:
    """The model saved in folder ``path`` (:func:`save_pretrained`, ``otae export``), in
    eval mode on ``device``. One ValueError line for anything that does not fit.

    ``path`` may also be a Hugging Face Hub repo id (``"user/name"``) that is no local
    folder: its data files are downloaded first (:func:`resolve_folder`; ``revision``: a
    branch, tag or commit; ``cache_dir``: instead of huggingface_hub's cache)."""
    directory = resolve_folder(path, revision=revision, cache_dir=cache_dir)
    if not directory.is_dir():
        raise ValueError(f"{directory}: no such folder (an export folder of `otae export`)")
    config = read_config(directory)
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
    omitted = config.get("omitted_modules") or []
    allowed = model.training_only_modules()
    if not isinstance(omitted, list) or not all(name in allowed for name in omitted):
        raise ValueError(
            f"{directory / CONFIG_FILE}: 'omitted_modules' may list only modules that "
            f"training alone uses ({', '.join(allowed) or 'none for this model'}); got "
            f"{omitted!r}"
        )
    tensors = read_tensors(directory / WEIGHTS_FILE)
    load_checked_state(model, tensors, directory / WEIGHTS_FILE, omitted)
    return model.to(device).eval()
