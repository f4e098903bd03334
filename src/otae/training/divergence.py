"""Divergence: the error a diverged run stops with, and the device-side watch that finds
the first non-finite step without a host synchronisation per step."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "DIVERGENCE_CHECK_EVERY",
    "DIVERGENCE_FIX",
    "DivergenceWatch",
    "NonFiniteLossError",
    "short_values",
]


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite during training (the run diverged)."""


#: the fix a divergence message suggests
DIVERGENCE_FIX = "lower training.optimizer.lr (or model.gamma)"
#: a diverged step is looked for (one host sync) every this many steps, at the steps where
#: a callback reads the terms (the progress bar's), and at the end of the epoch
DIVERGENCE_CHECK_EVERY = 50


def short_values(names: list[str], values: list[float]) -> str:
    """``"name=value, ..."`` with 4 significant digits, for messages."""
    return ", ".join(f"{k}={v:.4g}" for k, v in zip(names, values, strict=True))


class DivergenceWatch:
    """Non-finite steps caught on the device, reported at the next logging point.

    A step whose objective or gradients are not finite sets ``found_inf`` (as
    ``torch.amp.GradScaler`` does); the optimiser skips the update on the device (fused
    Adam's ``found_inf`` input). The flag is sticky: once a step of the epoch has
    diverged, every later update of the epoch is skipped too, so the weights stay those
    before the first bad step. The batch index and loss terms of that first bad step are
    kept on the device; :meth:`diverged` (one host sync) is read at logging points and at
    the end of the epoch, before anything is written.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.reset()

    def reset(self) -> None:
        self.steps = 0
        self.flag = torch.zeros((), device=self.device)
        self.first_step = torch.zeros((), dtype=torch.long, device=self.device)
        self.names: list[str] = []
        self.values: Tensor | None = None

    def update(self, found_inf: Tensor, terms: dict[str, Tensor]) -> Tensor:
        """Record a step's flag; returns the flag the update must obey (sticky)."""
        first = (found_inf > 0) & (self.flag == 0)
        values = torch.stack([v.detach().float().reshape(()) for v in terms.values()])
        if self.values is None or self.values.shape != values.shape:
            self.names, self.values = list(terms), values.new_zeros(values.shape)
        self.values = torch.where(first, values, self.values)
        self.first_step = torch.where(first, self.steps, self.first_step)
        self.flag = torch.maximum(self.flag, found_inf)
        self.steps += 1
        return self.flag

    def diverged(self) -> bool:
        return bool(self.flag > 0)

    def report(self) -> tuple[int, str]:
        """``(batch index, "total=nan, ...")`` of the first bad step (host syncs)."""
        values = self.values.tolist() if self.values is not None else []
        return int(self.first_step), short_values(self.names, values)
