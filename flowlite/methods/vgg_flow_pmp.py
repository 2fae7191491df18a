"""VGG-Flow-PMP (theory §6.9): the deterministic lean adjoint along the ODE, regressed like Adjoint Matching."""

from __future__ import annotations

import torch
from torch import Tensor

from flowlite.methods.adjoint_matching import AdjointMatching


class VGGFlowPMP(AdjointMatching):
    """VGG-Flow-PMP, the deterministic co-state variant (theory §6.9, App. A.2 "deterministic adjoint matching"):
    sample the current model's *ODE*, solve the lean adjoint backwards along it (a_K = -β∇r(X_1),
    a_k = a_{k+1} + h J_{v_base}ᵀ a_{k+1}: ``lean_adjoint`` with σ ≡ 0), and regress ‖Δv + a‖².

    Its fixed point is Δv* = -β∇V of the deterministic control problem — VGG-Flow's optimum, not the KL tilt
    (theory §6.10) — so it cross-checks VGG-Flow with a second estimator of the same target.
    """

    name = "vgg-flow-pmp"
    optimum = "deterministic-control"

    def __init__(self, model, reward, beta: float, **kw):
        kw["schedule"], kw["weighting"] = "ode", "velocity"
        super().__init__(model, reward, beta, **kw)

    def adjoint_weight(self, sigma: Tensor, gain: Tensor) -> Tensor:
        return torch.ones_like(sigma)
