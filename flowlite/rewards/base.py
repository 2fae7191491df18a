"""The reward seam: any ``nn.Module`` with ``forward(x, cond=None) -> (B,)`` (theory §1.4)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Reward(nn.Module):
    """Base class: ``reward(x, cond)`` returns one scalar per sample, differentiable in x."""

    def forward(self, x: Tensor, cond=None) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError


def reward_gradient(reward, x: Tensor, cond=None) -> tuple[Tensor, Tensor]:
    """(r(x), ∇_x r(x)) for a batch, computed in x's dtype with a fresh leaf; no graph is kept."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        r = reward(x, cond)
        (grad,) = torch.autograd.grad(r.sum(), x)
    return r.detach(), grad
