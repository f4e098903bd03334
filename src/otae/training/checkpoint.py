"""Checkpoints: written atomically, read without executing pickled code.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts (the
model and optimiser ``state_dict``s, RNG states, the epoch, the per-epoch
history and the resolved config), saved with ``torch.save`` to a temporary
file in the same folder, flushed to disk and renamed over the target, so a
crash while writing never leaves a truncated checkpoint behind. Loading uses
``torch.load(weights_only=True)``, which refuses arbitrary pickled objects (otae's
message then never suggests loading the file unsafely). Temporary files left by a
write that was killed are removed when the run starts again
(:func:`remove_stale_temporaries`). A write that fails (a full disk, a quota, an I/O
error) raises :class:`CheckpointWriteError` naming the file, the space needed and the
space free, and leaves the previous checkpoint at that path as it was.
"""

from __future__ import annotations

import errno
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch

from .._io import atomic_write

FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, unreadable or not an otae checkpoint."""


class CheckpointWriteError(CheckpointError):
    """A checkpoint could not be written (full disk, quota, I/O error); the previous
    file at that path, if any, is intact. ``path``, ``needed`` and ``free`` (bytes;
    None where not measurable) say where and how much."""

    def __init__(self, message: str, path: Path, needed: int | None, free: int | None):
        super().__init__(message)
        self.path, self.needed, self.free = path, needed, free


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Atomically write ``state`` (plus a format tag) to ``path``.

    Raises :class:`CheckpointWriteError` when the file cannot be written (the
    temporary file is removed and ``path`` keeps its previous content).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"otae_checkpoint": FORMAT_VERSION, **state}
    try:
        atomic_write(path, lambda handle: torch.save(payload, handle))
    except Exception as err:
        if _is_write_failure(err):
            raise _write_error(err, path, payload) from err
        raise
    return path


#: errnos of a device or quota that is full
_FULL = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}
#: what torch's zip writer says when the stream under it fails
_TORCH_WRITE_FAILURE = re.compile(
    r"failed writing|file write failed|unexpected pos|iostream error|PytorchStreamWriter"
)


def _chain(err: BaseException) -> list[BaseException]:
    """``err`` and the exceptions it was raised from or while handling."""
    seen: list[BaseException] = []
    while err is not None and all(err is not e for e in seen):
        seen.append(err)
        err = err.__cause__ or err.__context__
    return seen


def _is_write_failure(err: Exception) -> bool:
    return any(
        isinstance(e, OSError)
        or (isinstance(e, RuntimeError) and _TORCH_WRITE_FAILURE.search(str(e)))
        for e in _chain(err)
    )


def _payload_bytes(value: Any) -> int:
    """About how many bytes ``torch.save`` writes for ``value`` (its tensors' data)."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(_payload_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_payload_bytes(v) for v in value)
    return 64


def _megabytes(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n < 1e7 else f"{n / 1e6:.0f} MB"


def _write_error(err: Exception, path: Path, payload: dict[str, Any]) -> CheckpointWriteError:
    """The one-line account of a failed checkpoint write."""
    needed = _payload_bytes(payload) + 4096  # the zip container's headers
    try:
        free: int | None = shutil.disk_usage(path.parent).free
    except OSError:
        free = None
    os_error = next((e for e in _chain(err) if isinstance(e, OSError)), None)
    advice = "free some space"
    if os_error is not None and os_error.errno in _FULL:
        reason = (
            "disk quota exceeded"
            if os_error.errno == getattr(errno, "EDQUOT", None)
            else "file too large for the file system"
            if os_error.errno == errno.EFBIG
            else "no space left on device"
        )
    elif free is not None and free < needed:
        reason = "no space left on device"
    elif os_error is not None:
        text = os_error.strerror or str(os_error) or type(os_error).__name__
        reason = text[0].lower() + text[1:]
        advice = "check the disk"
    else:
        first = str(err).splitlines()[0] if str(err) else ""
        reason = f"the write failed ({type(err).__name__}: {first})"
        advice = "check that the disk is neither full nor failing"
    space = f"needs ~{_megabytes(needed)}"
    if free is not None:
        space += f", {_megabytes(free)} free"
    kept = "the previous checkpoint there is intact" if path.exists() else "nothing was written"
    run = path.parent.parent if path.parent.name == "checkpoints" else "RUN_DIR"
    return CheckpointWriteError(
        f"could not write checkpoint {path}: {reason} ({space}); {kept}; {advice}, then "
        f"continue with `otae train {run} --resume`",
        path,
        needed,
        free,
    )


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
