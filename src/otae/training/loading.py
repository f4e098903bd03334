"""Reading a run back: its final checkpoint, and the model and config of a run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..models import Autoencoder, build_model
from .checkpoint import CheckpointError, load_checkpoint
from .config import ExperimentConfig, config_from_dict

__all__ = [
    "final_checkpoint",
    "image_shape_from_state",
    "load_error_line",
    "load_run",
    "require_keys",
]


def final_checkpoint(config: ExperimentConfig) -> str:
    """The checkpoint holding a run's final model: ``best`` with early stopping, else ``last``."""
    return "best" if config.training.early_stopping.enabled else "last"


def load_run(
    run_dir: str | Path, checkpoint: str | None = "last", device: str = "cpu"
) -> tuple[ExperimentConfig, Autoencoder, dict[str, Any]]:
    """Load a finished or interrupted run from one of its checkpoints.

    Args:
        run_dir: the run directory (made by ``otae train``).
        checkpoint: ``"last"``, ``"best"``, or None: :func:`final_checkpoint` of the
            run's config.
        device: where to put the model.

    Returns:
        Three values, ``(config, model, state)``: the run's :class:`ExperimentConfig`,
            the model built from it with the checkpoint's weights (on ``device``, in eval
            mode), and the checkpoint's state dict (``epoch``, ``history``, optimiser
            state, ...).
    """
    run_dir = Path(run_dir)
    if checkpoint is None:
        config, model, state = load_run(run_dir, "last", device)
        if final_checkpoint(config) == "last":
            return config, model, state
        checkpoint = final_checkpoint(config)
    path = run_dir / "checkpoints" / f"{checkpoint}.pt"
    if not path.exists():
        raise CheckpointError(
            f"no checkpoint {path}: is {run_dir} an otae run directory (made by `otae train`)?"
        )
    state = load_checkpoint(path, map_location=device)
    require_keys(state, ("config", "model", "image_shape"), path)
    try:
        config = config_from_dict(state["config"])
    except ValueError as err:
        raise CheckpointError(f"{path} holds an invalid config: {err}") from None
    model = build_model(
        config.model,
        image_shape_from_state(state, config),
        config.network.architecture,
        dict(config.network.options),
    )
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:
        raise CheckpointError(f"{path} does not match its config: {load_error_line(err)}") from None
    return config, model.to(device).eval(), state


def require_keys(state: dict[str, Any], keys: tuple[str, ...], path: Path | str) -> None:
    """A :class:`CheckpointError` naming the keys of ``keys`` that ``state`` lacks."""
    missing = [k for k in keys if k not in state]
    if missing:
        raise CheckpointError(
            f"{path} is incomplete (it lacks {', '.join(missing)}): not a checkpoint written "
            "by `otae train`; use another checkpoint (best.pt / last.pt) or start the run again"
        )


def load_error_line(err: Exception) -> str:
    """The informative line of a ``load_state_dict`` error ("size mismatch for ...")."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()] or [repr(err)]
    line = lines[1] if len(lines) > 1 and lines[0].endswith(":") else lines[0]
    return line if len(line) <= 300 else f"{line[:297]}..."


def image_shape_from_state(state: dict[str, Any], config: ExperimentConfig) -> tuple[int, ...]:
    """The image shape a checkpoint was trained on (a :class:`CheckpointError` if invalid)."""
    shape = state.get("image_shape")
    try:
        return tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        raise CheckpointError(f"checkpoint has an invalid image shape {shape!r}") from None
