"""The method seam: one object per fine-tuning method, driven by the one training loop (theory §2).

A method holds a ``FlowModel`` and a reward (plus any value network of its own, which it asks the model for), and
turns one training step into one loss: sample → targets → loss. It imports only the core: never ``flowlite.toy``,
a model package or ``flowlite.jobs`` (``tests/test_layout.py`` checks it).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from flowlite.solvers import sample_ode, uniform_grid

OPTIMA = ("kl-tilt", "deterministic-control", "biased", "reward-argmax", "no-closed-form")
"""What a method converges to (theory §2): the tilt p_base·exp(β r); VGG-Flow's deterministic-control optimum; a
value-function-biased law (memory of X0); with no KL term, a collapse toward argmax r; or no known closed form
(AC-Flow, online RWR with a trust region)."""


class Method(nn.Module):
    """Base class. Subclasses implement ``loss(step) -> (loss, logs)``.

    Args:
        model: the ``FlowModel`` to fine-tune.
        reward: ``reward(x, cond) -> (B,)``, differentiable in x.
        batch_size: trajectories per step.
        solver_steps: steps K of the training sampler on ``grid`` (default: uniform on [0, 1]).
        cond: conditioning passed through to the model and the reward (None for toys).

    Class attributes: ``name`` (its key in ``flowlite.methods.METHODS``), ``optimum`` (one of :data:`OPTIMA`) and
    ``default_training`` (``finetune`` options: lr, EMA, clipping, ``train_steps``).
    """

    name = "method"
    optimum = "kl-tilt"
    default_training: dict = {"lr": 1e-3, "train_steps": 200}

    def __init__(self, model, reward, batch_size: int = 256, solver_steps: int = 50, grid: Tensor | None = None,
                 cond=None):
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model
        self.reward = reward
        self.batch_size = batch_size
        self.grid = uniform_grid(solver_steps) if grid is None else torch.as_tensor(grid, dtype=torch.float64)
        self.cond = cond

    @property
    def solver_steps(self) -> int:
        return self.grid.numel() - 1

    def loss(self, step: int) -> tuple[Tensor, dict]:  # pragma: no cover - interface
        raise NotImplementedError

    def parameter_groups(self) -> list[dict]:
        """What the optimiser updates; methods with a value network add their own group."""
        return [{"params": [p for p in self.model.trainable_parameters()]}]

    def sample(self, n: int, solver_steps: int = 50, method: str = "heun",
               generator: torch.Generator | None = None) -> Tensor:
        """Evaluation samples of the fine-tuned model with the plain ODE (theory §10: evaluate with the ODE)."""
        x0 = self.model.sample_prior(n, self.cond, generator=generator)
        return sample_ode(self.model.velocity, x0, steps=solver_steps, method=method, cond=self.cond)
