"""Rewards on SD3 latents: decode with the frozen VAE, then score the image (spec §1.2: r(decode(x1))).

``LatentReward(vae, image_reward)(z, cond) = image_reward(decode(z), cond)``, with decode = VAE in fp32 followed by
the clamp to [0, 1]; the whole chain is differentiable, so ∇_z r reaches the latents (Adjoint Matching's terminal
adjoint, VGG-Flow's value-gradient initialisation, ReFL/DRaFT's loss).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from flowlite.rewards.base import Reward
from flowlite.sd3 import decode_latents


class LatentReward(Reward):
    """Decode latents (fp32), score images. The VAE is moved to fp32 in place and frozen; both stay in eval mode."""

    def __init__(self, vae: nn.Module, image_reward: nn.Module):
        super().__init__()
        self.vae = (vae if vae.dtype == torch.float32 else vae.to(torch.float32)).eval().requires_grad_(False)
        self.image_reward = image_reward.eval()

    def decode(self, latents: Tensor) -> Tensor:
        """Images in [0, 1] from latents, in fp32."""
        return decode_latents(self.vae, latents.float())

    def forward(self, x: Tensor, cond=None) -> Tensor:
        return self.image_reward(self.decode(x), cond)

    def train(self, mode: bool = True) -> "LatentReward":
        """Frozen: stays in eval mode whatever its owner does."""
        return super().train(False)
