"""Value networks sized for latents, the image counterparts of the 2-D MLPs in ``flowlite.toy.nets``; ``SD3Flow``
hands them to the methods that ask (``make_critic``, ``make_value_correction``).

* :class:`LatentCritic`: AC-Flow's V_φ(x, t, c) -> (B,) (theory §7.4): a small conv net on the latents, with the time
  embedding and (when ``cond`` is given) the pooled text embedding added to its features.
* :class:`LatentCorrection`: VGG-Flow's correction ν_φ(x, t[, c]) -> same shape as x (theory §6.3), a small conv net
  whose output layer starts at zero, so the value gradient starts at the heuristic -η_t ∇r(x̂1).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from flowlite.time_embedding import SinusoidalTimeEmbedding
from flowlite.paths import batch_time


def _groups(width: int) -> int:
    return 8 if width % 8 == 0 else 1


class _LatentTrunk(nn.Module):
    """conv -> [+ time/text features] -> conv blocks; returns (B, width, h, w) features."""

    def __init__(self, channels: int, width: int, depth: int, time_dim: int, pooled_dim: int | None):
        super().__init__()
        self.time_embedding = SinusoidalTimeEmbedding(time_dim, max_frequency=8.0)
        self.stem = nn.Conv2d(channels, width, 3, padding=1)
        self.time_proj = nn.Linear(time_dim, width)
        self.text_proj = nn.Linear(pooled_dim, width) if pooled_dim else None
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.GroupNorm(_groups(width), width), nn.SiLU(), nn.Conv2d(width, width, 3, padding=1))
            for _ in range(depth))

    def forward(self, x: Tensor, t: Tensor | float, cond=None) -> Tensor:
        t = batch_time(t, x)
        h = self.stem(x)
        extra = self.time_proj(self.time_embedding(t).to(h.dtype))
        if self.text_proj is not None and cond is not None:
            extra = extra + self.text_proj(cond.for_batch(x.shape[0]).pooled.to(h.dtype))
        h = h + extra[:, :, None, None]
        for block in self.blocks:
            h = h + block(h)
        return h


class LatentCritic(nn.Module):
    """V_φ(x, t, c) -> (B,) on latents (C, h, w): conv trunk, global average pool, linear head.

    ``cond`` (PromptEmbeddings) adds the pooled text embedding when ``pooled_dim`` is set; without it the critic is
    prompt-agnostic (fine for one prompt per run)."""

    def __init__(self, channels: int = 16, width: int = 32, depth: int = 2, time_dim: int = 32,
                 pooled_dim: int | None = None):
        super().__init__()
        self.trunk = _LatentTrunk(channels, width, depth, time_dim, pooled_dim)
        self.out = nn.Sequential(nn.SiLU(), nn.Linear(width, 1))

    def forward(self, x: Tensor, t: Tensor | float, cond=None) -> Tensor:
        h = self.trunk(x.float(), t, cond)
        return self.out(h.mean(dim=(-2, -1))).squeeze(-1)


class LatentCorrection(nn.Module):
    """ν_φ(x, t[, c]) -> same shape as x, zero at initialisation (zero output conv)."""

    def __init__(self, channels: int = 16, width: int = 32, depth: int = 2, time_dim: int = 32,
                 pooled_dim: int | None = None):
        super().__init__()
        self.trunk = _LatentTrunk(channels, width, depth, time_dim, pooled_dim)
        self.out = nn.Conv2d(width, channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor, t: Tensor | float, cond=None) -> Tensor:
        return self.out(nn.functional.silu(self.trunk(x.float(), t, cond))).to(x.dtype)
