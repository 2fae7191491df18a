"""The accelerate setup of the one training loop and of the jobs: one ``Accelerator`` per run.

``accelerate launch`` (or torchrun) starts one process per GPU and sets WORLD_SIZE; a plain ``python`` is one process.
Either way :func:`make_accelerator` builds the ``Accelerator`` that ``flowlite.train.train`` drives, as diffusers'
training scripts do: ``gradient_accumulation_steps`` and ``mixed_precision`` are given to it, the loop prepares the
trainable module, optimizer and scheduler, and DistributedDataParallel averages the gradients in the backward pass
(on CPU, ``ACCELERATE_USE_CPU=true`` gives the same with gloo; theory §12.6). These settings differ from accelerate's
defaults, each for a reason:

* ``device_placement=False``: the caller puts its model where it wants it (the toy stays on the CPU even where a GPU
  is present, so its numbers do not move);
* ``step_scheduler_with_optimizer=False``: accelerate's ``AcceleratedScheduler`` would otherwise step the scheduler
  ``num_processes`` times per optimizer step (it assumes the schedule was written in per-process batches); flowlite's
  schedules count optimizer steps, so the learning rate at step k is the same with 1 or N processes;
* autocast off (``AutocastKwargs(enabled=False)``): the base's dtype comes from casting its weights, the LoRA stays in
  fp32 and the VAE, reward and adjoints stay fp32 (§1.4); ``mixed_precision`` still gives accelerate's gradient scaler
  for fp16 on a GPU;
* DDP with ``find_unused_parameters=True`` (a method may leave a parameter out of a step) and
  ``broadcast_buffers=False`` (no method trains a buffer, and every buffer is built from the same seed on every rank).

accelerate keeps ``AcceleratorState`` and ``GradientState`` as process-wide singletons. A notebook trains many times in
one kernel, and a run with another precision would otherwise be refused, so in a single process :func:`fresh_state`
clears them before each run and after it: a toy run leaves nothing behind for the next one.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch


def launched() -> bool:
    """True under ``accelerate launch`` / torchrun with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def fresh_state() -> None:
    """Clear accelerate's process-wide state in a single process (never in a launched run: it holds the group)."""
    if launched():
        return
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def make_accelerator(accumulate: int = 1, mixed_precision: str = "no", run_dir: str | Path | None = None,
                     log_with: list[str] | None = None, cpu: bool | None = None):
    """The ``Accelerator`` of one run (module docstring): ``accumulate`` micro-batches per optimizer step,
    ``mixed_precision`` in {no, bf16, fp16}, trackers ``log_with`` (e.g. ``["tensorboard", "wandb"]``) writing under
    ``run_dir``. ``cpu`` forces the CPU (default: when no GPU is visible)."""
    from accelerate import Accelerator
    from accelerate.utils import AutocastKwargs, DistributedDataParallelKwargs, ProjectConfiguration

    fresh_state()
    project = ProjectConfiguration(project_dir=str(run_dir), logging_dir=str(Path(run_dir) / "tensorboard")) \
        if run_dir is not None else None
    return Accelerator(gradient_accumulation_steps=accumulate, mixed_precision=mixed_precision,
                       cpu=bool(cpu) if cpu is not None else not torch.cuda.is_available(), device_placement=False,
                       step_scheduler_with_optimizer=False, log_with=log_with or None, project_config=project,
                       kwargs_handlers=[AutocastKwargs(enabled=False),  # module docstring: why each setting
                                        DistributedDataParallelKwargs(find_unused_parameters=True,
                                                                      broadcast_buffers=False)])


def installed_trackers(wanted: tuple[str, ...] = ("tensorboard", "wandb")) -> list[str]:
    """The trackers of ``wanted`` whose package is installed (accelerate's own checks)."""
    from accelerate.utils import is_tensorboard_available, is_wandb_available

    found = {"tensorboard": is_tensorboard_available(), "wandb": is_wandb_available()}
    return [name for name in wanted if found.get(name)]


@dataclass
class Processes:
    """This process's place in a run: rank, world size, device and the run's ``Accelerator`` (None: one process
    that has not built one)."""

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")
    accelerator: object = None

    @property
    def main(self) -> bool:
        return self.rank == 0

    def mean(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor if self.world == 1 else self.accelerator.reduce(tensor.contiguous(), reduction="mean")

    def max_difference(self, tensor: torch.Tensor) -> float:
        """max |x_rank - x_0| over ranks (0 in a single process)."""
        if self.world == 1:
            return 0.0
        gathered = self.accelerator.gather(tensor.detach().reshape(1, -1).float())
        return (gathered - gathered[:1]).abs().max().item()


def processes(accumulate: int = 1, mixed_precision: str = "no", run_dir: str | Path | None = None,
              log_with: list[str] | None = None) -> Processes:
    """Build the run's ``Accelerator`` (:func:`make_accelerator`) and say where this process stands. One process keeps
    flowlite's device choice (``flowlite.config.pick_device``: CUDA, then MPS, then CPU)."""
    from flowlite.config import pick_device

    device = pick_device("auto") if not launched() else None
    accelerator = make_accelerator(accumulate, mixed_precision, run_dir, log_with,
                                   cpu=None if device is None else device.type == "cpu")
    return Processes(accelerator.process_index, accelerator.num_processes, device or accelerator.device, accelerator)


def say(line: str) -> None:
    """One line in one write, so that the lines of several ranks sharing a pipe never interleave."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
