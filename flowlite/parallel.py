"""Data parallelism for the jobs: which process this is, and the few collective operations they need.

``accelerate launch`` (or torchrun) starts one process per GPU and sets WORLD_SIZE; :func:`processes` then builds an
``Accelerator`` and returns this process's rank, the world size and its device. A single process needs no
accelerate. Nothing is wrapped in DistributedDataParallel: each rank backpropagates its own loss and
:meth:`Processes.average_gradients` averages the gradients in one flat all-reduce before the optimizer step, so the
trained weights stay identical on every rank (on CPU, ``ACCELERATE_USE_CPU=true`` gives the same with gloo).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import torch


@dataclass
class Processes:
    """This process's place in a data-parallel run (accelerate), or a single process."""

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")
    accelerator: object = None

    @property
    def main(self) -> bool:
        return self.rank == 0

    def mean(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor if self.world == 1 else self.accelerator.reduce(tensor.contiguous(), reduction="mean")

    def average_gradients(self, params) -> None:
        """g ← mean over ranks of g, in one flat all-reduce (parameters without a gradient are skipped)."""
        if self.world == 1:
            return
        with_grad = [p for p in params if p.grad is not None]
        flat = self.mean(torch.cat([p.grad.reshape(-1).float() for p in with_grad]))
        for p, g in zip(with_grad, flat.split([p.numel() for p in with_grad])):
            p.grad.copy_(g.view_as(p.grad))

    def max_difference(self, tensor: torch.Tensor) -> float:
        """max |x_rank - x_0| over ranks (0 in a single process)."""
        if self.world == 1:
            return 0.0
        gathered = self.accelerator.gather(tensor.detach().reshape(1, -1).float())
        return (gathered - gathered[:1]).abs().max().item()


def processes() -> Processes:
    """accelerate when launched with several processes (``accelerate launch`` / torchrun set WORLD_SIZE)."""
    from flowlite.config import pick_device

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from accelerate import Accelerator

        accelerator = Accelerator()
        return Processes(accelerator.process_index, accelerator.num_processes, accelerator.device, accelerator)
    return Processes(device=pick_device("auto"))


def say(line: str) -> None:
    """One line in one write, so that the lines of several ranks sharing a pipe never interleave."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
