"""AC-Flow: actor-critic fine-tuning with intermediate feedback (Fan et al. 2025; theory §7).

The paper's body is not public: this is the configurable reconstruction of theory §7.4, consistent with its
abstract [verified: reward shaping; advantage clipping + critic warm-up; critic weighting generalising
ORW-CFM-W2 with a W2 regulariser] and with ORW-CFM-W2's code [verified]. Every constant below is a named
parameter; the defaults are guesses [reconstructed]. One iteration:

    1. sample trajectories with the current actor (memoryless SDE by default; ``sampler="ode"`` as in the paper)
    2. shaped rewards r̃ = shape(r)       (batch or running standardisation, optional tanh squashing)
    3. critic:  L_V = mean_{i,k} (V_φ(x_{t_k}^i, t_k) - y_{i,k})²,  y = r̃_i (Monte Carlo) or V(x_{t_{k+1}}) (TD)
    4. during ``warmup`` iterations only the critic trains
    5. advantages A_{i,k} = clip(r̃_i - V_φ(x_{t_k}^i, t_k), -c_A, c_A)
    6. actor:   L_π = mean_{i,k} w(A_{i,k}) ‖v_θ(x_{t_k}, t_k) - (x1_i - x_{t_k})/(1 - t_k)‖²
                      + α mean ‖v_θ(x_{t_k}, t_k) - v_ref(x_{t_k}, t_k)‖²
       w(A) = exp(A/τ) self-normalised over the batch, or softplus(1 + A), or relu(1 + A).

The regression is on the trajectory's own states toward the conditional velocity of its endpoint; for memoryless
trajectories (X_t, X_1) has the path's joint law, so this is the weighted flow-matching loss (re-noising
x_τ = τ x1 + (1 - τ) x0' is the alternative of theory §7.4). Special case [theory §7.4]: offline on base samples,
α = 0, no clipping, exp weights with τ = 1/β and no shaping gives reward-weighted regression — an exact tilt.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowlite.methods.base import Method
from flowlite.losses import trust_region
from flowlite.schedules import EulerMaruyama, Memoryless
from flowlite.solvers import solve_sde

WEIGHTINGS = ("exp", "softplus", "relu")
SHAPINGS = ("batch", "running", "none")


class RewardShaper:
    """r̃ = (r - μ)/(s + ε), with μ, s from the batch or a running (EMA) estimate; optional tanh(r̃/κ)·κ."""

    def __init__(self, mode: str = "batch", squash: float | None = None, momentum: float = 0.9, eps: float = 1e-6):
        if mode not in SHAPINGS:
            raise ValueError(f"unknown shaping {mode!r}; accepted: {', '.join(SHAPINGS)}")
        self.mode, self.squash, self.momentum, self.eps = mode, squash, momentum, eps
        self.mean: float | None = None
        self.std: float | None = None

    def __call__(self, r: Tensor) -> Tensor:
        if self.mode == "none":
            shaped = r
        else:
            mu, sd = r.mean().item(), r.std().item() if r.numel() > 1 else 1.0
            if self.mode == "running":
                if self.mean is None:
                    self.mean, self.std = mu, sd
                else:
                    self.mean = self.momentum * self.mean + (1 - self.momentum) * mu
                    self.std = self.momentum * self.std + (1 - self.momentum) * sd
                mu, sd = self.mean, self.std
            shaped = (r - mu) / (sd + self.eps)
        if self.squash:
            shaped = self.squash * torch.tanh(shaped / self.squash)
        return shaped

    def state_dict(self) -> dict:
        return {"mean": self.mean, "std": self.std}


def advantage_weights(advantages: Tensor, weighting: str = "exp", temperature: float = 1.0) -> Tensor:
    """w(A): ``exp`` -> exp(A/τ) normalised to mean 1 over the batch; ``softplus`` / ``relu`` -> of (1 + A)."""
    a = advantages.detach()
    if weighting == "exp":
        return torch.softmax(a.reshape(-1) / temperature, 0).reshape(a.shape) * a.numel()
    if weighting == "softplus":
        return F.softplus(1 + a)
    if weighting == "relu":
        return F.relu(1 + a)
    raise ValueError(f"unknown weighting {weighting!r}; accepted: {', '.join(WEIGHTINGS)}")


class ACFlow(Method):
    """AC-Flow (reconstructed, theory §7.4). ``model.trainable_parameters()`` is the actor; ``critic`` is V_φ.

    Args:
        critic: V_φ(x, t, cond) -> (B,); default ``model.make_critic(cond)``.
        alpha: W2 trust-region weight (α → ∞ keeps the actor at the reference). Online, the actor regresses onto
            its own high-variance samples; with α ≪ 1 it random-walks and diverges on the 2-D problems, so the
            default is 1 (ORW-CFM-W2's default, whose README asks for α ≥ 1).
        clip: advantage clip c_A (None: no clipping).
        warmup: iterations in which only the critic trains.
        weighting: ``exp`` | ``softplus`` | ``relu``; temperature: τ of the exp weights w = exp(A/τ). AC-Flow has no
            KL strength β: with ``shaping`` on, advantages are in standardised units and τ is a knob of its own
            (theory §1.3). With ``shaping="none"``, no clipping, α = 0 and τ = 1/β, offline, it is the β-tilt of
            reward-weighted regression (theory §7.3).
        shaping: ``batch`` | ``running`` | ``none``; squash: κ of the optional tanh squashing.
        critic_target: ``mc`` (terminal shaped reward) or ``td`` (V at the next stored state, r̃ at the end).
        sampler: ``sde`` (memoryless: critic = E[r̃(X1) | X_t]) or ``ode`` (critic = r̃ of the ODE endpoint).
        n_times: intermediate states per trajectory used per iteration (random grid indices in 1..K-1).
    """

    name = "ac-flow"
    optimum = "no-closed-form"
    default_training = {"lr": 1e-3, "grad_clip": 1.0, "train_steps": 300}

    def __init__(self, model, reward, critic: nn.Module | None = None, alpha: float = 1.0,
                 clip: float | None = 2.0, warmup: int = 50, weighting: str = "exp",
                 temperature: float = 1.0, shaping: str = "batch", squash: float | None = None,
                 critic_target: str = "mc", sampler: str = "sde", n_times: int = 8, critic_lr: float = 3e-3,
                 **kw):
        super().__init__(model, reward, **kw)
        if weighting not in WEIGHTINGS:
            raise ValueError(f"unknown weighting {weighting!r}; accepted: {', '.join(WEIGHTINGS)}")
        if critic_target not in ("mc", "td"):
            raise ValueError(f"unknown critic_target {critic_target!r}; accepted: mc, td")
        if sampler not in ("sde", "ode"):
            raise ValueError(f"unknown sampler {sampler!r}; accepted: sde, ode")
        if alpha < 0 or warmup < 0 or (clip is not None and clip <= 0):
            raise ValueError("alpha and warmup must be >= 0 and clip > 0 (or None)")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.critic = critic if critic is not None else model.make_critic(self.cond)
        self.alpha, self.clip, self.warmup = float(alpha), clip, int(warmup)
        self.weighting, self.shaping = weighting, RewardShaper(shaping, squash)
        self.temperature = float(temperature)
        self.critic_target, self.n_times, self.critic_lr = critic_target, n_times, critic_lr
        self.schedule = Memoryless(1.0) if sampler == "sde" else EulerMaruyama.constant(0.0)

    def parameter_groups(self) -> list[dict]:
        return [{"params": list(self.model.trainable_parameters())},
                {"params": list(self.critic.parameters()), "lr": self.critic_lr, "weight_decay": 0.0}]

    def advantages(self, shaped: Tensor, values: Tensor) -> Tensor:
        """A = clip(r̃ - V, -c_A, c_A) (values detached)."""
        a = shaped - values.detach()
        return a if self.clip is None else a.clamp(-self.clip, self.clip)

    def loss(self, step: int) -> tuple[Tensor, dict]:
        model, cond = self.model, self.cond
        with torch.no_grad():
            x0 = model.sample_prior(self.batch_size, cond)
            traj = solve_sde(model.velocity, x0, self.schedule, self.grid, cond=cond)
            r = self.reward(traj.final, cond)
        shaped = self.shaping(r.float())
        k = torch.randint(1, self.solver_steps, (self.n_times,))
        n, b = k.numel(), self.batch_size
        x, t = traj.at(k)
        target_r = shaped.repeat(n)
        values = self.critic(x, t, cond)
        if self.critic_target == "td":
            with torch.no_grad():
                nxt = (k + 1).clamp(max=self.solver_steps)
                x_next, t_next = traj.at(nxt)
                boot = self.critic(x_next, t_next, cond)
                target_r = torch.where((nxt == self.solver_steps).repeat_interleave(b), target_r, boot)
        critic_loss = (values - target_r).pow(2).mean()
        logs = {"reward": r.mean().item(), "critic_loss": critic_loss.item()}
        if step < self.warmup:
            return critic_loss, logs
        adv = self.advantages(shaped.repeat(n), values)
        w = advantage_weights(adv, self.weighting, self.temperature)
        x1 = traj.final.repeat(n, *([1] * (traj.final.ndim - 1)))
        shape = (n * b,) + (1,) * (x.ndim - 1)
        target_v = (x1 - x) / (1 - t).reshape(shape)
        fm = (model.velocity(x, t, cond) - target_v).pow(2).reshape(n * b, -1).sum(-1)
        actor_loss = (w * fm).mean()
        if self.alpha > 0:
            actor_loss = actor_loss + self.alpha * trust_region(model, x, t, cond).mean()
        logs.update({"actor_loss": actor_loss.item(), "max_weight": w.max().item(),
                     "clipped_fraction": (adv.abs() >= (self.clip or math.inf)).float().mean().item()})
        return actor_loss + critic_loss, logs
