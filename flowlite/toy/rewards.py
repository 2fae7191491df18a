"""Differentiable 2-D rewards; quadratic and linear ones tilt a Gaussian mixture in closed form (theory §9.2)."""

from __future__ import annotations

import torch
from torch import Tensor

from flowlite.toy.gmm import GaussianMixture
from flowlite.rewards.base import Reward


class ToyReward(Reward):
    """A reward on R^d that knows whether exp(β r) tilts a Gaussian mixture in closed form."""

    has_closed_form_tilt: bool = False

    def tilt(self, mixture: GaussianMixture, beta: float) -> GaussianMixture:
        raise NotImplementedError(
            f"{type(self).__name__} has no closed-form tilt; accepted rewards for exact targets: quadratic, linear"
        )

    def to_dict(self) -> dict:  # pragma: no cover - interface
        raise NotImplementedError


class QuadraticReward(ToyReward):
    """r(x) = -½ (x - m)ᵀ A (x - m) + c, with A symmetric positive semi-definite."""

    has_closed_form_tilt = True

    def __init__(self, A, m, c: float = 0.0):
        super().__init__()
        A = torch.as_tensor(A, dtype=torch.get_default_dtype())
        m = torch.as_tensor(m, dtype=torch.get_default_dtype())
        if A.ndim != 2 or A.shape[0] != A.shape[1] or m.shape != (A.shape[0],):
            raise ValueError(f"quadratic reward needs A of shape (d, d) and m of shape (d,), got {tuple(A.shape)} "
                             f"and {tuple(m.shape)}")
        if not torch.allclose(A, A.T) or (torch.linalg.eigvalsh(A) < -1e-9).any():
            raise ValueError("quadratic reward needs a symmetric positive semi-definite A")
        self.register_buffer("A", A)
        self.register_buffer("m", m)
        self.c = float(c)

    def forward(self, x: Tensor, cond=None) -> Tensor:
        diff = x - self.m.to(x.dtype)
        return -0.5 * ((diff @ self.A.to(x.dtype)) * diff).sum(-1) + self.c

    def tilt(self, mixture: GaussianMixture, beta: float) -> GaussianMixture:
        return mixture.tilt_quadratic(self.A, self.m, beta)

    def to_dict(self) -> dict:
        return {"type": "quadratic", "A": self.A.tolist(), "m": self.m.tolist(), "c": self.c}


class LinearReward(ToyReward):
    """r(x) = bᵀx + c."""

    has_closed_form_tilt = True

    def __init__(self, b, c: float = 0.0):
        super().__init__()
        b = torch.as_tensor(b, dtype=torch.get_default_dtype())
        if b.ndim != 1:
            raise ValueError(f"linear reward needs b of shape (d,), got {tuple(b.shape)}")
        self.register_buffer("b", b)
        self.c = float(c)

    def forward(self, x: Tensor, cond=None) -> Tensor:
        return x @ self.b.to(x.dtype) + self.c

    def tilt(self, mixture: GaussianMixture, beta: float) -> GaussianMixture:
        return mixture.tilt_linear(self.b, beta)

    def to_dict(self) -> dict:
        return {"type": "linear", "b": self.b.tolist(), "c": self.c}


class MixtureLogDensityReward(ToyReward):
    """r(x) = log q(x) for a Gaussian mixture q: rewards closeness to q's modes. No closed-form tilt
    (exp(β log q) = q^β is not a mixture unless β = 1 and q has one component)."""

    def __init__(self, mixture: GaussianMixture):
        super().__init__()
        self.mixture = mixture

    def forward(self, x: Tensor, cond=None) -> Tensor:
        return self.mixture.log_prob(x).to(x.dtype)

    def to_dict(self) -> dict:
        return {"type": "mixture_log_density", "mixture": self.mixture.to_dict()}


REWARD_TYPES = ("quadratic", "linear", "mixture_log_density")


def reward_from_dict(d: dict) -> ToyReward:
    """Build a toy reward from its JSON description; raises ValueError naming the accepted types."""
    kind = d.get("type")
    try:
        if kind == "quadratic":
            return QuadraticReward(d["A"], d["m"], d.get("c", 0.0))
        if kind == "linear":
            return LinearReward(d["b"], d.get("c", 0.0))
        if kind == "mixture_log_density":
            return MixtureLogDensityReward(GaussianMixture.from_dict(d["mixture"]))
    except KeyError as err:
        raise ValueError(f"reward of type {kind!r} is missing the field {err.args[0]!r}") from None
    raise ValueError(f"unknown reward type {kind!r}; accepted: {', '.join(REWARD_TYPES)}")
