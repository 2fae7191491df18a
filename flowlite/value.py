"""Value functions on intermediate states (theory §6): VGG-Flow's value-gradient field g_φ, its heuristic
initialisation and the finite-difference residual of the HJB equation in gradient form. The networks inside (a
critic, a correction ν_φ) come from the model (``FlowModel.make_critic`` / ``make_value_correction``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from flowlite.paths import x_hat_1
from flowlite.rewards.base import reward_gradient

ETA_SCHEDULES = ("quadratic", "linear", "constant")


def eta(t: Tensor, schedule: str = "quadratic") -> Tensor:
    """η_t of the heuristic initialisation (theory §6.3): t² (the paper's default), t, or 1."""
    if schedule == "quadratic":
        return t * t
    if schedule == "linear":
        return t
    if schedule == "constant":
        return torch.ones_like(t)
    raise ValueError(f"unknown eta schedule {schedule!r}; accepted: {', '.join(ETA_SCHEDULES)}")


def clip_by_norm(grad: Tensor, threshold: Tensor | float) -> Tensor:
    """Per-sample rescaling grad ← grad·min(1, threshold/‖grad‖) (theory §6.5)."""
    norms = grad.reshape(grad.shape[0], -1).norm(dim=1).clamp_min(1e-12)
    scale = (torch.as_tensor(threshold, dtype=grad.dtype) / norms).clamp(max=1.0)
    return grad * scale.reshape(-1, *([1] * (grad.ndim - 1)))


class ValueGradientField(nn.Module):
    """VGG-Flow's value gradient g_φ(x, t) = -η_t·sg(∇r(x̂1(x, t))) + ν_φ(x, t)  (theory §6.3, Eq. 16),
    with x̂1 = x + (1 - t)·sg(v_θ(x, t)) from the *current* model and ν_φ a correction that starts at zero, so at
    initialisation the value gradient is the reward gradient at the one-step prediction (heuristic init).

    ``correction`` is any module ``(x, t, cond) -> same shape as x`` that starts at zero, usually
    ``model.make_value_correction(cond)``.
    """

    def __init__(self, reward, correction: nn.Module, eta_schedule: str = "quadratic"):
        super().__init__()
        eta(torch.zeros(1), eta_schedule)  # validate the name
        self.reward = reward
        self.eta_schedule = eta_schedule
        self.correction = correction

    def reward_gradient(self, x: Tensor, t: Tensor, velocity: Tensor, cond=None) -> Tensor:
        """sg(∇r(x̂1)) with x̂1 = x + (1 - t) sg(v): the Jacobian of x̂1 is taken as the identity (theory §6.3)."""
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
    """Finite-difference residual of the gradient-form HJB equation (theory §6.1 Eq. 10–12, §3.4):

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
