"""The training objective compiled whole: networks and regulariser, forward and backward.

``training.compile: true`` runs each objective of a step (the model's loss, GWAE's critic
loss, the reconstruction-only baseline) as one ``torch.compile(fullgraph=True)`` graph;
AOTAutograd compiles its backward alongside. A graph break is an error, not a silent
slowdown. Three things keep a compiled run the same run as an eager one:

* **Noise.** A ``torch.Generator`` cannot enter a graph. The first call of each objective
  (per batch shape) runs eagerly with a :class:`otae.noise.DrawRecorder`, which records the
  model's draw schedule; every later call draws that schedule from the run's generator
  outside the graph (:func:`otae.noise.draw_all`) and hands the tensors in. The generator
  makes the same calls in the same order as in eager mode: same noise, and checkpoints
  carry the same generator state.
* **Input checks** of the discrepancies are off inside (``input_checks(False)``): the
  config is validated once, and a non-finite loss is caught on the device by the trainer.
* **Shapes** are static (``dynamic=False``): the last, smaller batch of an epoch gets its
  own graph instead of symbolic shapes everywhere.

Checkpoints are unchanged (the modules are not wrapped). Compiled and eager agree to
float32 rounding (tested with inductor on CPU). Under ``torchrun`` the networks are
compiled in place instead (DistributedDataParallel must see its own forward).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager

import torch
from torch import Tensor, nn

from ..checks import input_checks
from ..noise import DrawRecorder, DrawSpec, DrawTape, draw_all
from ..profiling import COUNTING_BACKEND, call_compiled, register_counting_backend

__all__ = ["CompiledObjective", "compile_options", "check_backend"]


def check_backend(name: str) -> str:
    """``name`` if torch.compile knows the backend, else ValueError naming the known ones."""
    from torch._dynamo import list_backends

    if name == COUNTING_BACKEND:
        register_counting_backend()
    known = list_backends(exclude_tags=())
    if name not in known:
        raise ValueError(
            f"training.compile_backend={name!r} is not a torch.compile backend; "
            f"registered: {', '.join(sorted(known))}"
        )
    return name


def compile_options(backend: str, mode: str) -> dict:
    """Keyword arguments of ``torch.compile`` for ``training.compile_backend`` / ``_mode``."""
    options: dict = {"backend": check_backend(backend), "fullgraph": True, "dynamic": False}
    if backend == "inductor":
        # inductor's layout optimisation turns convolution inputs channels-last on CUDA,
        # and its fake kernel of convolution_backward then predicts NCHW gradients where
        # cuDNN returns NHWC ones: the paper nets' ConvTranspose2d backward failed its
        # stride check on an H200 (torch 2.11, pytorch/pytorch#171622). Plain NCHW
        # layouts avoid that; a mode becomes its options, since torch.compile takes one
        # or the other.
        from torch._inductor import list_mode_options

        modes = list_mode_options(mode) if mode != "default" else {}
        options["options"] = {**modes, "layout_optimization": False}
    elif mode != "default":
        options["mode"] = mode
    return options


class CompiledObjective:
    """``objective(x, generator, kind, critic_step)`` run as a compiled graph per objective.

    ``objective`` is the trainer's ``_Objective`` module; ``autocast`` returns the
    precision context (bf16 autocast or a no-op) entered inside the graph.
    """

    def __init__(self, objective: nn.Module, autocast: Callable[[], AbstractContextManager],
                 backend: str = "inductor", mode: str = "default") -> None:
        self.objective = objective
        self.autocast = autocast
        #: the draw schedule of each (objective, reuse, batch shape, the model's
        #: draw_schedule_key), recorded on first use
        self.schedules: dict[tuple, list[DrawSpec]] = {}
        self._compiled = torch.compile(self._run, **compile_options(backend, mode))
        #: calls that ran the compiled graph (the others recorded a draw schedule)
        self.compiled_calls = 0

    def _run(self, x: Tensor, draws: list[Tensor], kind: str, critic_step: int):
        with input_checks(False), self.autocast():
            return self.objective(x, DrawTape(draws), kind, critic_step)

    def __call__(self, x: Tensor, generator: torch.Generator, kind: str,
                 critic_step: int = 0) -> dict[str, Tensor]:
        critic_step = min(critic_step, 1)  # only "first or later" matters: one graph each
        key = (kind, critic_step, tuple(x.shape), x.dtype,
               self.objective.model.draw_schedule_key())
        schedule = self.schedules.get(key)
        if schedule is None:
            recorder = DrawRecorder(generator)
            with input_checks(False), self.autocast():
                terms = self.objective(x, recorder, kind, critic_step)
            self.schedules[key] = recorder.specs
            return terms
        self.compiled_calls += 1
        return call_compiled(self._compiled, x, draw_all(schedule, generator), kind, critic_step)
