"""A reward that counts its work: how many samples it scored, and at how many a gradient could flow back (the bench's
"∇r evaluations", counted rather than assumed)."""

from __future__ import annotations

import torch
from torch import Tensor

from flowlite.rewards.base import Reward


class CountingReward(Reward):
    """Wraps a reward and counts the samples it scores, and those where a gradient can flow back to x
    (``x.requires_grad`` under grad mode: reward backprop, adjoint terminal conditions, value-gradient inits)."""

    def __init__(self, reward):
        super().__init__()
        self.inner = reward
        self.evaluations = 0
        self.gradient_evaluations = 0

    def forward(self, x: Tensor, cond=None) -> Tensor:
        self.evaluations += x.shape[0]
        if torch.is_grad_enabled() and x.requires_grad:
            self.gradient_evaluations += x.shape[0]
        return self.inner(x, cond)

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("inner"), name)
