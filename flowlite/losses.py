"""Regression losses shared by methods (theory §1.1, §7.3): conditional flow matching on the linear path and the W2
trust region toward the frozen base.

Flow matching: E_{t ~ U[0,1], x0 ~ N(0,I), x1 ~ data} ‖v(t x1 + (1 - t) x0, t) - (x1 - x0)‖².
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from flowlite.paths import conditional_velocity, interpolate


def flow_matching_loss(velocity: Callable, x1: Tensor, x0: Tensor | None = None, t: Tensor | None = None,
                       weights: Tensor | None = None, cond=None) -> Tensor:
    """Mean (optionally per-sample weighted) squared error of v(x_t, t) against x1 - x0."""
    x0 = torch.randn_like(x1) if x0 is None else x0
    t = torch.rand(x1.shape[0], dtype=x1.dtype, device=x1.device) if t is None else t
    err = (velocity(interpolate(x0, x1, t), t, cond) - conditional_velocity(x0, x1)) ** 2
    per_sample = err.reshape(err.shape[0], -1).sum(-1)
    return per_sample.mean() if weights is None else (weights * per_sample).sum() / weights.sum()


def trust_region(model, x: Tensor, t: Tensor, cond=None) -> Tensor:
    """W2 trust region ‖v_θ(x, t) - v_ref(x, t)‖² per sample (v_ref = the frozen base; theory §7.3)."""
    with torch.no_grad():
        v_ref = model.base_velocity(x, t, cond)
    return (model.velocity(x, t, cond) - v_ref).pow(2).reshape(x.shape[0], -1).sum(-1)
