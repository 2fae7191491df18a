"""Reward-weighted regression (theory §7.3, §8): flow matching on samples weighted by exp(β r).

* ``RewardWeightedRegression`` (offline, one round): samples x1 of the *base* model, fixed; weights
  w_i = exp(β r_i) / mean_j exp(β r_j), normalised over the whole set. Its minimiser at every x_t is
  E_base[(x1 - x0) e^{βr(x1)} | x_t] / E_base[e^{βr} | x_t], the FM velocity of p_base·e^{βr}: an exact-tilt
  estimator (theory §2).
* ``OnlineRewardWeightedRegression`` (ORW-CFM-W2, theory §7.3): samples from the current policy, refreshed every
  iteration, plus α‖v_θ - v_ref‖²; without the W2 term the tilt compounds toward a point mass at argmax r.
"""

from __future__ import annotations

import torch
from torch import Tensor

from flowlite.errors import check_beta
from flowlite.losses import flow_matching_loss, trust_region
from flowlite.methods.base import Method
from flowlite.paths import interpolate
from flowlite.solvers import sample_ode, solve_ode


def self_normalised_weights(rewards: Tensor, beta: float) -> Tensor:
    """w_i = exp(β r_i) / mean_j exp(β r_j), computed stably (mean weight 1)."""
    logits = beta * rewards.detach().to(torch.float64)
    w = torch.softmax(logits, dim=0) * rewards.shape[0]
    return w.to(rewards.dtype if rewards.is_floating_point() else torch.float32)


class RewardWeightedRegression(Method):
    """Offline RWR: one round on ``n_samples`` base samples (drawn once with the ODE), minibatches of
    ``batch_size``; loss = mean_i w_i ‖v_θ(x_t, t) - (x1_i - x0)‖², t ~ U[0, 1]."""

    name = "rwr"
    default_training = {"lr": 1e-3, "grad_clip": None, "lr_schedule": "cosine", "train_steps": 1500}

    def __init__(self, model, reward, beta: float, n_samples: int = 20000, sampling_steps: int = 50, **kw):
        super().__init__(model, reward, **kw)
        self.beta = check_beta(beta)
        with torch.no_grad():
            x0 = model.sample_prior(n_samples, self.cond)
            x1 = sample_ode(model.base_velocity, x0, steps=sampling_steps, cond=self.cond)
            r = reward(x1, self.cond)
        self.register_buffer("data", x1, persistent=False)
        self.register_buffer("weights", self_normalised_weights(r, self.beta), persistent=False)

    def loss(self, step: int) -> tuple[Tensor, dict]:
        idx = torch.randint(0, self.data.shape[0], (self.batch_size,))
        w = self.weights[idx]
        loss = flow_matching_loss(self.model.velocity, self.data[idx], weights=w, cond=self.cond)
        return loss, {"max_weight": w.max().item()}


class OnlineRewardWeightedRegression(Method):
    """ORW-CFM-W2: x1 from the current policy (ODE, no grad), weights exp(β r) self-normalised in the batch,
    loss = mean w_i ‖v_θ(x_t, t) - (x1_i - x0)‖² + α mean ‖v_θ(x_t, t) - v_ref(x_t, t)‖²."""

    name = "orw"
    optimum = "no-closed-form"
    default_training = {"lr": 1e-3, "grad_clip": 1.0, "train_steps": 300}

    def __init__(self, model, reward, beta: float, alpha: float = 1.0, **kw):
        super().__init__(model, reward, **kw)
        self.beta = check_beta(beta)
        if alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {alpha}")
        self.alpha = float(alpha)

    def loss(self, step: int) -> tuple[Tensor, dict]:
        with torch.no_grad():
            x0 = self.model.sample_prior(self.batch_size, self.cond)
            x1 = solve_ode(self.model.velocity, x0, self.grid, cond=self.cond, store=False).final
            r = self.reward(x1, self.cond)
        w = self_normalised_weights(r, self.beta)
        noise = torch.randn_like(x1)
        t = torch.rand(x1.shape[0], dtype=x1.dtype, device=x1.device)
        fm = flow_matching_loss(self.model.velocity, x1, x0=noise, t=t, weights=w, cond=self.cond)
        w2 = trust_region(self.model, interpolate(noise, x1, t), t, self.cond).mean()
        return fm + self.alpha * w2, {"reward": r.mean().item(), "w2": w2.item()}
