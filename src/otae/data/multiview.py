"""Multi-view datasets from local files: the embedded UCI "Handwritten" set and user files.

A :class:`MultiViewDataset` holds several views of the same ``N`` samples (an ordered
``dict`` of float32 ``(N, d_v)`` arrays) and their int64 class labels ``0..C-1``.

* :func:`load_handwritten`: UCI Multiple Features (2000 digits, 200 per class) shipped
  inside the package (``otae/data/files/uci_mfeat``, CC BY 4.0, see its ``LICENSE.md``);
  six views fou 76, fac 216, kar 64, pix 240, zer 47, mor 6.
* :func:`load_mat_multiview`: a MATLAB ``.mat`` file (v7 or older) in the common layout
  of multi-view benchmarks: a cell array ``X`` of views and a label vector ``Y``
  (e.g. Caltech101-7/-20, which cannot be redistributed).
* :func:`load_npz_multiview`: a numpy ``.npz`` with ``view_<name>`` (or ``X0, X1, ...``)
  and ``y`` (or ``Y``).
* :func:`load_csv_multiview`: one CSV file per view (header optional), labels in a
  separate file or in a column of every view file.
* :func:`load_multiview`: ``"handwritten"`` or a ``.mat`` / ``.npz`` path.

:func:`split_indices` makes the deterministic, stratified train/val/test split of the
paper's protocol (80/10/10) and :func:`standardise` z-scores views with training
statistics only. Nothing is ever downloaded.
"""

from __future__ import annotations

import gzip
import io
import os
from collections.abc import Iterable, Mapping, Sequence
from importlib.resources import files
from pathlib import Path

import numpy as np

#: Views of UCI Multiple Features in the order :func:`load_handwritten` returns them, with dims.
HANDWRITTEN_VIEWS: dict[str, int] = {
    "fou": 76,
    "fac": 216,
    "kar": 64,
    "pix": 240,
    "zer": 47,
    "mor": 6,
}
HANDWRITTEN_SAMPLES = 2000
#: Names accepted by :func:`load_multiview` for the embedded set.
MULTIVIEW_DATASETS = ("handwritten",)
_HANDWRITTEN_ALIASES = ("handwritten", "mfeat", "uci_mfeat")

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_RESAVE_HINT = (
    "re-save it as a v7 MAT-file, e.g. in MATLAB save('file.mat', 'X', 'Y', '-v7') "
    "(Octave: save -mat7-binary file.mat X Y)"
)


class MultiViewDataset:
    """Several views of the same samples: ``views[name]`` float32 ``(N, d_v)``, labels int64.

    ``views`` keeps its insertion order (the order of :attr:`view_names`); every view has
    the same number of rows ``N``, row ``i`` of every view being sample ``i`` with label
    ``labels[i]``. Arrays are converted to C-contiguous float32 / int64 copies.
    """

    def __init__(
        self,
        views: Mapping[str, np.ndarray],
        labels: np.ndarray | Sequence[int],
        name: str = "multiview",
    ) -> None:
        if not views:
            raise ValueError(f"multi-view dataset {name!r} needs at least one view")
        converted: dict[str, np.ndarray] = {}
        n = None
        for view_name, array in views.items():
            if not isinstance(view_name, str) or not view_name:
                raise ValueError(f"view names must be non-empty strings, got {view_name!r}")
            array = np.asarray(array)
            if array.ndim != 2:
                raise ValueError(
                    f"view {view_name!r} of {name!r} must be a 2-D (samples, features) array, "
                    f"got shape {array.shape}"
                )
            if n is None:
                n = array.shape[0]
            elif array.shape[0] != n:
                raise ValueError(
                    f"views of {name!r} differ in sample count: {next(iter(converted))!r} has "
                    f"{n} rows, {view_name!r} has {array.shape[0]}"
                )
            converted[view_name] = np.ascontiguousarray(array, dtype=np.float32)
        labels = np.asarray(labels)
        if labels.shape != (n,):
            raise ValueError(
                f"labels of {name!r} must have shape ({n},) to match the views, got {labels.shape}"
            )
        if labels.size and not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"labels of {name!r} must be integers, got dtype {labels.dtype}")
        self.views = converted
        self.labels = np.ascontiguousarray(labels, dtype=np.int64)
        self.name = str(name)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __repr__(self) -> str:
        dims = ", ".join(f"{k}={v}" for k, v in self.dims.items())
        return (
            f"MultiViewDataset({self.name!r}, n={len(self)}, classes={self.n_classes}, "
            f"views: {dims})"
        )

    @property
    def view_names(self) -> list[str]:
        """View names in order."""
        return list(self.views)

    @property
    def dims(self) -> dict[str, int]:
        """Feature dimension of every view, in view order."""
        return {name: int(array.shape[1]) for name, array in self.views.items()}

    @property
    def n_classes(self) -> int:
        """``max(label) + 1`` (0 if empty): the output size of a classifier on these labels."""
        return int(self.labels.max()) + 1 if len(self) else 0

    def select(self, view_names: str | Iterable[str]) -> MultiViewDataset:
        """The views ``view_names`` (a name or a sequence of names), in the order given."""
        wanted = [view_names] if isinstance(view_names, str) else list(view_names)
        if not wanted:
            raise ValueError(f"select needs at least one view of {self.name!r}")
        unknown = [v for v in wanted if v not in self.views]
        if unknown:
            raise ValueError(
                f"unknown view(s) {', '.join(map(repr, unknown))} of {self.name!r}; "
                f"available views: {', '.join(self.views)}"
            )
        if len(set(wanted)) != len(wanted):
            raise ValueError(f"view names given twice in {wanted}")
        return MultiViewDataset({v: self.views[v] for v in wanted}, self.labels, self.name)

    def subset(self, indices: np.ndarray | Sequence[int]) -> MultiViewDataset:
        """The samples ``indices`` (integer indices, or a boolean mask of length ``N``)."""
        indices = np.asarray(indices)
        if indices.dtype == bool:
            if indices.shape != (len(self),):
                raise ValueError(
                    f"a boolean mask must have shape ({len(self)},), got {indices.shape}"
                )
            indices = np.flatnonzero(indices)
        if indices.ndim != 1 or (indices.size and not np.issubdtype(indices.dtype, np.integer)):
            raise ValueError(
                f"indices must be a 1-D integer array, got {indices.dtype} of shape {indices.shape}"
            )
        n = len(self)
        if indices.size and (indices.min() < -n or indices.max() >= n):
            raise IndexError(f"indices out of range for a dataset of {n} samples")
        indices = indices.astype(np.int64)
        views = {name: array[indices] for name, array in self.views.items()}
        return MultiViewDataset(views, self.labels[indices], self.name)


# --- helpers ------------------------------------------------------------------------------


def _remap_labels(raw: np.ndarray, source: str) -> np.ndarray:
    """Integer-valued labels (any base, e.g. 0- or 1-based) -> 0..C-1 in increasing order."""
    raw = np.asarray(raw)
    if raw.dtype == bool or not (
        np.issubdtype(raw.dtype, np.integer) or np.issubdtype(raw.dtype, np.floating)
    ):
        raise ValueError(f"{source}: labels must be real numbers, got dtype {raw.dtype}")
    if np.issubdtype(raw.dtype, np.floating):
        if not np.all(np.isfinite(raw)):
            raise ValueError(f"{source}: labels contain NaN or infinite values")
        if not np.all(raw == np.round(raw)):
            raise ValueError(f"{source}: labels must be integer class numbers")
    _, inverse = np.unique(raw, return_inverse=True)
    return inverse.reshape(-1).astype(np.int64)


def _check_features(array: np.ndarray, source: str) -> np.ndarray:
    """A real numeric 2-D array with finite values, as float32."""
    if array.dtype == bool or np.issubdtype(array.dtype, np.number):
        if np.iscomplexobj(array):
            raise ValueError(f"{source} is complex; views must be real numbers")
    else:
        raise ValueError(f"{source} is not numeric (dtype {array.dtype})")
    array = array.astype(np.float32)
    if not np.all(np.isfinite(array)):
        bad = np.argwhere(~np.isfinite(array))[0]
        raise ValueError(
            f"{source} contains NaN or infinite values (first at row {bad[0]}, column {bad[1]})"
        )
    return array


def default_handwritten_dir() -> Path:
    """The folder of the embedded UCI Multiple Features files (``otae/data/files/uci_mfeat``)."""
    return Path(str(files("otae.data") / "files" / "uci_mfeat"))


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8")


def _is_number(field: str) -> bool:
    try:
        float(field)
    except ValueError:
        return False
    return True


def _read_csv(path: Path, header: bool | None, delimiter: str) -> np.ndarray:
    """A CSV of numbers as a float64 ``(rows, columns)`` array.

    ``header``: True skips the first line, False keeps it, None skips it only if one of
    its fields is not a number.
    """
    if not path.is_file():
        raise FileNotFoundError(f"CSV file {path} not found")
    with _open_text(path) as f:
        text = f.read()
    lines = text.splitlines()
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is None:
        raise ValueError(f"{path} is empty")
    if header is None:
        header = not all(_is_number(x) for x in lines[first].split(delimiter))
    body = lines[first + 1 :] if header else lines[first:]
    try:
        array = np.loadtxt(body, delimiter=delimiter, dtype=np.float64, ndmin=2)
    except ValueError as exc:
        raise ValueError(f"{path} is not a CSV of numbers: {exc}") from exc
    if array.size == 0:
        raise ValueError(f"{path} holds no data rows")
    return array


# --- embedded UCI Multiple Features ---------------------------------------------------------


def load_handwritten(
    views: str | Sequence[str] | None = None, root: str | os.PathLike | None = None
) -> MultiViewDataset:
    """UCI Multiple Features ("Handwritten"): 2000 digits, 200 per class, labels 0..9.

    ``views`` picks views by name (default: all six, in the order fou, fac, kar, pix,
    zer, mor). The files ``mfeat-<view>.csv.gz`` (a header line, then one row per digit
    whose LAST column is the label) are read from ``root`` (default: the copy embedded in
    the package, :func:`default_handwritten_dir`); every file read must give the same labels.
    """
    names = (
        list(HANDWRITTEN_VIEWS)
        if views is None
        else ([views] if isinstance(views, str) else list(views))
    )
    unknown = [v for v in names if v not in HANDWRITTEN_VIEWS]
    if unknown or not names:
        raise ValueError(
            f"unknown handwritten view(s) {', '.join(map(repr, unknown)) or '(none given)'}; "
            f"available views: {', '.join(HANDWRITTEN_VIEWS)}"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"view names given twice in {names}")
    root = default_handwritten_dir() if root is None else Path(root)
    arrays: dict[str, np.ndarray] = {}
    labels = None
    first_path = None
    for view in names:
        path = root / f"mfeat-{view}.csv.gz"
        if not path.is_file():
            raise FileNotFoundError(
                f"UCI Multiple Features view {view!r} not found: expected {path} "
                f"(the six mfeat-<view>.csv.gz files with a header line and the label "
                f"in the last column)"
            )
        table = _read_csv(path, header=True, delimiter=",")
        dim = HANDWRITTEN_VIEWS[view]
        if table.shape != (HANDWRITTEN_SAMPLES, dim + 1):
            raise ValueError(
                f"{path}: expected {HANDWRITTEN_SAMPLES} rows of {dim} features plus a label, "
                f"got a table of shape {table.shape}"
            )
        view_labels = table[:, -1]
        if not np.all(view_labels == np.round(view_labels)) or view_labels.min() < 0:
            raise ValueError(f"{path}: the last column must hold the digit labels 0..9")
        view_labels = view_labels.astype(np.int64)
        if labels is None:
            labels, first_path = view_labels, path
        elif not np.array_equal(labels, view_labels):
            row = int(np.flatnonzero(labels != view_labels)[0])
            raise ValueError(
                f"labels disagree between {first_path} and {path} "
                f"(first at data row {row}: {labels[row]} vs {view_labels[row]})"
            )
        arrays[view] = _check_features(table[:, :-1], f"{path}")
    return MultiViewDataset(arrays, labels, "handwritten")


# --- MATLAB .mat ----------------------------------------------------------------------------


def _is_hdf5_mat(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(520)
    return (
        head[:8] == _HDF5_SIGNATURE
        or head[512:520] == _HDF5_SIGNATURE
        or b"MATLAB 7.3" in head[:128]
    )


def _cell_elements(value: np.ndarray, what: str, path: Path) -> list:
    """The elements of a 1xV / Vx1 cell array loaded by scipy (an object ndarray)."""
    if not isinstance(value, np.ndarray) or value.dtype != object:
        kind = type(value).__name__
        if isinstance(value, np.ndarray):
            kind = f"a {value.dtype} array of shape {'x'.join(map(str, value.shape))}"
        raise ValueError(
            f"{path}: {what} must be a cell array (one cell per view), got {kind}; in MATLAB "
            f"build it as {what} = {{view1, view2, ...}}"
        )
    if value.ndim > 2 or (value.ndim == 2 and min(value.shape) > 1):
        raise ValueError(
            f"{path}: {what} must be a 1xV or Vx1 cell array, got shape "
            f"{'x'.join(map(str, value.shape))}"
        )
    return list(value.reshape(-1))


def _mat_string(value, path: Path) -> str:
    array = np.asarray(value)
    if array.dtype.kind != "U":
        raise ValueError(f"{path}: view_names must hold strings, got {array.dtype}")
    return "".join(array.reshape(-1).tolist()).strip()


def load_mat_multiview(path: str | os.PathLike) -> MultiViewDataset:
    """A multi-view MATLAB file (v7 or older): cell array ``X`` of views and labels ``Y``.

    ``X`` is a 1xV or Vx1 cell array; each view is N x d_v or d_v x N (the orientation is
    found by matching N = the number of labels; a square view is taken as N x d). ``Y``
    is an N x 1 or 1 x N vector of integer labels in any base (0- or 1-based ...), remapped
    to 0..C-1 in increasing order. An optional cell array ``view_names`` names the views
    (default ``view0``, ``view1``, ...). MATLAB v7.3 (HDF5) files are not readable: re-save
    them with ``-v7``.
    """
    from scipy.io import loadmat

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"multi-view .mat file {path} not found")
    if _is_hdf5_mat(path):
        raise ValueError(
            f"{path} is a MATLAB v7.3 (HDF5) file, which otae does not read: {_RESAVE_HINT}"
        )
    try:
        contents = loadmat(path, squeeze_me=False, chars_as_strings=True)
    except NotImplementedError as exc:  # scipy's answer to v7.3 files
        raise ValueError(f"{path} cannot be read ({exc}): {_RESAVE_HINT}") from exc
    except Exception as exc:  # scipy raises many types for files that are not MAT-files
        raise ValueError(f"{path} is not a readable MATLAB .mat file: {exc}") from exc
    variables = sorted(k for k in contents if not k.startswith("__"))
    for key, meaning in (("X", "the cell array of views"), ("Y", "the label vector")):
        if key not in contents:
            raise ValueError(
                f"{path} has no variable {key!r} ({meaning}); variables found: "
                f"{', '.join(variables) or '(none)'}"
            )
    cells = _cell_elements(contents["X"], "X", path)
    if not cells:
        raise ValueError(f"{path}: the cell array X is empty (no views)")

    y = contents["Y"]
    if not isinstance(y, np.ndarray) or y.dtype == object or y.dtype.kind not in "iufb":
        raise ValueError(
            f"{path}: Y must be a numeric label vector, got {getattr(y, 'dtype', type(y))}"
        )
    if y.ndim > 2 or (y.ndim == 2 and min(y.shape) > 1) or y.size == 0:
        raise ValueError(
            f"{path}: Y must be an N x 1 or 1 x N label vector, got shape "
            f"{'x'.join(map(str, y.shape))}"
        )
    labels = _remap_labels(y.reshape(-1), f"{path}: Y")
    n = labels.shape[0]

    if "view_names" in contents:
        names = [
            _mat_string(v, path) for v in _cell_elements(contents["view_names"], "view_names", path)
        ]
        if len(names) != len(cells) or len(set(names)) != len(names) or not all(names):
            raise ValueError(
                f"{path}: view_names must hold {len(cells)} distinct non-empty names "
                f"(one per view), got {names}"
            )
    else:
        names = [f"view{i}" for i in range(len(cells))]

    matrices = []
    for name, cell in zip(names, cells, strict=True):
        if hasattr(cell, "toarray") and not isinstance(cell, np.ndarray):  # a sparse matrix
            cell = cell.toarray()
        if not isinstance(cell, np.ndarray):
            raise ValueError(
                f"{path}: view {name!r} (a cell of X) must be a numeric matrix, "
                f"got {type(cell).__name__}"
            )
        if cell.dtype == object or cell.dtype.kind not in "iufb":
            kind = "a string" if cell.dtype.kind == "U" else f"dtype {cell.dtype}"
            raise ValueError(f"{path}: view {name!r} (a cell of X) is not numeric ({kind})")
        if cell.ndim != 2:
            raise ValueError(
                f"{path}: view {name!r} (a cell of X) must be a 2-D matrix, got shape {cell.shape}"
            )
        matrices.append(cell)
    shapes = [m.shape for m in matrices]
    mismatched = [nm for nm, s in zip(names, shapes, strict=True) if n not in s]
    if mismatched:
        listed = ", ".join(f"{nm!r} is {s[0]}x{s[1]}" for nm, s in zip(names, shapes, strict=True))
        common = set.intersection(*(set(s) for s in shapes))
        if len(mismatched) < len(names) or not common:
            raise ValueError(
                f"{path}: the views have different numbers of samples ({listed}; Y has {n} labels)"
            )
        raise ValueError(
            f"{path}: Y has {n} labels but no dimension of the views matches that "
            f"number of samples ({listed})"
        )
    views: dict[str, np.ndarray] = {}
    for name, matrix in zip(names, matrices, strict=True):
        array = matrix if matrix.shape[0] == n else matrix.T  # square: taken as N x d
        views[name] = _check_features(array, f"{path}: view {name!r}")
    return MultiViewDataset(views, labels, path.stem)


# --- numpy .npz -----------------------------------------------------------------------------


def load_npz_multiview(path: str | os.PathLike) -> MultiViewDataset:
    """A numpy ``.npz`` with views ``view_<name>`` (or ``X0, X1, ...``) and labels ``y``/``Y``.

    Every view is an ``(N, d_v)`` array (rows are samples). ``view_<name>`` views keep the
    order they were saved in; ``X0, X1, ...`` are taken in numeric order and named
    ``view0, view1, ...``. Labels are integers in any base, remapped to 0..C-1.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"multi-view .npz file {path} not found")
    try:
        with np.load(path, allow_pickle=False) as archive:
            contents = {key: archive[key] for key in archive.files}
    except Exception as exc:  # zipfile / pickle / format errors
        raise ValueError(f"{path} is not a readable numpy .npz file of arrays: {exc}") from exc
    named = [k for k in contents if k.startswith("view_") and len(k) > len("view_")]
    numbered = [k for k in contents if k[:1] == "X" and k[1:].isdigit()]
    if named and numbered:
        raise ValueError(
            f"{path} mixes view_<name> and X<i> arrays ({', '.join(named + numbered)}); "
            f"use one naming scheme"
        )
    if not named and not numbered:
        raise ValueError(
            f"{path} has no views: expected arrays view_<name> or X0, X1, ...; "
            f"found {', '.join(contents) or '(none)'}"
        )
    if named:
        pairs = [(k[len("view_") :], k) for k in named]
    else:
        numbered.sort(key=lambda k: int(k[1:]))
        pairs = [(f"view{int(k[1:])}", k) for k in numbered]
    label_keys = [k for k in ("y", "Y") if k in contents]
    if len(label_keys) != 1:
        what = "both y and Y" if label_keys else "no labels"
        raise ValueError(f"{path} has {what}: expected exactly one label array 'y' (or 'Y')")
    y = contents[label_keys[0]]
    if y.ndim != 1 and not (y.ndim == 2 and min(y.shape) == 1):
        raise ValueError(f"{path}: labels {label_keys[0]!r} must be 1-D, got shape {y.shape}")
    labels = _remap_labels(y.reshape(-1), f"{path}: {label_keys[0]}")
    views = {}
    for name, key in pairs:
        array = contents[key]
        if array.ndim != 2:
            raise ValueError(f"{path}: view {key!r} must be 2-D (N, d), got shape {array.shape}")
        if array.shape[0] != labels.shape[0]:
            raise ValueError(
                f"{path}: view {key!r} has {array.shape[0]} rows but there are "
                f"{labels.shape[0]} labels"
            )
        views[name] = _check_features(array, f"{path}: view {key!r}")
    return MultiViewDataset(views, labels, path.stem)


# --- CSV ------------------------------------------------------------------------------------


def load_csv_multiview(
    paths: Mapping[str, str | os.PathLike],
    labels_path: str | os.PathLike | None = None,
    label_column: int | None = None,
    header: bool | None = None,
    delimiter: str = ",",
    name: str = "csv",
) -> MultiViewDataset:
    """One CSV file per view (``{view name: path}``, ``.gz`` accepted), rows are samples.

    Labels come from ``labels_path`` (one integer per row, optionally in a single column
    CSV) or from column ``label_column`` (e.g. ``-1``) of every view file, which must then
    agree; that column is dropped from the features. ``header``: True skips every file's
    first line, False keeps it, None (default) skips it only if it holds a non-number.
    """
    if not paths:
        raise ValueError("load_csv_multiview needs at least one view file")
    if (labels_path is None) == (label_column is None):
        raise ValueError("give exactly one of labels_path or label_column for the labels")
    views: dict[str, np.ndarray] = {}
    labels_raw = None
    first_path = None
    for view, raw_path in paths.items():
        path = Path(raw_path)
        table = _read_csv(path, header, delimiter)
        if label_column is not None:
            width = table.shape[1]
            if not -width <= label_column < width or width < 2:
                raise ValueError(
                    f"{path}: label_column {label_column} is out of range for {width} columns"
                )
            column = label_column % width
            view_labels = table[:, column]
            if labels_raw is None:
                labels_raw, first_path = view_labels, path
            elif view_labels.shape != labels_raw.shape or not np.array_equal(
                view_labels, labels_raw
            ):
                raise ValueError(
                    f"labels (column {label_column}) disagree between {first_path} and {path}"
                )
            table = np.delete(table, column, axis=1)
        views[view] = _check_features(table, f"{path} (view {view!r})")
    if labels_path is not None:
        table = _read_csv(Path(labels_path), header, delimiter)
        if table.shape[1] != 1:
            raise ValueError(
                f"{labels_path}: expected one label per line, got {table.shape[1]} columns"
            )
        labels_raw, first_path = table[:, 0], Path(labels_path)
    labels = _remap_labels(labels_raw, f"{first_path}: labels")
    for view, array in views.items():
        if array.shape[0] != labels.shape[0]:
            raise ValueError(
                f"view {view!r} ({paths[view]}) has {array.shape[0]} rows but there are "
                f"{labels.shape[0]} labels"
            )
    return MultiViewDataset(views, labels, name)


# --- dispatch -------------------------------------------------------------------------------


def load_multiview(
    name_or_path: str | os.PathLike, views: str | Sequence[str] | None = None
) -> MultiViewDataset:
    """``"handwritten"`` (embedded UCI Multiple Features) or a ``.mat`` / ``.npz`` file.

    ``views`` keeps only the named views, in that order (default: all).
    """
    key = os.fspath(name_or_path)
    if key.lower() in _HANDWRITTEN_ALIASES:
        return load_handwritten(views)
    path = Path(key).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"multi-view data {key!r} is neither a known dataset "
            f"({', '.join(MULTIVIEW_DATASETS)}) nor an existing file: {path} not found"
        )
    loaders = {".mat": load_mat_multiview, ".npz": load_npz_multiview}
    loader = loaders.get(path.suffix.lower())
    if loader is None or not path.is_file():
        raise ValueError(
            f"{path}: multi-view files must be {' or '.join(loaders)} files "
            f"(for CSV views use load_csv_multiview)"
        )
    dataset = loader(path)
    return dataset if views is None else dataset.select(views)


# --- splits and preprocessing ---------------------------------------------------------------


def split_indices(
    n: int,
    labels: np.ndarray | Sequence[int] | None,
    seed: int,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    stratified: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Deterministic disjoint ``(train, val, test)`` index arrays covering ``range(n)``.

    Indices are shuffled with ``numpy.random.default_rng(seed)``. With ``stratified``,
    every class is split on its own: a class of ``n_c`` samples gives each split
    ``floor`` or ``ceil`` of ``n_c * fraction`` samples (rounded up where the split is
    furthest below its overall target, so totals stay close to ``n * fraction`` too).
    Each array is sorted (int64).
    ``labels`` may be None when ``stratified`` is False.
    """
    n = int(n)
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    fractions = np.asarray(fractions, dtype=np.float64)
    if fractions.shape != (3,) or np.any(fractions < 0) or abs(fractions.sum() - 1) > 1e-6:
        raise ValueError(
            f"fractions must be three non-negative numbers (train, val, test) summing to 1, "
            f"got {tuple(fractions.tolist())}"
        )
    fractions = fractions / fractions.sum()
    if labels is None:
        if stratified:
            raise ValueError("a stratified split needs labels (or pass stratified=False)")
        groups = [np.arange(n)]
    else:
        labels = np.asarray(labels)
        if labels.shape != (n,):
            raise ValueError(f"labels must have shape ({n},), got {labels.shape}")
        if stratified:
            classes = np.unique(labels)
            groups = [np.flatnonzero(labels == c) for c in classes]
        else:
            groups = [np.arange(n)]
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[], [], []]
    target = np.zeros(3)  # cumulative ideal counts per split
    given = np.zeros(3)  # cumulative counts handed out
    for group in groups:
        group = rng.permutation(group)
        ideal = len(group) * fractions
        counts = np.floor(ideal + 1e-9).astype(np.int64)
        remainder = np.round(ideal - counts, 9)
        target += ideal
        left = len(group) - int(counts.sum())
        if left > 0:
            # Round up where the split is furthest below its overall target so far
            # (only splits with a fractional part: every count stays floor or ceil).
            deficit = np.where(remainder > 0, target - given - counts, -np.inf)
            order = np.lexsort((np.arange(3), -deficit))
            counts[order[:left]] += 1
        given += counts
        bounds = np.cumsum(counts)
        for k, chunk in enumerate(np.split(group, bounds[:2])):
            parts[k].append(chunk)
    return tuple(  # type: ignore[return-value]
        np.sort(np.concatenate(p)).astype(np.int64) if p else np.zeros(0, np.int64) for p in parts
    )


def standardise(train_view: np.ndarray, *others: np.ndarray) -> tuple[np.ndarray, ...]:
    """Z-score ``train_view`` and every array of ``others`` with ``train_view``'s statistics.

    Column means and (population) standard deviations are computed on ``train_view``
    only; constant columns get standard deviation 1 (they become 0 in the training
    set). Returns float32 arrays, ``(train, *others)``, always as a tuple.
    """
    arrays = _checked_columns(train_view, others)
    mean = arrays[0].mean(axis=0)
    std = arrays[0].std(axis=0)
    std[(std == 0) | (std <= 1e-7 * np.abs(mean))] = 1.0
    return tuple(((a - mean) / std).astype(np.float32) for a in arrays)


def _checked_columns(train: np.ndarray, others: Sequence[np.ndarray]) -> list[np.ndarray]:
    """float64 copies of ``train`` (non-empty, 2-D) and ``others`` (2-D, same columns)."""
    train = np.asarray(train, dtype=np.float64)
    if train.ndim != 2 or train.shape[0] == 0:
        raise ValueError(
            f"train_view must be a non-empty 2-D (samples, features) array, got shape {train.shape}"
        )
    out = [train]
    for i, array in enumerate(others, start=1):
        array = np.asarray(array, dtype=np.float64)
        if array.ndim != 2 or array.shape[1] != train.shape[1]:
            raise ValueError(
                f"array {i} must be 2-D with {train.shape[1]} columns like train_view, got "
                f"shape {array.shape}"
            )
        out.append(array)
    return out


def minmax_scale(train_view: np.ndarray, *others: np.ndarray) -> tuple[np.ndarray, ...]:
    """Map every column of ``train_view`` to [0, 1] with its TRAINING min and max.

    ``others`` use the same (train) min and max, so their values may leave [0, 1].
    Constant training columns map to 0 everywhere (x - min, scale 1). Returns float32
    arrays, ``(train, *others)``, always as a tuple.
    """
    arrays = _checked_columns(train_view, others)
    low, high = arrays[0].min(axis=0), arrays[0].max(axis=0)
    scale = high - low
    scale[scale == 0] = 1.0
    return tuple(((a - low) / scale).astype(np.float32) for a in arrays)


#: ``preprocess`` values of :func:`preprocess_views`.
PREPROCESSING = ("standardise", "none", "minmax")


def column_scales(views: Mapping[str, np.ndarray]) -> dict[str, float]:
    """The largest column variance of each view (population variance, float64): the scale
    a raw (unpreprocessed) view brings into a squared-error reconstruction term."""
    return {
        name: float(np.asarray(array, dtype=np.float64).var(axis=0).max(initial=0.0))
        for name, array in views.items()
    }


def preprocess_views(
    kind: str, train_view: np.ndarray, *others: np.ndarray
) -> tuple[np.ndarray, ...]:
    """``(train, *others)`` as float32 after ``kind``, with statistics of ``train_view`` only.

    ``"standardise"``: :func:`standardise` (z-score); ``"minmax"``: :func:`minmax_scale`;
    ``"none"``: the raw values.
    """
    if kind == "standardise":
        return standardise(train_view, *others)
    if kind == "minmax":
        return minmax_scale(train_view, *others)
    if kind == "none":
        return tuple(a.astype(np.float32) for a in _checked_columns(train_view, others))
    raise ValueError(f"preprocess must be one of {', '.join(PREPROCESSING)}, got {kind!r}")


def _class_permutations(labels: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """One shuffled index array per class (classes in sorted order)."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {labels.shape}")
    return [rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)]


def labelled_subset(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Sorted indices (int64) of exactly ``per_class`` rows of every class of ``labels``.

    Chosen with ``numpy.random.default_rng(seed)`` (a shuffle per class, classes in
    sorted order); a class with fewer rows is a ValueError.
    """
    per_class = int(per_class)
    if per_class < 1:
        raise ValueError(f"labels per class must be >= 1, got {per_class}")
    groups = _class_permutations(labels, np.random.default_rng(seed))
    small = {int(np.asarray(labels)[g[0]]): len(g) for g in groups if len(g) < per_class}
    if small:
        raise ValueError(
            f"{per_class} labels per class asked, but some classes have fewer training rows "
            f"(class: rows) {small}"
        )
    return np.sort(np.concatenate([g[:per_class] for g in groups])).astype(np.int64)


def stratified_parts(
    labels: np.ndarray, n_parts: int, seed: int | Sequence[int]
) -> list[np.ndarray]:
    """``n_parts`` disjoint sorted index arrays (int64) covering ``range(len(labels))``.

    Stratified: each class is shuffled (``numpy.random.default_rng(seed)``), the shuffled
    classes are concatenated and the rows dealt out in turn (row i to part i mod n), so
    every class and the total split as evenly as possible (part sizes differ by <= 1).
    """
    n_parts = int(n_parts)
    if n_parts < 1:
        raise ValueError(f"n_parts must be >= 1, got {n_parts}")
    order = np.concatenate(_class_permutations(labels, np.random.default_rng(seed)))
    return [np.sort(order[k::n_parts]).astype(np.int64) for k in range(n_parts)]


__all__ = [
    "HANDWRITTEN_VIEWS",
    "MULTIVIEW_DATASETS",
    "MultiViewDataset",
    "column_scales",
    "default_handwritten_dir",
    "load_csv_multiview",
    "load_handwritten",
    "load_mat_multiview",
    "load_multiview",
    "PREPROCESSING",
    "labelled_subset",
    "load_npz_multiview",
    "minmax_scale",
    "preprocess_views",
    "split_indices",
    "standardise",
    "stratified_parts",
]
