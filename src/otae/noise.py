"""Random draws of the training hot path, replayable outside a compiled graph.

A ``torch.Generator`` cannot enter a ``torch.compile``'d graph. Every random draw a model
makes during a training step therefore goes through the functions of this module
(:func:`randn`, :func:`rand`, :func:`randint`, :func:`randperm`), whose ``generator``
argument is one of

* a ``torch.Generator`` or ``None``: an ordinary torch draw (eager training);
* a :class:`DrawRecorder`: an ordinary draw from the wrapped generator, with its
  :class:`DrawSpec` (kind, shape, dtype, devices) appended to ``recorder.specs``;
* a :class:`DrawTape`: the next of a list of tensors drawn beforehand, checked against the
  request's kind and shape (static, so the check costs nothing inside a graph).

The compiled training step records a model's draw schedule once (eager), then, each step,
draws that schedule from the run's generator *outside* the compiled region
(:func:`draw_all`) and replays it inside. The same generator calls happen in the same
order as in eager mode, so a compiled run sees the same noise as an eager run, and
checkpoint/resume of the generator state works unchanged.

A draw's shape must not depend on tensor values (it would not be static anyway).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "DrawRecorder",
    "DrawSpec",
    "DrawTape",
    "Generatorish",
    "draw",
    "draw_all",
    "generator_device",
    "rand",
    "randint",
    "randn",
    "randperm",
]


@dataclass(frozen=True)
class DrawSpec:
    """One draw: ``kind`` in randn/rand/randint/randperm, its ``shape`` (randperm: ``(n,)``;
    randint: ``high`` is kept in ``high``), ``dtype``, the device it is drawn on (the
    generator's) and the device it is used on."""

    kind: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    draw_device: torch.device | None
    device: torch.device | None
    high: int = 0


class DrawRecorder:
    """A generator stand-in that draws from ``generator`` and records every draw's spec."""

    def __init__(self, generator: torch.Generator | None) -> None:
        self.generator = generator
        self.specs: list[DrawSpec] = []

    @property
    def device(self) -> torch.device:
        return self.generator.device if self.generator is not None else torch.device("cpu")


class DrawTape:
    """A generator stand-in that hands out pre-drawn tensors in order."""

    def __init__(self, draws: Sequence[Tensor], specs: Sequence[DrawSpec] | None = None) -> None:
        self.draws = list(draws)
        self.specs = list(specs) if specs is not None else None
        self.position = 0

    @property
    def device(self) -> torch.device:
        return self.draws[0].device if self.draws else torch.device("cpu")

    def take(self, spec: DrawSpec) -> Tensor:
        if self.position >= len(self.draws):
            raise RuntimeError(
                f"random draw #{self.position + 1} ({spec.kind} {spec.shape}) was not recorded: "
                "the model's draws changed between steps (shapes must be static to compile)"
            )
        out = self.draws[self.position]
        if tuple(out.shape) != spec.shape or (
            self.specs is not None and self.specs[self.position].kind != spec.kind
        ):
            raise RuntimeError(
                f"random draw #{self.position + 1}: recorded {tuple(out.shape)}, requested "
                f"{spec.kind} {spec.shape}: the model's draws changed between steps"
            )
        self.position += 1
        return out if spec.device is None else out.to(spec.device)


Generatorish = torch.Generator | DrawRecorder | DrawTape | None


def generator_device(generator: Generatorish, device=None):
    """Device to draw on: the generator's (a CPU generator cannot fill a CUDA tensor)."""
    if isinstance(generator, torch.Generator):
        return generator.device
    if isinstance(generator, DrawRecorder) and generator.generator is not None:
        return generator.generator.device
    return device


def draw(spec: DrawSpec, generator: torch.Generator | None) -> Tensor:
    """Perform the draw ``spec`` with a real generator (on ``spec.draw_device``)."""
    where = spec.draw_device
    if spec.kind == "randn":
        return torch.randn(spec.shape, generator=generator, dtype=spec.dtype, device=where)
    if spec.kind == "rand":
        return torch.rand(spec.shape, generator=generator, dtype=spec.dtype, device=where)
    if spec.kind == "randint":
        return torch.randint(spec.high, spec.shape, generator=generator, dtype=spec.dtype,
                             device=where)
    if spec.kind == "randperm":
        return torch.randperm(spec.shape[0], generator=generator, dtype=spec.dtype, device=where)
    raise ValueError(f"unknown draw kind {spec.kind!r}")


def draw_all(specs: Sequence[DrawSpec], generator: torch.Generator | None) -> list[Tensor]:
    """The recorded schedule ``specs`` drawn from ``generator``, in order (outside a graph)."""
    return [draw(spec, generator) for spec in specs]


def _request(kind: str, shape, dtype, device, generator: Generatorish, high: int = 0) -> Tensor:
    shape = tuple(int(s) for s in shape)
    device = torch.device(device) if device is not None else None
    if isinstance(generator, DrawTape):
        spec = DrawSpec(kind, shape, dtype, None, device, high)
        return generator.take(spec)
    real = generator.generator if isinstance(generator, DrawRecorder) else generator
    where = real.device if real is not None else device
    spec = DrawSpec(kind, shape, dtype, where, device, high)
    if isinstance(generator, DrawRecorder):
        generator.specs.append(spec)
    out = draw(spec, real)
    return out if device is None else out.to(device)


def randn(shape: Sequence[int], generator: Generatorish = None, *, dtype: torch.dtype | None = None,
          device=None) -> Tensor:
    """Standard normals of ``shape``, drawn on the generator's device and moved to ``device``."""
    return _request("randn", shape, dtype or torch.get_default_dtype(), device, generator)


def rand(shape: Sequence[int], generator: Generatorish = None, *, dtype: torch.dtype | None = None,
         device=None) -> Tensor:
    """Uniforms on [0, 1) of ``shape`` (see :func:`randn` for devices)."""
    return _request("rand", shape, dtype or torch.get_default_dtype(), device, generator)


def randint(high: int, shape: Sequence[int], generator: Generatorish = None, *,
            dtype: torch.dtype = torch.int64, device=None) -> Tensor:
    """Integers uniform on ``{0, ..., high - 1}``."""
    return _request("randint", shape, dtype, device, generator, high=int(high))


def randperm(n: int, generator: Generatorish = None, *, dtype: torch.dtype = torch.int64,
             device=None) -> Tensor:
    """A random permutation of ``range(n)``."""
    return _request("randperm", (n,), dtype, device, generator)
