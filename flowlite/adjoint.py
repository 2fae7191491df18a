"""The one adjoint: the lean adjoint of Adjoint Matching, solved backwards along a stored trajectory
(theory §4, §3.3), and two independent references used to check it.

Every SDE step of ``solvers.solve_sde`` is x_{k+1} = state_gain_k x_k + velocity_gain_k v_base(x_k, t_k) +
noise_std_k z_k (for the base drift, ``schedules.StepCoefficients``), so its exact discrete adjoint is

    a_K = -β ∇r(X_1),        a_k = state_gain_k a_{k+1} + velocity_gain_k J_{v_base}(x_k, t_k)ᵀ a_{k+1},

one vector-Jacobian product per step, batched, with no graph kept between steps. With the exponential
integrator this is the exact adjoint of the discretised memoryless SDE; with Euler–Maruyama it is biased near
t = 0 (theory §3.3), which notebook 03 shows.
"""

from __future__ import annotations

import torch
from torch import Tensor

from flowlite.paths import batch_time
from flowlite.schedules import NoiseSchedule
from flowlite.solvers import Trajectory, VelocityFn


def velocity_vjp(velocity: VelocityFn, x: Tensor, t: float, cotangent: Tensor, cond=None) -> Tensor:
    """J_v(x, t)ᵀ · cotangent by one backward pass; returns a detached tensor."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        v = velocity(x, batch_time(t, x), cond)
        (vjp,) = torch.autograd.grad(v, x, cotangent)
    return vjp.detach()


def lean_adjoint(base_velocity: VelocityFn, traj: Trajectory, a_final: Tensor, schedule: NoiseSchedule,
                 cond=None, dtype: torch.dtype | None = torch.float32, down_to: int = 0) -> Tensor:
    """Integrate the lean adjoint backwards along ``traj`` (theory §4, §3.3).

    a_K = a_final (= -β ∇r(X_1));  a_k = state_gain_k a_{k+1} + velocity_gain_k J_{v_base}(x_k, t_k)ᵀ a_{k+1}.
    Returns the adjoints at every grid time, shape (K+1, B, ...), detached. Computed in ``dtype`` (fp32 by
    default, whatever the model's dtype; None keeps the trajectory's dtype). With ``down_to = j`` the recursion
    stops at a_j (Adjoint Matching never regresses at t = 0, so its a_0 would cost one VJP for nothing); the
    entries a_0 … a_{j-1} are NaN, so reading one by mistake cannot go unnoticed.
    """
    times = traj.times.tolist()
    if not 0 <= down_to < len(times):
        raise ValueError(f"down_to must be a grid index in [0, {len(times) - 1}], got {down_to}")
    dtype = dtype or traj.states.dtype
    a = a_final.detach().to(dtype)
    adjoints = [a]
    for k in range(len(times) - 2, down_to - 1, -1):
        step = schedule.step_coefficients(times[k], times[k + 1])
        x = traj.states[k].to(dtype)
        a_next = a
        a = step.state_gain * a_next
        if step.velocity_gain:
            a = a + step.velocity_gain * velocity_vjp(base_velocity, x, times[k], a_next, cond)
        adjoints.append(a)
    adjoints += [torch.full_like(a, float("nan"))] * down_to
    return torch.stack(adjoints[::-1])


def adjoint_by_autograd(base_velocity: VelocityFn, traj: Trajectory, reward, beta: float,
                        schedule: NoiseSchedule, cond=None) -> Tensor:
    """Reference for :func:`lean_adjoint`: replay the discretised *base* SDE from x_0 with the stored noise held
    fixed and differentiate -β r(X_1) with respect to every state. Equal to the lean adjoint on base trajectories."""
    times = traj.times.tolist()
    with torch.enable_grad():
        x = traj.states[0].detach().clone().requires_grad_(True)
        states = [x]
        for k, (t, u) in enumerate(zip(times[:-1], times[1:])):
            step = schedule.step_coefficients(t, u)
            x = (step.state_gain * x + step.velocity_gain * base_velocity(x, batch_time(t, x), cond)
                 + step.noise_std * traj.noises[k])
            x.retain_grad()
            states.append(x)
        (-beta * reward(states[-1], cond)).sum().backward()
    return torch.stack([x.grad.detach() for x in states])


def adjoint_by_torchdiffeq(base_velocity: VelocityFn, x0: Tensor, reward, beta: float, cond=None,
                           rtol: float = 1e-8, atol: float = 1e-8) -> Tensor:
    """Reference for the ODE case (σ = 0): ∇_{x_0} of -β r(X_1) along dx/dt = v_base, by torchdiffeq's
    continuous adjoint (``odeint_adjoint``). Compare with ``lean_adjoint(...)[0]`` on an Euler ODE trajectory."""
    from torchdiffeq import odeint_adjoint

    class _Field(torch.nn.Module):
        def forward(self, t, x):
            return base_velocity(x, batch_time(t, x), cond)

    with torch.enable_grad():
        x = x0.detach().clone().requires_grad_(True)
        times = torch.tensor([0.0, 1.0], dtype=x0.dtype)
        x1 = odeint_adjoint(_Field(), x, times, rtol=rtol, atol=atol, adjoint_params=())[-1]
        (grad,) = torch.autograd.grad((-beta * reward(x1, cond)).sum(), x)
    return grad.detach()
