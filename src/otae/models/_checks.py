"""Small config checks shared by the model configs; messages name the field as ``model.<f>``."""

from __future__ import annotations

import math
from collections.abc import Iterable


def positive(value: float, field: str, allow_zero: bool = False) -> None:
    ok = math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"model.{field} must be finite and {bound}, got {value!r}")


def count(value: int, field: str, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"model.{field} must be an integer >= {minimum}, got {value!r}")


def unit_interval(value: float, field: str) -> None:
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ValueError(f"model.{field} must lie in [0, 1], got {value!r}")


def choice(value: object, field: str, allowed: Iterable[object], why: str = "") -> None:
    allowed = tuple(allowed)
    if value not in allowed:
        reason = f" ({why})" if why else ""
        options = ", ".join(repr(a) for a in allowed)
        raise ValueError(f"model.{field} must be one of {options}{reason}; got {value!r}")


def known_prior(name: str, model: str) -> None:
    """``name`` is a registered prior (any prior that can be sampled from)."""
    from ..priors import PRIORS

    choice(name, "prior", sorted(PRIORS), f"{model} works from prior samples")


def sphere_dim(latent_dim: int, model: str) -> None:
    if latent_dim < 2:
        raise ValueError(
            f"model.latent_dim must be >= 2 for {model} (directions on S^(d-1)), got {latent_dim}"
        )
