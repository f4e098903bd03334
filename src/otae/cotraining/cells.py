"""Finished cells of the multi-view protocol, kept on disk so a killed run resumes.

A *cell* is one (setting, seed, method) of :func:`~otae.cotraining.protocol.run_protocol`:
one method trained, selected and scored on one seed's split. :class:`CellStore` keeps
one JSON record per finished cell (finished = scored, or diverged) in a JSON-lines file,
rewritten whole and atomically (:func:`otae._io.atomic_write_text`) after every cell, so
a kill loses at most the cell in progress. A run pointed at the same file takes every
cell it finds there instead of training it again.

A record is found by its :func:`setting_key`: a digest of everything that decides the
cell's result (the views' values and names, the labels, preprocessing, labelled rows per
class, the disjoint split, every autoencoder setting, the classifier's C grid and
iterations, and the otae version), so a changed setting or dataset never reuses an old
record; records of other settings stay in the file (a sweep keeps all its settings in
one file).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._io import atomic_write_text
from .._version import __version__

__all__ = ["Cell", "CellStore", "setting_key"]

#: Bumped when a record's meaning changes, so older files are not misread.
FORMAT = 1


@dataclass
class Cell:
    """One finished cell. ``status`` is ``"ok"`` (``test``/``val`` accuracies as
    fractions, the selected ``epoch`` and ``c``, ``seconds`` of fit + selection, per-view
    ``diagnostics`` for autoencoder methods) or ``"diverged"`` (``divergence``: ``epoch``,
    ``step``, ``non_finite`` term names, ``cause`` and ``fix``; accuracies are NaN)."""

    method: str
    seed: int
    status: str = "ok"
    test: float = math.nan
    val: float = math.nan
    epoch: int | None = None
    c: float | None = None
    seconds: float = math.nan
    diagnostics: dict[str, dict[str, float]] | None = None
    divergence: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.status not in ("ok", "diverged"):
            raise ValueError(f"a cell's status is 'ok' or 'diverged', got {self.status!r}")

    @property
    def diverged(self) -> bool:
        return self.status == "diverged"


def _digest_array(digest, array: np.ndarray) -> None:
    array = np.ascontiguousarray(array)
    digest.update(f"{array.dtype.str}{array.shape}".encode())
    digest.update(array.tobytes())


def setting_key(views: Mapping[str, np.ndarray], labels: np.ndarray, config) -> str:
    """Hex digest naming the data and every setting of ``config`` (a
    :class:`~otae.cotraining.protocol.ProtocolConfig`) that decides a cell's result.

    Left out, because they do not change results: the table's ``dataset`` label, the
    ``log`` callback, the t-SNE path and the store's own path.
    """
    digest = hashlib.sha256()
    for name, array in views.items():
        digest.update(name.encode() + b"\0")
        _digest_array(digest, np.asarray(array, dtype=np.float32))
    _digest_array(digest, np.asarray(labels))
    settings = {
        "format": FORMAT,
        "otae": __version__,
        "ae": dataclasses.asdict(config.ae),
        "c_grid": list(config.c_grid),
        "logreg_max_iter": config.logreg_max_iter,
        "preprocess": config.preprocess,
        "labels_per_class": config.labels_per_class,
        "disjoint": bool(config.disjoint),
    }
    digest.update(json.dumps(settings, sort_keys=True, default=repr).encode())
    return digest.hexdigest()[:32]


def _finite_or_none(value: float) -> float | None:
    # JSON has no NaN; None stands for "not measured" (a diverged cell).
    return None if value is None or not math.isfinite(value) else float(value)


@dataclass
class CellStore:
    """The cells of ``path`` (a JSON-lines file; missing = empty), by (key, seed, method).

    ``fresh=True`` ignores the records already in the file (they are replaced as the new
    cells finish; records of other settings are kept).
    """

    path: Path
    fresh: bool = False
    _records: dict[tuple[str, int, str], dict] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        if self.path.exists():
            for number, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    key = (str(record["key"]), int(record["seed"]), str(record["method"]))
                except (ValueError, KeyError, TypeError):
                    raise ValueError(
                        f"{self.path}: line {number} is not a cell record; move the file "
                        "away to start over"
                    ) from None
                if record.get("format") == FORMAT:
                    self._records[key] = record

    def get(self, key: str, seed: int, method: str) -> Cell | None:
        """The finished cell, or None (not in the file, or ``fresh``)."""
        record = None if self.fresh else self._records.get((key, int(seed), method))
        if record is None:
            return None
        nan = math.nan
        return Cell(
            method=method,
            seed=int(seed),
            status=record["status"],
            test=nan if record.get("test") is None else float(record["test"]),
            val=nan if record.get("val") is None else float(record["val"]),
            epoch=record.get("epoch"),
            c=record.get("c"),
            seconds=nan if record.get("seconds") is None else float(record["seconds"]),
            diagnostics=record.get("diagnostics"),
            divergence=record.get("divergence"),
        )

    def put(self, key: str, cell: Cell) -> None:
        """Record ``cell`` under ``key`` and rewrite the file atomically."""
        record = {
            "format": FORMAT,
            "key": key,
            **dataclasses.asdict(cell),
        }
        for name in ("test", "val", "seconds"):
            record[name] = _finite_or_none(record[name])
        self._records[(key, int(cell.seed), cell.method)] = record
        text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in self._records.values())
        atomic_write_text(self.path, text)

    def __len__(self) -> int:
        return len(self._records)
