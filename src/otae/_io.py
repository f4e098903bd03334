"""Writing files so that a kill, a crash or a concurrent writer never leaves a torn one.

:func:`atomic_write` writes into a uniquely named temporary file beside the target,
flushes and fsyncs it, renames it over the target (``os.replace`` is atomic on POSIX and
Windows) and fsyncs the folder, so the rename itself survives a power cut. Readers see
the old file or the new one, never a mix; two writers of the same path each leave a
whole file (the last rename wins). :func:`write_csv_rows` writes a table of dict rows
the same way.
"""

from __future__ import annotations

import contextlib
import csv
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_write", "atomic_write_text", "write_csv_rows"]


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
