"""The linear (rectified-flow) probability path and the quantities derived from it (theory §1.1, §3.2, §1.2).

Paper time: x_t = t x1 + (1 - t) x0 with x0 ~ N(0, I); velocity v = E[x1 - x0 | x_t].
"""

from __future__ import annotations

import torch
from torch import Tensor


def expand_time(t: Tensor | float, x: Tensor) -> Tensor:
    """Broadcast a time (float, shape () or (B,)) against a batch x of shape (B, *event_shape)."""
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    if t.ndim == 0:
        t = t.expand(x.shape[0])
    return t.reshape(-1, *([1] * (x.ndim - 1)))


def batch_time(t: Tensor | float, x: Tensor) -> Tensor:
    """Time as a (B,) tensor matching the batch of x."""
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    return t.expand(x.shape[0]) if t.ndim == 0 else t


def interpolate(x0: Tensor, x1: Tensor, t: Tensor | float) -> Tensor:
    """x_t = t x1 + (1 - t) x0."""
    t = expand_time(t, x0)
    return t * x1 + (1 - t) * x0


def conditional_velocity(x0: Tensor, x1: Tensor) -> Tensor:
    """The regression target of flow matching: d x_t / dt = x1 - x0."""
    return x1 - x0


def x_hat_1(x: Tensor, t: Tensor | float, v: Tensor) -> Tensor:
    """One-step clean prediction x̂1 = x + (1 - t) v."""
    return x + (1 - expand_time(t, x)) * v


def score_from_velocity(x: Tensor, t: Tensor | float, v: Tensor) -> Tensor:
    """∇ log p_t(x) = -(x - t v) / (1 - t)   (undefined at t = 1)."""
    t = expand_time(t, x)
    return -(x - t * v) / (1 - t)


def velocity_from_score(x: Tensor, t: Tensor | float, score: Tensor) -> Tensor:
    """v = (x + (1 - t) ∇ log p_t) / t   (undefined at t = 0)."""
    t = expand_time(t, x)
    return (x + (1 - t) * score) / t


def memoryless_sigma(t: Tensor | float, offset: float = 0.0, scale: float = 1.0) -> Tensor:
    """Memoryless noise of the linear path, σ(t) = c·sqrt(2(1 - t + h) / (t + h)).

    c = ``scale`` (1 is Adjoint Matching's schedule; any c > 0 still forgets X0, theory §3.4);
    h = ``offset`` avoids σ(0) = ∞ for Euler–Maruyama (theory §3.2). The exponential integrator needs no offset.
    A Python float is computed in float64.
    """
    t = t if torch.is_tensor(t) else torch.as_tensor(t, dtype=torch.float64)
    return scale * torch.sqrt(2 * (1 - t + offset) / (t + offset))
