"""Value functions on intermediate states: AC-Flow's critic V_φ(x, t, c) and the exact critic of the 2-D
problems (spec §5, §8.3). VGG-Flow's value-gradient field joins here with its issue.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from flowlite.gmm import GaussianMixture
from flowlite.nets import SinusoidalTimeEmbedding
from flowlite.paths import batch_time
from flowlite.rewards.toy import LinearReward, QuadraticReward


class Critic(nn.Module):
    """V_φ(x, t) -> (B,): an MLP with LayerNorm on [x, emb(t)] (spec §5.2: "MLP layers with LayerNorm").

    Conditioning is ignored here (toys); the SD3 issue gives it an image-sized counterpart behind the same call.
    """

    def __init__(self, dim: int = 2, width: int = 128, depth: int = 3, time_dim: int = 16,
                 max_frequency: float = 4.0):
        super().__init__()
        self.time_embedding = SinusoidalTimeEmbedding(time_dim, max_frequency)
        layers: list[nn.Module] = []
        fan_in = dim + time_dim
        for _ in range(depth - 1):
            layers += [nn.Linear(fan_in, width), nn.LayerNorm(width), nn.SiLU()]
            fan_in = width
        self.hidden = nn.Sequential(*layers)
        self.out = nn.Linear(fan_in, 1)

    def forward(self, x: Tensor, t: Tensor | float, cond=None) -> Tensor:
        t = batch_time(t, x)
        h = torch.cat([x.reshape(x.shape[0], -1), self.time_embedding(t)], dim=-1)
        return self.out(self.hidden(h)).squeeze(-1)


def exact_critic(base: GaussianMixture, reward, x: Tensor, t: Tensor | float) -> Tensor:
    """E_base[r(X1) | X_t = x] under the linear path, in closed form (spec §8.3 posterior):
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
