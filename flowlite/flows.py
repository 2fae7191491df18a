"""The model seam: ``FlowModel``, what every method may ask of a model (theory §1.4).

A method calls ``velocity``, ``base_velocity``, ``trainable_parameters`` and ``sample_prior``, and asks the model for
the value networks sized for it (``make_critic``, ``make_value_correction``): ``flowlite.toy.ToyFlow`` answers with
small MLPs, ``flowlite.sd3.SD3Flow`` with small conv nets on latents. Methods therefore run unchanged on both.
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch import Tensor, nn



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

    def velocity_change(self, x: Tensor, t: Tensor | float, cond=None) -> Tensor:
        """Δv = v_θ - v_base, differentiable in θ only (the control's velocity, theory §5). A model built as
        v_base + residual returns the residual alone and saves two base evaluations."""
        with torch.no_grad():
            base = self.base_velocity(x, t, cond)
        return self.velocity(x, t, cond) - base

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        return (p for p in self.parameters() if p.requires_grad)

    def sample_prior(self, n: int, cond=None, generator: torch.Generator | None = None) -> Tensor:
        """x0 ~ N(0, I), shape (n, *event_shape), on the model's device."""
        device = next(iter(self.buffers()), next(self.parameters())).device
        return torch.randn(n, *self.event_shape, generator=generator).to(device)

    # ------------------------------------------------------------------ value networks sized for this model
    def make_critic(self, cond=None) -> nn.Module:
        """A fresh critic V_φ(x, t, cond) -> (B,) for states of this model (AC-Flow, theory §7.4).
        ``cond``: an example of the conditioning, so the network can size its text input."""
        raise NotImplementedError(f"{type(self).__name__} provides no critic; pass critic= to the method")

    def make_value_correction(self, cond=None) -> nn.Module:
        """A fresh correction ν_φ(x, t, cond) -> same shape as x whose output starts at zero (VGG-Flow's value
        gradient, theory §6.3)."""
        raise NotImplementedError(f"{type(self).__name__} provides no value correction; pass value_gradient= "
                                  "to the method")
