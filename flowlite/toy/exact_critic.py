"""The exact critic of the 2-D problems: E_base[r(X1) | X_t = x] in closed form (theory §9.3), the reference a learned
AC-Flow critic is checked against."""

from __future__ import annotations

from torch import Tensor

from flowlite.toy.gmm import GaussianMixture
from flowlite.toy.rewards import LinearReward, QuadraticReward


def exact_critic(base: GaussianMixture, reward, x: Tensor, t: Tensor | float) -> Tensor:
    """E_base[r(X1) | X_t = x] under the linear path, in closed form (theory §9.3 posterior):
    a mixture with weights w_k, means m_k, covariances C_k, so for r = -½(x - m)ᵀA(x - m) + c
        E[r] = Σ_k w_k [ -½ (m_k - m)ᵀA(m_k - m) - ½ tr(A C_k) ] + c,     and for r = bᵀx + c: Σ_k w_k bᵀm_k + c.
    This is also the value a critic learns by Monte-Carlo regression on *memoryless*-SDE trajectories, whose
    (X_t, X_1) has the path's joint law; on ODE trajectories the critic learns r(Φ_{t→1}(x)) instead."""
    dt = base.means.dtype
    w, means, covs = base.posterior(x.to(dt), t)
    if isinstance(reward, QuadraticReward):
        A, m = reward.A.to(dt), reward.m.to(dt)
        diff = means - m
        quad = ((diff @ A) * diff).sum(-1)
        trace = (A * covs).sum((-1, -2))  # tr(A C_k), A symmetric
        value = (w * (-0.5 * (quad + trace))).sum(-1) + reward.c
    elif isinstance(reward, LinearReward):
        value = (w * (means @ reward.b.to(dt))).sum(-1) + reward.c
    else:
        raise ValueError(f"no closed-form critic for {type(reward).__name__}; accepted: quadratic, linear")
    return value.to(x.dtype)
