"""Sinusoidal features of time, shared by the small networks of every world (toy MLPs, latent conv nets)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class SinusoidalTimeEmbedding(nn.Module):
    """t ∈ [0, 1] -> [sin(2π f t), cos(2π f t)] for geometrically spaced frequencies f ∈ [1, max_frequency]."""

    def __init__(self, dim: int = 32, max_frequency: float = 64.0):
        super().__init__()
        if dim % 2:
            raise ValueError(f"time embedding dim must be even, got {dim}")
        freqs = torch.exp(torch.linspace(0.0, math.log(max_frequency), dim // 2))
        self.register_buffer("freqs", freqs)

    def forward(self, t: Tensor) -> Tensor:
        angles = 2 * math.pi * t.reshape(-1, 1) * self.freqs.to(t.dtype)
        return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)
