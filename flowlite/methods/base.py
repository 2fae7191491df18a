"""The method seam: one object per fine-tuning method, driven by the one training loop (DESIGN §2, §3).

A method holds a ``FlowModel`` and a reward (plus any value network of its own), and turns one training step
into one loss: sample → targets → loss. It never imports a toy or SD3 module.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from flowlite.solvers import solve_ode, uniform_grid


class Method(nn.Module):
    """Base class. Subclasses implement ``loss(step) -> (loss, logs)``.

    Args:
        model: the ``FlowModel`` to fine-tune.
        reward: ``reward(x, cond) -> (B,)``, differentiable in x.
        batch_size: trajectories per step.
        steps: solver steps K on ``grid`` (default uniform on [0, 1]).
        cond: conditioning passed through to the model and the reward (None for toys).
    """

    name = "method"
    default_training: dict = {"lr": 1e-3, "steps": 200}

    def __init__(self, model, reward, batch_size: int = 256, steps: int = 50, grid: Tensor | None = None,
                 cond=None):
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model
        self.reward = reward
        self.batch_size = batch_size
        self.grid = uniform_grid(steps) if grid is None else torch.as_tensor(grid, dtype=torch.float64)
        self.cond = cond

    @property
    def steps(self) -> int:
        return self.grid.numel() - 1

    def loss(self, step: int) -> tuple[Tensor, dict]:  # pragma: no cover - interface
        raise NotImplementedError

    def parameter_groups(self) -> list[dict]:
        """What the optimiser updates; methods with a value network add their own group."""
        return [{"params": [p for p in self.model.trainable_parameters()]}]

    @torch.no_grad()
    def sample(self, n: int, steps: int = 50, method: str = "heun", generator: torch.Generator | None = None
               ) -> Tensor:
        """Evaluation samples of the fine-tuned model with the plain ODE (spec §10.4: evaluate with the ODE)."""
        x0 = self.model.sample_prior(n, self.cond, generator=generator)
        return solve_ode(self.model.velocity, x0, steps=steps, method=method, cond=self.cond, store=False).final
