"""Writing files so that a kill, a crash or a concurrent writer never leaves a torn one.

:func:`atomic_write` writes into a uniquely named temporary file beside the target,
flushes and fsyncs it, renames it over the target (``os.replace`` is atomic on POSIX and
Windows) and fsyncs the folder, so the rename itself survives a power cut. Readers see
the old file or the new one, never a mix; two writers of the same path each leave a
whole file (the last rename wins). :func:`write_csv_rows` writes a table of dict rows
the same way. :class:`FolderLock` keeps a second process out of a folder that one is
writing (a run directory while it trains).
"""

from __future__ import annotations

import contextlib
import csv
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = [
    "LOCK_FILE", "FolderInUseError", "FolderLock", "atomic_write", "atomic_write_text",
    "write_csv_rows",
]  # fmt: skip

#: the lock file :class:`FolderLock` keeps in the folder it guards
LOCK_FILE = ".otae.lock"


def _fsync_folder(folder: Path) -> None:
    # Not every platform lets a folder be opened (Windows) or fsynced: best effort there.
    with contextlib.suppress(OSError):
        handle = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)


def atomic_write(
    path: str | os.PathLike, write: Callable[[IO[Any]], None], mode: str = "wb"
) -> Path:
    """Call ``write(file)`` on a temporary file opened with ``mode`` (``"wb"`` or ``"w"``,
    UTF-8, newline-preserving) beside ``path``, then move it onto ``path`` atomically.

    The parent folder is created if needed. On any error the temporary file is removed
    and the previous ``path`` (if any) is left untouched. The new file gets mode 0644.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"mode must be 'wb' or 'w', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        text = {} if mode == "wb" else {"encoding": "utf-8", "newline": ""}
        with os.fdopen(handle, mode, **text) as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """:func:`atomic_write` of ``text`` as UTF-8."""
    return atomic_write(path, lambda file: file.write(text), mode="w")


def write_csv_rows(
    path: str | os.PathLike, rows: list[dict[str, Any]], fieldnames: list[str] | None = None
) -> Path:
    """``rows`` as a CSV file with a header, atomically (:func:`atomic_write`).

    Columns: ``fieldnames`` if given, else the union of the rows' keys in first-seen order
    (a row without a column leaves it empty).
    """
    if fieldnames is None:
        fieldnames = []
        for row in rows:
            fieldnames += [k for k in row if k not in fieldnames]

    def write(handle: IO[Any]) -> None:
        writer = csv.DictWriter(handle, fieldnames=fieldnames)
        writer.writeheader()
        writer.writerows(rows)

    return atomic_write(path, write, mode="w")


class FolderInUseError(OSError):
    """Another process holds a :class:`FolderLock` on the folder."""


try:  # POSIX; elsewhere folders are not locked
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

#: the folders this process has locked: real path -> [file descriptor, holders]
_HELD: dict[str, list[int]] = {}


class FolderLock:
    """An exclusive lock on ``folder`` (created if needed) against other processes.

    ``flock`` on ``folder/.otae.lock``, which holds the owner's pid: the kernel drops
    the lock when the process ends, however it ends, so a killed run never leaves a
    stale one. Within one process the lock is re-entrant (a run directory is locked by
    ``run_experiment`` and again by the trainer it builds). A second process gets
    :class:`FolderInUseError` (an ``OSError``), one line naming the holder's pid.
    Advisory, and POSIX only: elsewhere, and on a file system that cannot lock (some
    network and FUSE mounts), :meth:`acquire` locks nothing.

    ``acquire(wait=seconds)`` waits up to that long for another process to let go
    before refusing: for a short shared write (the tables of a results folder that
    several benches update), not for a run directory, which one process holds for hours.
    """

    def __init__(self, folder: str | os.PathLike, what: str = "folder") -> None:
        self.folder = Path(folder)
        self.what = what
        self._key: str | None = None

    def acquire(self, wait: float = 0.0) -> FolderLock:
        """Take the lock; a holder in another process is waited for up to ``wait`` seconds
        (polled every 50 ms), then refused with :class:`FolderInUseError`."""
        if self._key is not None:
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        key = os.path.realpath(self.folder)
        if key in _HELD:
            _HELD[key][1] += 1
        else:
            handle = os.open(self.folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
            give_up = time.monotonic() + max(0.0, float(wait))
            while True:
                try:
                    if fcntl is not None:
                        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() < give_up:
                        time.sleep(0.05)
                        continue
                    holder = os.read(handle, 32).decode(errors="replace").strip()
                    os.close(handle)
                    pid = f" (pid {holder})" if holder.isdigit() else ""
                    waited = f" (waited {wait:g} s)" if wait > 0 else ""
                    raise FolderInUseError(
                        f"{self.what} {self.folder} is in use by another process{pid}"
                        f"{waited}: wait for it to end, or stop it, before using it again"
                    ) from None
                except OSError:
                    break  # a file system without locks (ENOLCK, EOPNOTSUPP): unguarded
            os.ftruncate(handle, 0)
            os.write(handle, f"{os.getpid()}\n".encode())
            _HELD[key] = [handle, 1]
        self._key = key
        return self

    def release(self) -> None:
        """Give this holder's share back; the last one unlocks (closing the file)."""
        if self._key is None:
            return
        entry = _HELD[self._key]
        entry[1] -= 1
        if entry[1] == 0:
            del _HELD[self._key]
            os.close(entry[0])
        self._key = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
