"""Checkpoints: written atomically, read without executing pickled code.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts (the
model and optimiser ``state_dict``s, RNG states, the epoch, the per-epoch
history and the resolved config), saved with ``torch.save`` to a temporary
file in the same folder, flushed to disk and renamed over the target, so a
crash while writing never leaves a truncated checkpoint behind. Loading uses
``torch.load(weights_only=True)``, which refuses arbitrary pickled objects (otae's
message then never suggests loading the file unsafely). Temporary files left by a
write that was killed are removed when the run starts again
(:func:`remove_stale_temporaries`).
"""

from __future__ import annotations

import os
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, unreadable or not an otae checkpoint."""


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Atomically write ``state`` (plus a format tag) to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"otae_checkpoint": FORMAT_VERSION, **state}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


#: what :func:`save_checkpoint`'s temporary files look like (``tempfile.mkstemp``)
_TEMPORARY = re.compile(r"\.[^/]+\.[a-z0-9_]{8}\.tmp")


def remove_stale_temporaries(directory: str | Path) -> list[Path]:
    """Delete the temporary files that a write killed mid-way left in ``directory``.

    Only names made by :func:`save_checkpoint` (``.<name>.XXXXXXXX.tmp``) are removed;
    call it when a run (re)starts, before any checkpoint of that run is being written.
    Returns the removed paths.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    removed = []
    for path in sorted(directory.iterdir()):
        if _TEMPORARY.fullmatch(path.name) and path.is_file() and not path.is_symlink():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`; clear errors otherwise."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with warnings.catch_warnings():  # e.g. torch's note on an unusual pickle protocol
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many types for a damaged file
        message = str(err)
        if message.startswith("Weights only load failed"):
            # torch's own message advises loading with weights_only=False, i.e. running
            # whatever code the file holds: never pass that on
            found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", message)
            what = f" (it references {found.group(1)})" if found else ""
            raise CheckpointError(
                f"checkpoint {path} contains objects other than tensors and plain data{what}; "
                "otae refuses to load it for safety, because unpickling such objects can run "
                "arbitrary code. otae checkpoints never contain them: this file was not "
                "written by otae or has been altered"
            ) from None
        raise CheckpointError(
            f"checkpoint {path} is corrupted or not an otae checkpoint "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
            "resume from another checkpoint (best.pt / last.pt) or start the run again"
        ) from None
    if not isinstance(state, dict) or state.get("otae_checkpoint") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} is a torch file but not an otae checkpoint (format {FORMAT_VERSION})"
        )
    return state
