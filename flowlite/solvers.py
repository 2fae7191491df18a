"""The one sampler module: ODE (Euler, Heun, adaptive via torchdiffeq) and SDEs of the linear path.

Every solver takes ``velocity(x, t, cond) -> v`` (pass ``model.velocity`` or ``model.base_velocity``), a start
state and an explicit time grid in paper time (uniform by default, so SD3's shifted grid works unchanged), and
returns a :class:`Trajectory`. Nothing here disables gradients: wrap a call in ``torch.no_grad()`` yourself
when you do not want them (theory §3.2, §3.3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from flowlite.paths import batch_time
from flowlite.schedules import EulerMaruyama, Memoryless, NoiseSchedule

VelocityFn = Callable[[Tensor, Tensor, object], Tensor]


@dataclass
class Trajectory:
    """States x_{t_k} on a time grid; ``noises[k]`` is the standard normal used on step k (SDEs only).

    ``states`` has shape (K+1, B, *event_shape) when the whole path was stored, else (2, B, ...) for
    (start, end) with ``times`` of length 2.
    """

    times: Tensor
    states: Tensor
    noises: Tensor | None = None

    @property
    def final(self) -> Tensor:
        return self.states[-1]

    @property
    def steps(self) -> int:
        return self.times.numel() - 1

    def at(self, indices: Tensor, values: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """States (or any per-grid-time tensor ``values`` of shape (K+1, B, ...)) at grid ``indices``, stacked
        time-major into one batch (n·B, ...), with their times (n·B,) in the states' dtype."""
        values = self.states if values is None else values
        batch = values.shape[1]
        flat = values[indices].reshape(indices.numel() * batch, *values.shape[2:])
        return flat, self.times[indices].to(self.states.dtype).repeat_interleave(batch)

    def between(self, indices: Tensor, fractions: Tensor) -> tuple[Tensor, Tensor]:
        """States at t_k + u·(t_{k+1} - t_k) for grid ``indices`` k < K and ``fractions`` u ∈ [0, 1] (one per
        index), by linear interpolation of x_k and x_{k+1} — exactly the Euler path between the two grid
        points. Stacked time-major as in :meth:`at`."""
        lo, _ = self.at(indices)
        hi, _ = self.at(indices + 1)
        t_lo, t_hi = self.times[indices], self.times[indices + 1]
        u = fractions.to(self.states.dtype)
        batch = self.states.shape[1]
        w = u.repeat_interleave(batch).reshape(-1, *([1] * (lo.ndim - 1)))
        times = (t_lo + fractions.to(t_lo.dtype) * (t_hi - t_lo)).to(self.states.dtype).repeat_interleave(batch)
        return lo + w * (hi - lo), times


# ---------------------------------------------------------------------------------------------- grids
def uniform_grid(steps: int, t0: float = 0.0, t1: float = 1.0, device=None) -> Tensor:
    """t_k = t0 + k (t1 - t0) / K, k = 0..K (float64 so step sizes are exact)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return torch.linspace(t0, t1, steps + 1, dtype=torch.float64, device=device)


def _check_grid(grid: Tensor) -> Tensor:
    grid = torch.as_tensor(grid, dtype=torch.float64)
    if grid.ndim != 1 or grid.numel() < 2:
        raise ValueError("time grid must be a 1-D tensor with at least two times")
    if not (grid[1:] > grid[:-1]).all():
        raise ValueError("time grid must be strictly increasing (paper time: 0 = noise, 1 = data)")
    return grid


# ---------------------------------------------------------------------------------------------- ODE
def euler_step(velocity: VelocityFn, x: Tensor, t: float, t_next: float, cond=None) -> Tensor:
    """x + h v(x, t)."""
    return x + (t_next - t) * velocity(x, batch_time(t, x), cond)


def heun_step(velocity: VelocityFn, x: Tensor, t: float, t_next: float, cond=None) -> Tensor:
    """Trapezoidal predictor-corrector: x + h/2 [v(x, t) + v(x + h v(x, t), t + h)]."""
    h = t_next - t
    v0 = velocity(x, batch_time(t, x), cond)
    v1 = velocity(x + h * v0, batch_time(t_next, x), cond)
    return x + 0.5 * h * (v0 + v1)


_ODE_STEPS = {"euler": euler_step, "heun": heun_step}


def solve_ode(velocity: VelocityFn, x0: Tensor, grid: Tensor | None = None, steps: int = 50,
              method: str = "euler", cond=None, store: bool = True) -> Trajectory:
    """Integrate dx/dt = v(x, t) over ``grid`` (default: ``steps`` uniform steps on [0, 1])."""
    if method not in _ODE_STEPS:
        raise ValueError(f"unknown ODE method {method!r}; accepted: {', '.join(_ODE_STEPS)}, "
                         "or use solve_ode_adaptive for torchdiffeq's solvers")
    step = _ODE_STEPS[method]
    grid = _check_grid(uniform_grid(steps) if grid is None else grid)
    times = grid.tolist()
    x = x0
    states = [x0]
    for t, t_next in zip(times[:-1], times[1:]):
        x = step(velocity, x, t, t_next, cond)
        if store:
            states.append(x)
    if not store:
        states.append(x)
        grid = grid[[0, -1]]
    return Trajectory(grid, torch.stack(states))


def solve_ode_adaptive(velocity: VelocityFn, x0: Tensor, grid: Tensor | None = None, cond=None,
                       method: str = "dopri5", rtol: float = 1e-6, atol: float = 1e-6) -> Trajectory:
    """Adaptive solve with torchdiffeq's ``odeint``; states are reported at the grid times (default [0, 1])."""
    from torchdiffeq import odeint

    grid = _check_grid(torch.tensor([0.0, 1.0]) if grid is None else grid)

    def rhs(t, x):
        return velocity(x, batch_time(t, x), cond)

    states = odeint(rhs, x0, grid.to(x0.dtype).to(x0.device), method=method, rtol=rtol, atol=atol)
    return Trajectory(grid, states)


# ---------------------------------------------------------------------------------------------- SDEs
def _noise_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    device = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=device).to(x.device)


def solve_sde(velocity: VelocityFn, x0: Tensor, schedule: NoiseSchedule, grid: Tensor | None = None,
              steps: int = 50, cond=None, generator: torch.Generator | None = None,
              noises: Tensor | None = None) -> Trajectory:
    """x_{k+1} = state_gain_k x_k + velocity_gain_k v(x_k, t_k) + noise_std_k z_k (``schedules``); ``noises`` (K, B, ...)
    replays a path with its noise held fixed."""
    grid = _check_grid(uniform_grid(steps) if grid is None else grid)
    times = grid.tolist()
    x = x0
    states, used = [x0], []
    for k, (t, u) in enumerate(zip(times[:-1], times[1:])):
        step = schedule.step_coefficients(t, u)
        z = noises[k] if noises is not None else _noise_like(x, generator)
        x = step.state_gain * x + step.velocity_gain * velocity(x, batch_time(t, x), cond) + step.noise_std * z
        states.append(x)
        used.append(z)
    return Trajectory(grid, torch.stack(states), torch.stack(used))


def solve_memoryless_sde(velocity: VelocityFn, x0: Tensor, grid: Tensor | None = None, steps: int = 50,
                         scale: float = 1.0, cond=None, generator: torch.Generator | None = None,
                         noises: Tensor | None = None) -> Trajectory:
    """Sample the memoryless SDE (drift 2v - x/t, σ(t) = sqrt(2(1 - t)/t) when scale = 1) with the
    exponential integrator of theory §3.3. ``scale`` = c gives σ = c·sqrt(2(1 - t)/t) with drift
    (1 + c²)v - c²x/t (same marginals; c = 0 is the Euler ODE). Pass ``noises`` (K, B, ...) to replay a path."""
    return solve_sde(velocity, x0, Memoryless(scale), grid, steps, cond, generator, noises)


def solve_sde_euler_maruyama(velocity: VelocityFn, x0: Tensor, sigma: Callable[[float], float],
                             grid: Tensor | None = None, steps: int = 50, cond=None,
                             generator: torch.Generator | None = None, noises: Tensor | None = None) -> Trajectory:
    """Euler–Maruyama for dX = [v + ½σ(t)² ∇log p_t] dt + σ(t) dB with ∇log p_t = -(x - t v)/(1 - t).
    σ ≡ 0 reproduces Euler's ODE exactly. For the memoryless σ use ``paths.memoryless_sigma(t, offset=h)``
    (σ(0) is infinite). Kept to show its bias (theory §3.3); prefer :func:`solve_memoryless_sde`."""
    return solve_sde(velocity, x0, EulerMaruyama(sigma), grid, steps, cond, generator, noises)


# ---------------------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def sample_ode(velocity: VelocityFn, x0: Tensor, steps: int = 50, method: str = "heun", grid: Tensor | None = None,
               cond=None) -> Tensor:
    """The one evaluation sampler: endpoints of the plain ODE from the given starting noises, without gradients.

    Fine-tuned models are evaluated with the ODE whatever they were trained with (theory §10): Heun with 50 uniform
    steps on the 2-D problems, Euler on the scheduler's grid for image models (pass ``grid``).
    """
    return solve_ode(velocity, x0, grid=grid, steps=steps, method=method, cond=cond, store=False).final
