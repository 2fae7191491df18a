"""Evaluation of an SD3 fine-tuning run on held-out prompts with fixed seeds (theory §6.8, §10).

For every held-out prompt p and seed s the image is the plain Euler ODE on the scheduler's grid from
x0 = randn(1, C, h, w, generator=manual_seed(s)) -- exactly what ``StableDiffusion3Pipeline`` draws for one image
with that generator, so ``python -m flowlite sd3-sample`` reproduces it. Scalars:

* ``eval_reward`` ± ``eval_reward_sem``: mean and standard error of the reward over all P·S images;
* ``eval_diversity``: variance of the normalised CLIP image embeddings across the S seeds of a prompt (summed
  over dimensions, averaged over prompts) -- the papers' CLIP-feature diversity;
* ``eval_prior_distance``: mean ‖ê_θ - ê_base‖ between the fine-tuned and the base model's images from the same
  prompt and seed -- prior preservation (0 at the start; the papers use per-prompt FID, which needs many images).

Each evaluation also writes a grid (prompts × seeds) and the single images as PNG.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from flowlite.solvers import sample_ode


def to_uint8(images: Tensor) -> np.ndarray:
    """(B, 3, H, W) in [0, 1] -> (B, H, W, 3) uint8, rounded as diffusers' ``numpy_to_pil`` does."""
    return (images.detach().float().cpu().permute(0, 2, 3, 1).numpy() * 255).round().astype("uint8")


def save_png(image: np.ndarray, path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)


def image_grid(images: np.ndarray, rows: int) -> np.ndarray:
    """(rows·cols, H, W, 3) -> one (rows·H, cols·W, 3) image, row-major."""
    n, h, w, c = images.shape
    cols = n // rows
    return images.reshape(rows, cols, h, w, c).transpose(0, 2, 1, 3, 4).reshape(rows * h, cols * w, c)


def image_name(prompt_index: int, seed: int) -> str:
    return f"prompt{prompt_index:02d}_seed{seed}.png"


class Evaluator:
    """``evaluator(step) -> {name: float}`` on the current weights of ``flow`` (the training loop's callback).

    Args:
        flow: the ``SD3Flow`` being trained; reward: a ``LatentReward`` whose image reward is CLIP-based (its
            ``image_embedding`` gives the diversity and prior-preservation features).
        cache: the ``PromptCache`` holding the held-out prompts; grid: the sampling grid in paper time.
        out_dir: where grids and images go (None: write nothing).
    """

    def __init__(self, flow, reward, cache, prompts: list[str], seeds: list[int], grid: Tensor,
                 out_dir: str | Path | None = None):
        self.flow, self.reward, self.cache = flow, reward, cache
        self.prompts, self.seeds, self.grid = list(prompts), list(seeds), grid
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.base_features: Tensor | None = None

    def initial_noise(self) -> Tensor:
        return torch.cat([self.flow.sample_prior(1, generator=torch.Generator().manual_seed(s)) for s in self.seeds])

    @torch.no_grad()
    def sample(self, use_base: bool = False) -> tuple[Tensor, Tensor]:
        """Latents (P·S, C, h, w) and rewards (P·S,), prompt-major, with the fine-tuned or the base model."""
        field = self.flow.base_velocity if use_base else self.flow.velocity
        latents, rewards = [], []
        for prompt in self.prompts:
            cond = self.cache([prompt]).for_batch(len(self.seeds))
            x1 = sample_ode(field, self.initial_noise(), grid=self.grid, method="euler", cond=cond)
            latents.append(x1)
            rewards.append(self.reward(x1, cond).float())
        return torch.cat(latents), torch.cat(rewards)

    @torch.no_grad()
    def features(self, images: Tensor) -> Tensor:
        return self.reward.image_reward.image_embedding(images).float()

    def _write(self, name: str, images: Tensor) -> None:
        if self.out_dir is None:
            return
        pixels = to_uint8(images)
        save_png(image_grid(pixels, len(self.prompts)), self.out_dir / f"{name}.png")
        for i, image in enumerate(pixels):
            p, s = divmod(i, len(self.seeds))
            save_png(image, self.out_dir / name / image_name(p, self.seeds[s]))

    @torch.no_grad()
    def evaluate(self, name: str, use_base: bool = False) -> dict:
        latents, rewards = self.sample(use_base)
        images = self.reward.decode(latents)
        features = self.features(images)
        if use_base:
            self.base_features = features
        n = rewards.numel()
        metrics = {"eval_reward": rewards.mean().item(),
                   "eval_reward_sem": (rewards.std().item() / n**0.5) if n > 1 else 0.0}
        per_prompt = features.reshape(len(self.prompts), len(self.seeds), -1)
        if len(self.seeds) > 1:
            metrics["eval_diversity"] = per_prompt.var(dim=1).sum(-1).mean().item()
        if self.base_features is not None:
            metrics["eval_prior_distance"] = (features - self.base_features).norm(dim=-1).mean().item()
        self._write(name, images)
        return metrics

    def __call__(self, step: int) -> dict:
        if self.base_features is None:
            self.evaluate("base", use_base=True)
        return self.evaluate(f"step_{step:07d}")
