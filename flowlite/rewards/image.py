"""Differentiable image rewards on transformers' ``CLIPModel`` (spec §3.6; ecosystem §5).

Images are (B, 3, H, W) in [0, 1]; preprocessing (bicubic resize of the short side, centre crop, CLIP mean/std) is
done in torch so gradients reach the pixels, and through ``LatentReward`` the latents.

* ``AestheticReward``: LAION's improved aesthetic predictor, r = MLP(ê), ê the L2-normalised CLIP image embedding
  (ViT-L/14, MLP 768-1024-128-64-16-1).
* ``PickScore``: r = exp(logit_scale)·cos(ê_image, ê_text) (``yuvalkirstain/PickScore_v1``; typical 21–23).
* ``CLIPScore``: r = 100·max(cos(ê_image, ê_text), 0).
* ``Brightness``: the mean pixel value, a reward with an obvious optimum for the CPU notebook.

Each loads real weights with ``from_pretrained(hub id or folder)`` and has ``tiny(seed)``, random weights of the same
structure; ``save_pretrained`` writes a folder that ``from_pretrained`` reads back. HPSv2 and ImageReward need
packages that pull torchvision: they live in ``rewards/extras.py``, and :func:`image_reward` says how to install
them when missing.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowlite.errors import FlowliteError
from flowlite.rewards.base import Reward

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
HEAD_FILE = "aesthetic_head.safetensors"


def clip_preprocess(images: Tensor, size: int = 224) -> Tensor:
    """CLIP's preprocessing in torch: short side to ``size`` (bicubic, antialiased), centre crop, normalise."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise FlowliteError(f"image rewards take images of shape (B, 3, H, W) in [0, 1], got {tuple(images.shape)}")
    h, w = images.shape[-2:]
    scale = size / min(h, w)
    new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
    x = F.interpolate(images, size=(new_h, new_w), mode="bicubic", align_corners=False, antialias=True)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    x = x[..., top:top + size, left:left + size]
    mean = torch.tensor(CLIP_MEAN, dtype=x.dtype, device=x.device).reshape(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=x.dtype, device=x.device).reshape(1, 3, 1, 1)
    return (x - mean) / std


def _embedding(out) -> Tensor:
    """transformers 5 returns an output object (projected embedding in ``pooler_output``); 4.x a tensor."""
    return out if torch.is_tensor(out) else out.pooler_output


def tiny_clip(seed: int = 0, image_size: int = 64, projection_dim: int = 16):
    """A random ``CLIPModel`` with the offline byte tokenizer of the tiny SD3 (ecosystem §5), frozen, eval mode."""
    from transformers import CLIPConfig, CLIPModel, CLIPVisionConfig

    from flowlite.sd3_tiny import tiny_clip_text_config

    torch.manual_seed(seed)
    vision = CLIPVisionConfig(image_size=image_size, patch_size=16, hidden_size=32, intermediate_size=37,
                              num_hidden_layers=2, num_attention_heads=4)
    config = CLIPConfig(text_config=tiny_clip_text_config(projection_dim=projection_dim).to_dict(),
                        vision_config=vision.to_dict(), projection_dim=projection_dim)
    return CLIPModel(config).eval().requires_grad_(False)


class CLIPImageReward(Reward):
    """A frozen ``CLIPModel`` and its preprocessing; subclasses score the normalised image embedding."""

    def __init__(self, clip: nn.Module, tokenizer=None):
        super().__init__()
        self.clip = clip.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.image_size = clip.config.vision_config.image_size

    def image_embedding(self, images: Tensor) -> Tensor:
        """ê = normalise(CLIP image embedding), computed in fp32."""
        pixels = clip_preprocess(images.float(), self.image_size)
        dtype = next(self.clip.parameters()).dtype
        emb = _embedding(self.clip.get_image_features(pixel_values=pixels.to(dtype))).float()
        return F.normalize(emb, dim=-1)

    def train(self, mode: bool = True) -> "CLIPImageReward":
        """A reward is frozen: it stays in eval mode (the aesthetic head has dropout) whatever its owner does."""
        return super().train(False)

    @classmethod
    def _load_clip(cls, pretrained, what: str, tokenizer_from=None):
        from transformers import CLIPModel, CLIPTokenizer

        from flowlite.sd3 import check_pretrained

        source = check_pretrained(pretrained, what)
        clip = CLIPModel.from_pretrained(source)
        tokenizer = None
        if tokenizer_from is not False:
            tokenizer = CLIPTokenizer.from_pretrained(check_pretrained(tokenizer_from or source, what + " tokenizer"))
        return clip, tokenizer

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write the CLIP model (and tokenizer) so that ``from_pretrained(directory)`` loads them back."""
        directory = Path(directory)
        self.clip.save_pretrained(directory)
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(directory)
        return directory


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
        model, _ = cls._load_clip(clip, "aesthetic CLIP", tokenizer_from=False)
        head_path = Path(head) if head is not None else Path(clip) / HEAD_FILE
        if not head_path.is_file():
            raise FlowliteError(f"aesthetic head file {str(head_path)!r} not found; pass head= the LAION MLP "
                                "(sac+logos+ava1-l14-linearMSE.pth) or a .safetensors state dict")
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
            emb = F.normalize(_embedding(self.clip.get_text_features(**tokens)).float(), dim=-1)
            self._text.update(zip(missing, emb))
        return torch.stack([self._text[p] for p in prompts])

    def similarity(self, x: Tensor, cond) -> Tensor:
        from flowlite.sd3 import prompts_for_batch

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
        from flowlite.sd3_tiny import tiny_clip_tokenizer

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


# ---------------------------------------------------------------------------------------------- registry
OPTIONAL = ("hpsv2", "imagereward")
IMAGE_REWARDS = {"aesthetic": AestheticReward, "pickscore": PickScore, "clipscore": CLIPScore}


def image_reward(name: str, pretrained: str | Path | None = None, tiny: bool = False, seed: int = 0, **kw) -> Reward:
    """Build an image reward by name: ``aesthetic``, ``pickscore`` or ``clipscore`` from ``pretrained`` (hub id
    or folder; the class default when None) or, with ``tiny=True``, random weights. ``hpsv2`` (``pretrained`` = its
    checkpoint) and ``imagereward`` are optional extras (``rewards/extras.py``): a clear error says how to install
    them when they are missing."""
    key = name.lower().replace("-", "").replace("_", "")
    if key in OPTIONAL:
        from flowlite.rewards.extras import optional_reward

        if tiny:
            raise FlowliteError(f"{name} has no tiny random version; tiny rewards: {', '.join(IMAGE_REWARDS)}")
        return optional_reward(key, pretrained, **kw)
    if key not in IMAGE_REWARDS:
        raise FlowliteError(f"unknown reward {name!r}; accepted: {', '.join(IMAGE_REWARDS)} "
                            f"(optional extras: {', '.join(OPTIONAL)})")
    cls = IMAGE_REWARDS[key]
    if tiny:
        return cls.tiny(seed)
    return cls.from_pretrained(pretrained, **kw) if pretrained is not None else cls.from_pretrained(**kw)

