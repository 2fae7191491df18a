"""SD3's VAE: latents ↔ images, and rewards on latents: decode with the frozen VAE, then score the image
(theory §1.2: r(decode(x1))).

``LatentReward(vae, image_reward)(z, cond) = image_reward(decode(z), cond)``, with decode = VAE in fp32 followed by
the clamp to [0, 1]; the whole chain is differentiable, so ∇_z r reaches the latents (Adjoint Matching's terminal
adjoint, VGG-Flow's value-gradient initialisation, ReFL/DRaFT's loss).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from flowlite.rewards.base import Reward


def decode_latents(vae: nn.Module, latents: Tensor) -> Tensor:
    """Images in [0, 1], (B, 3, H, W): vae.decode(z / scaling + shift) mapped from [-1, 1] and clamped (theory §1.2).
    Differentiable; computed in the VAE's dtype and returned in the latents' dtype."""
    z = latents.to(vae.dtype) / vae.config.scaling_factor + vae.config.shift_factor
    images = vae.decode(z, return_dict=False)[0]
    return (images / 2 + 0.5).clamp(0, 1).to(latents.dtype)


def encode_images(vae: nn.Module, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Latents z = (sample of vae.encode(2·img - 1) - shift) · scaling, from images in [0, 1]."""
    dist = vae.encode((2 * images - 1).to(vae.dtype)).latent_dist
    return ((dist.sample(generator) - vae.config.shift_factor) * vae.config.scaling_factor).to(images.dtype)


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
