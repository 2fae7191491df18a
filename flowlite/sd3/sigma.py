"""SD3's noise level σ and paper time t (theory §1.2): σ = 1 - t, the transformer's timestep = 1000·σ, and the
shifted σ grid. Every conversion between the two lives in this file; methods see paper time only."""

from __future__ import annotations

import torch
from torch import Tensor


def sigma_from_time(t: Tensor | float) -> Tensor:
    """SD3's noise level σ = 1 - t (σ = 1 is noise); the transformer receives timestep = 1000·σ."""
    return 1 - torch.as_tensor(t)


def time_from_sigma(sigma: Tensor | float) -> Tensor:
    """Paper time t = 1 - σ."""
    return 1 - torch.as_tensor(sigma)


def shift_sigma(sigma: Tensor | float, shift: float = 3.0) -> Tensor:
    """SD3's time shift σ' = s·σ / (1 + (s - 1)·σ) (SD3-medium uses s = 3)."""
    sigma = torch.as_tensor(sigma)
    return shift * sigma / (1 + (shift - 1) * sigma)


def shifted_grid(solver_steps: int, shift: float = 3.0) -> Tensor:
    """SD3's shifted schedule in paper time: σ_k uniform from 1 to 0, shifted by s, then t = 1 - σ."""
    sigma = torch.linspace(1.0, 0.0, solver_steps + 1, dtype=torch.float64)
    return time_from_sigma(shift_sigma(sigma, shift))


def pipeline_grid(scheduler, steps: int) -> Tensor:
    """The scheduler's own σ grid for ``steps`` steps (shifted, SD3-medium: shift 3), in paper time t = 1 - σ."""
    scheduler.set_timesteps(steps)
    return time_from_sigma(scheduler.sigmas.to(torch.float64).cpu())
