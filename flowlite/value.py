"""Value functions on intermediate states: AC-Flow's critic V_φ(x, t, c) and the exact critic of the 2-D
problems (spec §5, §8.3). VGG-Flow's value-gradient field joins here with its issue.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from flowlite.gmm import GaussianMixture
from flowlite.nets import SinusoidalTimeEmbedding
from flowlite.paths import batch_time
from flowlite.rewards.toy import LinearReward, QuadraticReward


class Critic(nn.Module):
    """V_φ(x, t) -> (B,): an MLP with LayerNorm on [x, emb(t)] (spec §5.2: "MLP layers with LayerNorm").

    Conditioning is ignored here (toys); the SD3 issue gives it an image-sized counterpart behind the same call.
    """

    def __init__(self, dim: int = 2, width: int = 128, depth: int = 3, time_dim: int = 16,
                 max_frequency: float = 4.0):
        super().__init__()
        self.time_embedding = SinusoidalTimeEmbedding(time_dim, max_frequency)
        layers: list[nn.Module] = []
        fan_in = dim + time_dim
        for _ in range(depth - 1):
            layers += [nn.Linear(fan_in, width), nn.LayerNorm(width), nn.SiLU()]
            fan_in = width
        self.hidden = nn.Sequential(*layers)
        self.out = nn.Linear(fan_in, 1)

    def forward(self, x: Tensor, t: Tensor | float, cond=None) -> Tensor:
        t = batch_time(t, x)
        h = torch.cat([x.reshape(x.shape[0], -1), self.time_embedding(t)], dim=-1)
        return self.out(self.hidden(h)).squeeze(-1)


def exact_critic(base: GaussianMixture, reward, x: Tensor, t: Tensor | float) -> Tensor:
    """E_base[r(X1) | X_t = x] under the linear path, in closed form (spec §8.3 posterior):
    a mixture with weights w_k, means m_k, covariances C_k, so for r = -½(x - m)ᵀA(x - m) + c
        E[r] = Σ_k w_k [ -½ (m_k - m)ᵀA(m_k - m) - ½ tr(A C_k) ] + c,     and for r = bᵀx + c: Σ_k w_k bᵀm_k + c.
    This is also the value a critic learns by Monte-Carlo regression on *memoryless*-SDE trajectories, whose
    (X_t, X_1) has the path's joint law; on ODE trajectories the critic learns r(Φ_{t→1}(x)) instead."""
    dt = base.means.dtype
    w, means, covs = base.posterior(x.to(dt), t)
    if isinstance(reward, QuadraticReward):
        A, m = reward.A.to(dt), reward.m.to(dt)
        diff = means - m
        quad = ((diff @ A) * diff).sum(-1)
        trace = (A * covs).sum((-1, -2))  # tr(A C_k), A symmetric
        value = (w * (-0.5 * (quad + trace))).sum(-1) + reward.c
    elif isinstance(reward, LinearReward):
        value = (w * (means @ reward.b.to(dt))).sum(-1) + reward.c
    else:
        raise ValueError(f"no closed-form critic for {type(reward).__name__}; accepted: quadratic, linear")
    return value.to(x.dtype)


# ---------------------------------------------------------------------------------------------------- VGG-Flow
ETA_SCHEDULES = ("quadratic", "linear", "constant")


def eta(t: Tensor, schedule: str = "quadratic") -> Tensor:
    """η_t of the heuristic initialisation (spec §3.3): t² (the paper's default), t, or 1."""
    if schedule == "quadratic":
        return t * t
    if schedule == "linear":
        return t
    if schedule == "constant":
        return torch.ones_like(t)
    raise ValueError(f"unknown eta schedule {schedule!r}; accepted: {', '.join(ETA_SCHEDULES)}")


def clip_by_norm(grad: Tensor, threshold: Tensor | float) -> Tensor:
    """Per-sample rescaling grad ← grad·min(1, threshold/‖grad‖) (spec §3.5)."""
    norms = grad.reshape(grad.shape[0], -1).norm(dim=1).clamp_min(1e-12)
    scale = (torch.as_tensor(threshold, dtype=grad.dtype) / norms).clamp(max=1.0)
    return grad * scale.reshape(-1, *([1] * (grad.ndim - 1)))


class ValueGradientField(nn.Module):
    """VGG-Flow's value gradient g_φ(x, t) = -η_t·sg(∇r(x̂1(x, t))) + ν_φ(x, t)  (spec §3.3, Eq. 16),
    with x̂1 = x + (1 - t)·sg(v_θ(x, t)) from the *current* model and ν_φ a correction that starts at zero, so at
    initialisation the value gradient is the reward gradient at the one-step prediction (heuristic init).

    ``correction`` is any module ``(x, t, cond) -> same shape as x``; the default is a small zero-initialised MLP.
    """

    def __init__(self, reward, eta_schedule: str = "quadratic", correction: nn.Module | None = None,
                 dim: int = 2):
        super().__init__()
        eta(torch.zeros(1), eta_schedule)  # validate the name
        self.reward = reward
        self.eta_schedule = eta_schedule
        if correction is None:
            from flowlite.nets import MLPVelocity

            correction = MLPVelocity(dim, width=128, depth=3, time_dim=16, max_frequency=4.0, zero_init=True)
        self.correction = correction

    def reward_gradient(self, x: Tensor, t: Tensor, velocity: Tensor, cond=None) -> Tensor:
        """sg(∇r(x̂1)) with x̂1 = x + (1 - t) sg(v): the Jacobian of x̂1 is taken as the identity (spec §3.3)."""
        from flowlite.paths import x_hat_1
        from flowlite.rewards.base import reward_gradient

        _, grad = reward_gradient(self.reward, x_hat_1(x.detach(), t, velocity.detach()), cond)
        return grad

    def heuristic(self, t: Tensor, rgrad: Tensor) -> Tensor:
        """-η_t ∇r(x̂1): the value gradient at initialisation."""
        return -eta(t, self.eta_schedule).reshape(-1, *([1] * (rgrad.ndim - 1))) * rgrad

    def forward(self, x: Tensor, t: Tensor, rgrad: Tensor, cond=None) -> Tensor:
        """g_φ given the (clipped, detached) reward gradient at x̂1; gradients reach φ only through ν_φ."""
        return self.heuristic(t, rgrad) + self.correction(x, t, cond)


def hjb_residual(g_fn, base_velocity, x: Tensor, t: Tensor, g: Tensor, beta: float, eps: float, eps_t: float,
                 code_compat: bool = False, cond=None, v_base: Tensor | None = None) -> Tensor:
    """Finite-difference residual of the gradient-form HJB equation (spec §3.1 Eq. 10–12, §3.4):

        R = ∂_t g + (∇g)ᵀ(v_base - β g) + (∇v_base)ᵀ g,

    with central differences and stop-gradients on every direction, so only first-order backprop through the
    g_fn evaluations is needed (the (∇v_base)ᵀg term is a JVP, equal to the VJP for an exact FM field, §1.1).
    ``g_fn(x, t)`` evaluates the value gradient; ``g`` is its value at (x, t).
    ``code_compat``: the official code's forward differences, ∂_t scaled by 1/1000, no stop-gradient in the JVP.
    ``v_base``: the base velocity at (x, t) when the caller already has it (one base evaluation fewer).
    """
    if v_base is None:
        with torch.no_grad():
            v_base = base_velocity(x, t, cond)
    d = (v_base - beta * g).detach()
    if not code_compat:
        dt = (g_fn(x, t + eps_t) - g_fn(x, t - eps_t)) / (2 * eps_t)
        hess = (g_fn(x + eps * d, t) - g_fn(x - eps * d, t)) / (2 * eps)
        with torch.no_grad():
            gd = g.detach()
            jac = (base_velocity(x + eps * gd, t, cond) - base_velocity(x - eps * gd, t, cond)) / (2 * eps)
        return dt + hess + jac
    dt = (g_fn(x, t + eps_t) - g) / eps_t / 1000.0
    hess = (g_fn(x + eps * d, t) - g) / eps
    jac = (base_velocity(x + eps * g, t, cond) - v_base) / eps
    return dt + hess + jac
