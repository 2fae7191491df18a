"""Exponential moving average of parameters (theory §11.1: EMA of the weights tames heavy-tailed adjoints).

θ_ema ← d_i θ_ema + (1 - d_i) θ with the warm-up decay d_i = min(decay, (1 + i)/(10 + i)).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn


class EMA:
    """Shadow copies of a module's trainable parameters; ``average_parameters()`` swaps them in temporarily."""

    def __init__(self, module: nn.Module, decay: float = 0.998):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.params = [p for p in module.parameters() if p.requires_grad]
        self.shadow = [p.detach().clone() for p in self.params]
        self.updates = 0

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self) -> None:
        d = self.current_decay()
        for s, p in zip(self.shadow, self.params):
            s.lerp_(p.detach(), 1 - d)
        self.updates += 1

    @contextmanager
    def average_parameters(self):
        """Use the averaged weights inside the block (evaluation, sampling, saving a final model)."""
        backup = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            for p, s in zip(self.params, self.shadow):
                p.copy_(s)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, b in zip(self.params, backup):
                    p.copy_(b)

    @torch.no_grad()
    def copy_to_model(self) -> None:
        """Make the averaged weights the model's weights, for good."""
        for p, s in zip(self.params, self.shadow):
            p.copy_(s)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "shadow": [s.clone() for s in self.shadow]}

    def load_state_dict(self, state: dict) -> None:
        self.decay, self.updates = state["decay"], state["updates"]
        for s, saved in zip(self.shadow, state["shadow"]):
            s.copy_(saved)
