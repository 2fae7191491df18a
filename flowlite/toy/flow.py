"""The 2-D world behind the ``FlowModel`` seam: a frozen base (the exact mixture velocity or a trained MLP) plus a
trainable residual that starts at zero (theory §9.3)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from flowlite.flows import FlowModel
from flowlite.toy.exact_velocity import ExactMixtureVelocity  # noqa: F401 (re-exported: the base of ToyFlow)
from flowlite.toy.nets import Critic, MLPVelocity


def default_residual(dim: int = 2) -> MLPVelocity:
    """The trainable residual of a ToyFlow: 4 layers of width 256, smooth time features, zero output layer.

    Measured (bench/RESULTS.md): regressing the exact Δv* = v* - v_base of ``reweight`` directly, 4 × 256 leaves 0.7 %
    relative error, 4 × 128 1.3 % at 3.6× less CPU per step, 3 × 128 3.5 %. Pass ``MLPVelocity(2, width=128, …)`` as
    the residual for the faster Adjoint Matching iteration; the notebooks' AC-Flow sweeps were tuned on this one.
    """
    return MLPVelocity(dim, width=256, depth=4, time_dim=16, max_frequency=4.0, zero_init=True)


class ToyFlow(FlowModel):
    """v_θ = v_base + residual_θ, with v_base frozen (an MLP or the exact mixture velocity) and a residual
    whose output layer starts at zero, so the fine-tuned model starts exactly at the base."""

    def __init__(self, base: nn.Module, residual: nn.Module | None = None, dim: int = 2):
        super().__init__()
        self.event_shape = (dim,)
        self.base = base.requires_grad_(False).eval()
        self.residual = residual if residual is not None else default_residual(dim)
        self.register_buffer("_device_anchor", torch.zeros(()), persistent=False)

    def base_velocity(self, x: Tensor, t: Tensor | float, cond=None) -> Tensor:
        return self.base(x, t)

    def velocity(self, x: Tensor, t: Tensor | float, cond=None) -> Tensor:
        return self.base(x, t) + self.residual(x, t)

    def velocity_change(self, x: Tensor, t: Tensor | float, cond=None) -> Tensor:
        return self.residual(x, t)

    def sample_prior(self, n: int, cond=None, generator: torch.Generator | None = None) -> Tensor:
        return torch.randn(n, *self.event_shape, generator=generator).to(self._device_anchor.device)

    def make_critic(self, cond=None) -> Critic:
        """AC-Flow's critic for 2-D states: an MLP with LayerNorm (theory §7.4)."""
        return Critic(self.event_shape[0])

    def make_value_correction(self, cond=None) -> MLPVelocity:
        """VGG-Flow's correction ν_φ: a 3 × 128 MLP with smooth time features whose output starts at zero."""
        return MLPVelocity(self.event_shape[0], width=128, depth=3, time_dim=16, max_frequency=4.0, zero_init=True)

    def train(self, mode: bool = True) -> "ToyFlow":
        super().train(mode)
        self.base.eval()
        return self
