"""Input checks shared by every layer of otae (the bottom of its import graph).

Every public function of :mod:`otae.discrepancies`, the sphere samplers, the slicers,
the losses and the models validate their tensors and settings here, so that bad input
fails at our boundary with a message naming the argument, not as a shape error deep
inside torch. The finiteness check costs one pass over the data
(and a host sync on CUDA); hot loops that have already validated their inputs can
switch all checks off with :func:`input_checks` (``with input_checks(False): ...``); the switch is
thread-local.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Iterator

import torch

from .constants import device_constant

_state = threading.local()


class NonFiniteInputError(ValueError):
    """An input tensor holds NaN or Inf.

    A ``ValueError`` for library callers; the trainer catches it to report a diverging
    run (codes or prior parameters gone non-finite) like a non-finite loss.
    """


def checks_enabled() -> bool:
    """Whether the input checks are on in this thread (see :func:`input_checks`)."""
    return getattr(_state, "enabled", True)


@contextlib.contextmanager
def input_checks(enabled: bool) -> Iterator[None]:
    """Context manager turning the input checks of this package on or off (thread-local)."""
    previous = checks_enabled()
    _state.enabled = bool(enabled)
    try:
        yield
    finally:
        _state.enabled = previous


def check_tensor(
    t: object,
    name: str,
    ndims: tuple[int, ...],
    min_rows: int = 1,
    finite: bool = True,
) -> torch.Tensor:
    """Return ``t`` after checking it is a floating tensor with ``t.ndim in ndims``.

    ``min_rows`` bounds ``t.shape[0]`` from below (empty input is always rejected).
    """
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not checks_enabled():
        return t
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    if t.ndim not in ndims:
        expected = " or ".join(f"{n}-D" for n in ndims)
        raise ValueError(f"{name} must be {expected}, got shape {tuple(t.shape)}")
    if t.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(t.shape)})")
    if t.shape[0] < min_rows:
        raise ValueError(
            f"{name} needs at least {min_rows} samples along dim 0, got {t.shape[0]}"
        )
    if finite and not bool(torch.isfinite(t).all()):
        raise NonFiniteInputError(f"{name} contains NaN or Inf")
    return t


def check_same(a: torch.Tensor, b: torch.Tensor, names: tuple[str, str], shape: bool = True,
               dims: tuple[int, ...] | None = None) -> None:
    """Check that ``a`` and ``b`` share dtype and device, and shape (or the listed dims)."""
    if not checks_enabled():
        return
    na, nb = names
    if a.dtype != b.dtype:
        raise TypeError(f"{na} and {nb} must have the same dtype, got {a.dtype} and {b.dtype}")
    if a.device != b.device:
        raise ValueError(f"{na} and {nb} must be on the same device, got {a.device} and {b.device}")
    if shape and a.shape != b.shape:
        raise ValueError(
            f"{na} and {nb} must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    if dims is not None:
        for dim in dims:
            if a.shape[dim] != b.shape[dim]:
                raise ValueError(
                    f"{na} and {nb} must agree along dim {dim}, "
                    f"got {tuple(a.shape)} and {tuple(b.shape)}"
                )


def check_same_except_rows(a: torch.Tensor, b: torch.Tensor, names: tuple[str, str]) -> None:
    """Check that ``a`` and ``b`` share dtype and device, and shape except along dim 0
    (two samples of different sizes N and M)."""
    check_same(a, b, names, shape=False)
    if checks_enabled() and (a.ndim != b.ndim or a.shape[1:] != b.shape[1:]):
        na, nb = names
        raise ValueError(
            f"{na} and {nb} must have the same shape except along dim 0 (the number of "
            f"samples), got {tuple(a.shape)} and {tuple(b.shape)}"
        )


def check_weights(w: object, name: str, points: torch.Tensor, points_name: str,
                  min_positive: int = 1) -> torch.Tensor | None:
    """Return ``w`` (``None`` passes through) after checking it holds weights for the
    rows of ``points``: a 1-D floating tensor of length ``points.shape[0]``, in the dtype
    and device of ``points``, finite, nonnegative, summing to 1, with at least
    ``min_positive`` positive entries.

    The sum is accepted within ``sqrt(eps)`` of the dtype (3.5e-4 in float32, 1.5e-8
    in float64): weights normalised as ``w / w.sum()`` always pass. One host sync.
    """
    if w is None:
        return None
    if not isinstance(w, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or None, got {type(w).__name__}")
    if not checks_enabled():
        return w
    n = points.shape[0]
    if not w.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {w.dtype}")
    if w.ndim != 1 or w.shape[0] != n:
        raise ValueError(
            f"{name} must be 1-D with one weight per row of {points_name} (length {n}), "
            f"got shape {tuple(w.shape)}"
        )
    check_same(w, points, (name, points_name), shape=False)
    stats = (torch.isfinite(w).all(), w.min(), w.sum(), (w > 0).sum())
    finite, smallest, total, positive = torch.stack([t.double() for t in stats]).tolist()
    if not finite:
        raise NonFiniteInputError(f"{name} contains NaN or Inf")
    if smallest < 0:
        raise ValueError(f"{name} must be nonnegative, got a weight {smallest:.6g}")
    if abs(total - 1.0) > math.sqrt(torch.finfo(w.dtype).eps):
        raise ValueError(f"{name} must sum to 1, got a sum of {total:.8g}")
    if positive < min_positive:
        raise ValueError(f"{name} must have at least {min_positive} positive weights, "
                         f"got {int(positive)}")
    return w


def _uniform(n: int, *, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return torch.full((n,), 1.0 / n, dtype=dtype, device=device)


def weights_or_uniform(w: torch.Tensor | None, n: int, like: torch.Tensor) -> torch.Tensor:
    """``w``, or the uniform weights 1/n in the dtype and device of ``like`` when None
    (a cached constant: no operation per call)."""
    if w is not None:
        return w
    return device_constant(_uniform, n, dtype=like.dtype, device=like.device)


def check_unit_interval(value: float, name: str) -> float:
    """Check a trade-off such as ``beta`` lies in [0, 1]."""
    value = float(value)
    if not (0.0 <= value <= 1.0) or math.isnan(value):
        raise ValueError(f"{name} must lie in [0, 1], got {value}")
    return value


def check_positive(value: float, name: str, allow_zero: bool = False) -> float:
    value = float(value)
    ok = value >= 0.0 if allow_zero else value > 0.0
    if not ok or not math.isfinite(value):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be finite and {bound}, got {value}")
    return value


def check_count(value: int, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_choice(value: str, name: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value
