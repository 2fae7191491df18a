"""Naive reward maximisation: ReFL and DRaFT-K (theory §8). No KL term, so both collapse toward argmax r —
the baselines every alignment paper compares with, and the reason KL regularisation exists (theory §2)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from flowlite.methods.base import Method
from flowlite.paths import x_hat_1
from flowlite.solvers import solve_ode


class ReFL(Method):
    """ReFL: run the ODE without grad to a random late step k, take one model evaluation with grad and
    maximise the reward of the one-step prediction, loss = -mean r(x̂1), x̂1 = x_k + (1 - t_k) v_θ(x_k, t_k).

    ``late_fraction`` = (a, b): k is drawn uniformly from the steps in [a·K, b·K) (VGG on SD3 used 15–19 of 20).
    """

    name = "refl"
    optimum = "reward-argmax"
    default_training = {"lr": 3e-3, "train_steps": 100}

    def __init__(self, model, reward, late_fraction: tuple[float, float] = (0.75, 1.0), **kw):
        super().__init__(model, reward, **kw)
        lo, hi = late_fraction
        if not 0.0 <= lo < hi <= 1.0:
            raise ValueError(f"late_fraction must satisfy 0 <= a < b <= 1, got {late_fraction}")
        self.first_step = min(int(math.floor(lo * self.solver_steps)), self.solver_steps - 1)
        self.last_step = max(self.first_step, int(math.ceil(hi * self.solver_steps)) - 1)

    def loss(self, step: int) -> tuple[Tensor, dict]:
        k = int(torch.randint(self.first_step, self.last_step + 1, ()))
        x = self.model.sample_prior(self.batch_size, self.cond)
        if k > 0:
            with torch.no_grad():
                x = solve_ode(self.model.velocity, x, self.grid[: k + 1], cond=self.cond, store=False).final
        t = float(self.grid[k])
        prediction = x_hat_1(x, t, self.model.velocity(x, t, self.cond))
        r = self.reward(prediction, self.cond)
        return -r.mean(), {"reward": r.mean().item(), "truncation_step": k}


class DRaFT(Method):
    """DRaFT-K: sample the ODE without grad up to the last K steps, then backpropagate r(X1) through those
    K steps; loss = -mean r(X1). ``k="all"`` differentiates through the whole solve (memory grows with K)."""

    name = "draft"
    optimum = "reward-argmax"
    default_training = {"lr": 3e-3, "train_steps": 100}

    def __init__(self, model, reward, k: int | str = 1, **kw):
        super().__init__(model, reward, **kw)
        if k == "all":
            k = self.solver_steps
        if not isinstance(k, int) or not 1 <= k <= self.solver_steps:
            raise ValueError(f"k must be 'all' or an integer in [1, {self.solver_steps}], got {k!r}")
        self.k = k

    def loss(self, step: int) -> tuple[Tensor, dict]:
        x = self.model.sample_prior(self.batch_size, self.cond)
        split = self.solver_steps - self.k
        if split > 0:
            with torch.no_grad():
                x = solve_ode(self.model.velocity, x, self.grid[: split + 1], cond=self.cond, store=False).final
        x1 = solve_ode(self.model.velocity, x, self.grid[split:], cond=self.cond, store=False).final
        r = self.reward(x1, self.cond)
        return -r.mean(), {"reward": r.mean().item()}
