"""Devices and optimisers of a run."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["apply_hyperparameters", "make_optimizer", "select_device"]


def select_device(spec: str, option: str = "training.device") -> torch.device:
    """``auto`` picks CUDA when available; otherwise the named device (checked).

    Errors name ``option``, the setting the device came from.
    """
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except (RuntimeError, TypeError):
        raise ValueError(
            f"{option}={spec!r} is not a device: use auto, cpu, cuda, cuda:1, mps, ..."
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{option}={spec!r} but CUDA is not available on this machine")
    return device


def select_memory_format(
    spec: str, device: torch.device, model: nn.Module | None, compiled: bool = False
) -> torch.memory_format:
    """The layout of ``training.memory_format``. ``auto`` is channels_last on a CPU when
    ``model`` has 2-D convolutions (oneDNN's NHWC kernels: 1.02-1.11x faster steps,
    ``benchmarks/results/memory_format.md``); contiguous on GPUs (unmeasured there) and
    for ``compiled`` steps (inductor keeps convolutions NCHW, docs/performance.md); and
    ``preserve_format`` (the layouts left as they are) for ``model=None``: networks
    that otae did not build, which may ``view`` activations as NCHW."""
    if spec == "contiguous":
        return torch.contiguous_format
    if spec == "channels_last":
        return torch.channels_last
    if model is None:
        return torch.preserve_format
    if compiled or device.type != "cpu":
        return torch.contiguous_format
    convolutional = any(isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) for m in model.modules())
    return torch.channels_last if convolutional else torch.contiguous_format


def make_optimizer(
    params: list[nn.Parameter], config, lr: float | None = None, betas=None
):
    """The optimiser of ``config`` (``lr`` / ``betas``: in place of the config's, e.g. the
    critic's); Adam is the fused kernel (CPU and CUDA), whose ``found_inf`` input lets
    the trainer skip a step on the device (:class:`DivergenceWatch`).
    """
    lr = config.lr if lr is None else lr
    betas = config.betas if betas is None else betas
    if config.name == "adam":
        fused = all(p.device.type in ("cpu", "cuda") for p in params)
        return torch.optim.Adam(
            params, lr=lr, betas=tuple(betas), weight_decay=config.weight_decay,
            fused=fused or None,
        )
    if config.name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, weight_decay=config.weight_decay)
    raise ValueError(f"unknown optimizer {config.name!r}")


def apply_hyperparameters(optimizer, config, lr: float | None = None, betas=None) -> None:
    """The config's lr / betas / weight decay over those a loaded optimiser state carries.

    ``load_state_dict`` restores the saved hyperparameters; a run resumed with, say, a
    lower ``training.optimizer.lr`` (after a divergence) must train with the new value.
    Betas and weight decay cannot change on resume (``resume_changes`` refuses them), so
    only the learning rates can differ here (nothing schedules these values).
    """
    values = {"lr": config.lr if lr is None else lr, "weight_decay": config.weight_decay}
    if "betas" in optimizer.defaults:
        values["betas"] = tuple(config.betas if betas is None else betas)
    for group in optimizer.param_groups:
        group.update(values)
