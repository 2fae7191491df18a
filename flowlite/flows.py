"""The model seam: ``FlowModel`` (DESIGN §2) and its 2-D implementation ``ToyFlow``.

A method only ever calls ``velocity``, ``base_velocity``, ``trainable_parameters`` and ``sample_prior``;
``SD3Flow`` (sd3.py) implements the same four, so methods run unchanged on both.
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch import Tensor, nn

from flowlite.gmm import GaussianMixture
from flowlite.nets import MLPVelocity


def repeat_cond(cond, times: int):
    """Conditioning for a batch stacked ``times`` over itself (time-major): None stays None, a tensor (or a
    tuple/dict of tensors) is repeated along its batch dimension."""
    if cond is None or times == 1:
        return cond
    if torch.is_tensor(cond):
        return cond.repeat(times, *([1] * (cond.ndim - 1)))
    if isinstance(cond, (tuple, list)):
        return type(cond)(repeat_cond(c, times) for c in cond)
    if isinstance(cond, dict):
        return {k: repeat_cond(v, times) for k, v in cond.items()}
    if hasattr(cond, "repeat_batch"):
        return cond.repeat_batch(times)
    raise TypeError(f"cannot repeat conditioning of type {type(cond).__name__}; give it a repeat_batch(times) method")


class FlowModel(nn.Module):
    """Interface: a fine-tunable velocity v_θ(x, t, cond) next to a frozen base v_base(x, t, cond)."""

    event_shape: tuple[int, ...]

    def velocity(self, x: Tensor, t: Tensor | float, cond=None) -> Tensor:
        raise NotImplementedError

    def base_velocity(self, x: Tensor, t: Tensor | float, cond=None) -> Tensor:
        raise NotImplementedError

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        return (p for p in self.parameters() if p.requires_grad)

    def sample_prior(self, n: int, cond=None, generator: torch.Generator | None = None) -> Tensor:
        """x0 ~ N(0, I), shape (n, *event_shape), on the model's device."""
        device = next(iter(self.buffers()), next(self.parameters())).device
        return torch.randn(n, *self.event_shape, generator=generator).to(device)


class ExactMixtureVelocity(nn.Module):
    """The exact FM velocity of a Gaussian mixture as a module: ``forward(x, t) = mixture.velocity(x, t)``.

    Computed in float64 internally (the responsibilities are sharp near t = 1) and returned in x's dtype.
    """

    def __init__(self, mixture: GaussianMixture):
        super().__init__()
        self.mixture = mixture.to(torch.float64)

    def forward(self, x: Tensor, t: Tensor | float, cond=None) -> Tensor:
        t = torch.as_tensor(t, dtype=torch.float64)
        return self.mixture.velocity(x.to(torch.float64), t).to(x.dtype)


def default_residual(dim: int = 2) -> MLPVelocity:
    """The trainable residual of a ToyFlow: 4 layers of width 256 (a 3 × 128 net cannot fit the optimal
    Δv between modes at mid-times, even by direct regression), smooth time features, zero output layer."""
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

    def sample_prior(self, n: int, cond=None, generator: torch.Generator | None = None) -> Tensor:
        return torch.randn(n, *self.event_shape, generator=generator).to(self._device_anchor.device)

    def train(self, mode: bool = True) -> "ToyFlow":
        super().train(mode)
        self.base.eval()
        return self
