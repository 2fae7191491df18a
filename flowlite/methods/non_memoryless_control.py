"""The non-memoryless negative control (theory §3.4, §8): Adjoint Matching's regression with a noise schedule that
keeps memory of X0."""

from __future__ import annotations

from flowlite.methods.adjoint_matching import AdjointMatching
from flowlite.schedules import EulerMaruyama


class NonMemorylessControl(AdjointMatching):
    """The negative control of theory §2/§10.2: the same lean-adjoint regression with a noise schedule that keeps
    memory of X0 (constant σ, Euler–Maruyama). Its fixed point is value-function biased: it under-tilts."""

    name = "non-memoryless-control"
    optimum = "biased"

    def __init__(self, model, reward, beta: float, sigma: float = 0.5, **kw):
        kw.setdefault("schedule", EulerMaruyama.constant(sigma))
        super().__init__(model, reward, beta, **kw)
