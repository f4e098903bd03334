"""What several commands share: option checks and help texts."""

from __future__ import annotations

CHECKPOINT_HELP = (
    "which checkpoint of RUN_DIR/checkpoints: last (last.pt, the latest saved epoch) or "
    "best (best.pt, the lowest held-out loss, or early stopping's best epoch); default: "
    "the model `otae train` evaluated, i.e. best for a run with training.early_stopping, "
    "else last"
)


def device_option(spec: str) -> str:
    """The device ``--device SPEC`` names (a ValueError naming the option if none)."""
    from ..training import select_device

    return str(select_device(spec, "--device"))


def count_option(value: int | None, option: str, minimum: int = 0) -> int | None:
    """``value`` (None passes) after checking it is >= ``minimum``."""
    if value is not None and value < minimum:
        raise ValueError(f"{option} must be >= {minimum}, got {value}")
    return value
