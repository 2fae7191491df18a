"""Differentiable image rewards on transformers' ``CLIPModel`` (theory §6.6; theory §12.4).

Images are (B, 3, H, W) in [0, 1]; preprocessing (bicubic resize of the short side, centre crop, CLIP mean/std) is
done in torch so gradients reach the pixels, and through ``LatentReward`` the latents.

* ``AestheticReward``: LAION's improved aesthetic predictor, r = MLP(ê), ê the L2-normalised CLIP image embedding
  (ViT-L/14, MLP 768-1024-128-64-16-1).
* ``PickScore``: r = exp(logit_scale)·cos(ê_image, ê_text) (``yuvalkirstain/PickScore_v1``; typical 21–23).
* ``CLIPScore``: r = 100·max(cos(ê_image, ê_text), 0).
* ``Brightness``: the mean pixel value, a reward with an obvious optimum for the CPU notebook.

Each loads real weights with ``from_pretrained(hub id or folder)`` and has ``tiny(seed)``, random weights of the same
structure; ``save_pretrained`` writes a folder that ``from_pretrained`` reads back. HPSv2 and ImageReward need
packages that pull torchvision: they live in ``rewards/extras.py``, and ``registry.image_reward`` says how to install
them when missing.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowlite.errors import FlowliteError
from flowlite.rewards.base import Reward
from flowlite.rewards.clip import CLIPImageReward, projected_embedding, tiny_clip
from flowlite.text import prompts_for_batch, tiny_clip_tokenizer

HEAD_FILE = "aesthetic_head.safetensors"


class AestheticHead(nn.Module):
    """LAION's improved aesthetic MLP, d-1024-128-64-16-1 with dropout; state-dict names match its released file."""

    def __init__(self, dim: int = 768):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(dim, 1024), nn.Dropout(0.2), nn.Linear(1024, 128), nn.Dropout(0.2),
                                    nn.Linear(128, 64), nn.Dropout(0.1), nn.Linear(64, 16), nn.Linear(16, 1))

    def forward(self, embedding: Tensor) -> Tensor:
        return self.layers(embedding).squeeze(-1)


class AestheticReward(CLIPImageReward):
    """r(x) = MLP(ê(x)), LAION's aesthetic predictor on a CLIP ViT-L/14 (``openai/clip-vit-large-patch14``)."""

    def __init__(self, clip: nn.Module, head: AestheticHead | None = None):
        super().__init__(clip)
        self.head = (head or AestheticHead(clip.config.projection_dim)).requires_grad_(False)
        self.eval()

    def forward(self, x: Tensor, cond=None) -> Tensor:
        return self.head(self.image_embedding(x))

    @classmethod
    def from_pretrained(cls, clip: str | Path = "openai/clip-vit-large-patch14",
                        head: str | Path | None = None) -> "AestheticReward":
        """CLIP from a hub id or folder; head from a ``.safetensors`` or LAION's ``.pth`` state dict (loaded with
        ``weights_only=True``), by default ``aesthetic_head.safetensors`` inside the CLIP folder."""
        head_path = Path(head) if head is not None else Path(clip) / HEAD_FILE
        if not head_path.is_file():  # checked before CLIP is loaded: a hub id would download ~1.7 GB first
            raise FlowliteError(f"aesthetic head file {str(head_path)!r} not found; pass head= (--reward-head) the "
                                "LAION MLP (sac+logos+ava1-l14-linearMSE.pth) or a .safetensors state dict")
        model, _ = cls._load_clip(clip, "aesthetic CLIP", tokenizer_from=False)
        if head_path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(head_path))
        else:
            state = torch.load(head_path, map_location="cpu", weights_only=True)
        mlp = AestheticHead(model.config.projection_dim)
        mlp.load_state_dict(state)
        return cls(model, mlp)

    def save_pretrained(self, directory: str | Path) -> Path:
        from safetensors.torch import save_file

        directory = super().save_pretrained(directory)
        save_file({k: v.contiguous() for k, v in self.head.state_dict().items()}, str(directory / HEAD_FILE))
        return directory

    @classmethod
    def tiny(cls, seed: int = 0) -> "AestheticReward":
        """Random weights, same structure (CLIP with projection 16, image size 64; the LAION MLP on 16 dims)."""
        clip = tiny_clip(seed)
        return cls(clip, AestheticHead(clip.config.projection_dim))


class PickScore(CLIPImageReward):
    """r(x, prompt) = exp(logit_scale)·cos(ê_image, ê_text); the prompt comes from ``cond`` (PromptEmbeddings,
    a string or a list of strings). Real weights: ``yuvalkirstain/PickScore_v1`` with the tokenizer of
    ``laion/CLIP-ViT-H-14-laion2B-s32B-b79K``."""

    def __init__(self, clip: nn.Module, tokenizer):
        super().__init__(clip, tokenizer)
        self._text: dict[str, Tensor] = {}

    @torch.no_grad()
    def text_embedding(self, prompts: list[str]) -> Tensor:
        """Normalised text embeddings, cached per prompt."""
        missing = list(dict.fromkeys(p for p in prompts if p not in self._text))
        if missing:
            device = next(self.clip.parameters()).device
            tokens = self.tokenizer(missing, padding=True, truncation=True, return_tensors="pt").to(device)
            emb = F.normalize(projected_embedding(self.clip.get_text_features(**tokens)).float(), dim=-1)
            self._text.update(zip(missing, emb))
        return torch.stack([self._text[p] for p in prompts])

    def similarity(self, x: Tensor, cond) -> Tensor:
        image = self.image_embedding(x)
        return (image * self.text_embedding(prompts_for_batch(cond, x.shape[0])).to(image.device)).sum(-1)

    def forward(self, x: Tensor, cond=None) -> Tensor:
        return self.clip.logit_scale.exp().float() * self.similarity(x, cond)

    @classmethod
    def from_pretrained(cls, pretrained: str | Path = "yuvalkirstain/PickScore_v1",
                        tokenizer: str | Path | None = None):
        """Model from a hub id or folder; tokenizer from ``tokenizer`` (default: the same place, except for the hub's
        PickScore_v1, which ships without one and uses its base model's)."""
        if tokenizer is None and str(pretrained) == "yuvalkirstain/PickScore_v1":
            tokenizer = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
        clip, tok = cls._load_clip(pretrained, cls.__name__, tokenizer_from=tokenizer)
        return cls(clip, tok)

    @classmethod
    def tiny(cls, seed: int = 0):
        return cls(tiny_clip(seed), tiny_clip_tokenizer())


class CLIPScore(PickScore):
    """r(x, prompt) = 100·max(cos(ê_image, ê_text), 0) (Hessel et al. 2021 with w = 100, as torchmetrics);
    real weights e.g. ``openai/clip-vit-large-patch14``."""

    def forward(self, x: Tensor, cond=None) -> Tensor:
        return 100.0 * self.similarity(x, cond).clamp_min(0.0)

    @classmethod
    def from_pretrained(cls, pretrained: str | Path = "openai/clip-vit-large-patch14",
                        tokenizer: str | Path | None = None):
        return super().from_pretrained(pretrained, tokenizer)


class Brightness(Reward):
    """r(x) = mean pixel value of images in [0, 1]: a reward with an obvious optimum, for tests and the CPU notebook
    (its gradient through the VAE is as real as any other's)."""

    def forward(self, x: Tensor, cond=None) -> Tensor:
        return x.float().mean(dim=tuple(range(1, x.ndim)))


