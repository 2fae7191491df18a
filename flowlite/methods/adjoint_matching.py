"""Adjoint Matching (Domingo-Enrich et al., ICLR 2025; theory §5) — one iteration, as in theory §5.4:

    1. sample X_0..X_K with the *current* model's SDE (memoryless by default), no grad
    2. a_K = -β ∇r(X_1);  lean adjoint a_k backwards with VJPs of the *base* velocity (adjoint.lean_adjoint)
    3. on a subset 𝒯 of grid times: loss = mean ‖(κ/σ)(v_θ - v_base) + σ a‖²   (κ = 2, memoryless)

whose minimiser is v_θ = v_base - (σ²/κ) a = v_base - η_t a (η_t = (1 - t)/t). With the memoryless schedule the
fixed point is the FM velocity of the tilt p_base·exp(β r) (theory §5.1, §9.3); any other schedule gives a
value-function-biased law (theory §2), and σ → 0 leaves the base unchanged. Those are the negative controls:
pass ``schedule=EulerMaruyama.constant(0.5)`` or ``schedule="ode"``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from flowlite.adjoint import lean_adjoint
from flowlite.errors import check_beta
from flowlite.flows import repeat_cond
from flowlite.methods.base import Method
from flowlite.rewards.base import reward_gradient
from flowlite.schedules import EulerMaruyama, Memoryless, NoiseSchedule
from flowlite.solvers import solve_sde

SCHEDULES = ("memoryless", "ode", "constant")


def make_schedule(schedule: str | NoiseSchedule | None, sigma: float = 0.5) -> NoiseSchedule:
    """``"memoryless"`` (default), ``"ode"`` (σ ≡ 0) or ``"constant"`` (σ ≡ ``sigma``, Euler–Maruyama)."""
    if schedule is None or schedule == "memoryless":
        return Memoryless(1.0)
    if isinstance(schedule, NoiseSchedule):
        return schedule
    if schedule == "ode":
        return EulerMaruyama(lambda t: 0.0, name="ode")
    if schedule == "constant":
        return EulerMaruyama.constant(sigma)
    raise ValueError(f"unknown schedule {schedule!r}; accepted: {', '.join(SCHEDULES)} or a NoiseSchedule")


class AdjointMatching(Method):
    """Adjoint Matching with the lean adjoint.

    Args:
        beta: regularisation, target p* ∝ p_base exp(β r) (the paper's reward multiplier λ).
        schedule: noise schedule of the training SDE (see :func:`make_schedule`).
        time_subset: ``"all"`` grid times t_1..t_{K-1}, or ``"recipe"``: the last ``late_fraction`` of the steps
            plus ``n_early`` random earlier ones per iteration (theory §5.3).
        loss_clip: per-sample clipping of the loss, min(LCT, loss) (theory §5.3); None disables.
        weighting: ``"velocity"`` (default) regresses ‖Δv + (σ²/κ)a‖²; ``"control"`` regresses ‖u + σa‖² as in
            the paper (per-time weight κ²/σ²). Same minimiser; on the 2-D problems the two reached the same mode
            error, and the velocity form is the only one defined in the σ → 0 limit.
    """

    name = "adjoint-matching"
    default_training = {"lr": 3e-3, "ema_decay": 0.998, "grad_clip": None, "lr_schedule": "cosine", "train_steps": 300}

    def __init__(self, model, reward, beta: float, schedule: str | NoiseSchedule | None = "memoryless",
                 time_subset: str = "all", late_fraction: float = 0.25, n_early: int = 10,
                 loss_clip: float | None = None, weighting: str = "velocity", **kw):
        super().__init__(model, reward, **kw)
        self.beta = check_beta(beta)
        self.schedule = make_schedule(schedule)
        if time_subset not in ("all", "recipe"):
            raise ValueError(f"unknown time_subset {time_subset!r}; accepted: all, recipe")
        if weighting not in ("control", "velocity"):
            raise ValueError(f"unknown weighting {weighting!r}; accepted: control, velocity")
        if weighting == "control" and self.schedule.sigma(0.5) == 0.0:
            weighting = "velocity"  # the control form is undefined at σ = 0
        self.time_subset, self.late_fraction, self.n_early = time_subset, late_fraction, n_early
        self.loss_clip, self.weighting = loss_clip, weighting

    def time_indices(self) -> Tensor:
        """Indices k of the regression times, never t_0 (σ(0) = ∞) nor t_K (σ(1) = 0)."""
        inner = torch.arange(1, self.solver_steps)
        if self.time_subset == "all":
            return inner
        n_late = max(1, math.ceil(self.late_fraction * self.solver_steps))
        late, early = inner[-n_late:], inner[:-n_late]
        pick = early[torch.randperm(early.numel())[: self.n_early]]
        return torch.cat([pick.sort().values, late])

    def adjoint_weight(self, sigma: Tensor, gain: Tensor) -> Tensor:
        """w_t in the fixed point Δv* = -w_t a_t: σ²/κ (= η_t = (1 - t)/t when memoryless)."""
        return sigma**2 / gain

    def loss(self, step: int) -> tuple[Tensor, dict]:
        model, cond = self.model, self.cond
        x0 = model.sample_prior(self.batch_size, cond)
        with torch.no_grad():
            traj = solve_sde(model.velocity, x0, self.schedule, self.grid, cond=cond)
        r, grad = reward_gradient(self.reward, traj.final.float(), cond)
        idx = self.time_indices()
        adjoints = lean_adjoint(model.base_velocity, traj, -self.beta * grad, self.schedule, cond,
                                down_to=int(idx.min()))
        n_t, batch = idx.numel(), self.batch_size
        times = self.grid[idx].to(torch.float32)
        sigma = torch.tensor([self.schedule.sigma(float(t)) for t in times])
        gain = torch.tensor([self.schedule.control_gain(float(t)) for t in times])
        x, t = traj.at(idx)
        x = x.detach()
        a, _ = traj.at(idx, adjoints)
        cond_rep = repeat_cond(cond, n_t)
        delta_v = model.velocity_change(x, t, cond_rep).float()
        shape = (n_t * batch,) + (1,) * (x.ndim - 1)
        sigma_b = sigma.repeat_interleave(batch).reshape(shape).to(delta_v)
        gain_b = gain.repeat_interleave(batch).reshape(shape).to(delta_v)
        residual = delta_v + self.adjoint_weight(sigma_b, gain_b) * a  # Δv* = -(σ²/κ) a
        if self.weighting == "control":
            residual = (gain_b / sigma_b) * residual  # ‖u + σ a‖², u = κ Δv / σ
        per_sample = residual.pow(2).reshape(n_t * batch, -1).sum(-1)
        clipped = per_sample if self.loss_clip is None else per_sample.clamp(max=self.loss_clip)
        logs = {"reward": r.mean().item(), "adjoint_max": a.abs().max().item(),
                "clipped_fraction": (per_sample > self.loss_clip).float().mean().item() if self.loss_clip else 0.0}
        return clipped.mean(), logs
