"""CLIP as image rewards use it: preprocessing in torch (so gradients reach the pixels), a frozen ``CLIPModel`` with
its loading from a hub id or folder, and a tiny random CLIP for tests (theory §12.4)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowlite.errors import FlowliteError
from flowlite.hub import check_pretrained
from flowlite.rewards.base import Reward

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _check_images(images: Tensor) -> None:
    if images.ndim != 4 or images.shape[1] != 3:
        raise FlowliteError(f"image rewards take images of shape (B, 3, H, W) in [0, 1], got {tuple(images.shape)}")


def clip_normalize(x: Tensor) -> Tensor:
    """(x - mean) / std with CLIP's (OpenAI's) channel statistics."""
    mean = torch.tensor(CLIP_MEAN, dtype=x.dtype, device=x.device).reshape(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=x.dtype, device=x.device).reshape(1, 3, 1, 1)
    return (x - mean) / std


def clip_preprocess(images: Tensor, size: int = 224) -> Tensor:
    """CLIP's preprocessing in torch: short side to ``size`` (bicubic, antialiased), centre crop, normalise."""
    _check_images(images)
    h, w = images.shape[-2:]
    scale = size / min(h, w)
    new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
    x = F.interpolate(images, size=(new_h, new_w), mode="bicubic", align_corners=False, antialias=True)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return clip_normalize(x[..., top:top + size, left:left + size])


def letterbox_preprocess(images: Tensor, size: int = 224) -> Tensor:
    """HPSv2's evaluation preprocessing (open_clip's ``ResizeMaxSize``): the long side to ``size`` (bicubic,
    antialiased), the short side padded with black to a centred square, then CLIP's normalisation. For square
    images it equals :func:`clip_preprocess`; for others nothing is cropped away."""
    _check_images(images)
    h, w = images.shape[-2:]
    scale = size / max(h, w)
    new_h, new_w = round(h * scale), round(w * scale)
    x = F.interpolate(images, size=(new_h, new_w), mode="bicubic", align_corners=False, antialias=True)
    pad_h, pad_w = size - new_h, size - new_w
    x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2), value=0.0)
    return clip_normalize(x)


def check_tokenizer(tokenizer, vocab_size: int, source: str, what: str) -> None:
    """Refuse a tokenizer whose vocabulary cannot be the text model's: transformers returns a 2-token tokenizer for a
    folder without tokenizer files, and every prompt then gets the same text embedding. Plausible: at least half of
    the text model's embedding table, and no more tokens than it has rows."""
    size = len(tokenizer)
    if not vocab_size / 2 <= size <= vocab_size:
        raise FlowliteError(f"the {what} tokenizer loaded from {source!r} has {size} tokens, but the text model has "
                            f"{vocab_size}: the folder has no (or the wrong) tokenizer files. Pass the tokenizer's "
                            "hub id or folder with --reward-tokenizer (tokenizer= in Python), e.g. "
                            "laion/CLIP-ViT-H-14-laion2B-s32B-b79K for PickScore")


def projected_embedding(out) -> Tensor:
    """transformers 5 returns an output object (projected embedding in ``pooler_output``); 4.x a tensor."""
    return out if torch.is_tensor(out) else out.pooler_output


def tiny_clip(seed: int = 0, image_size: int = 64, projection_dim: int = 16):
    """A random ``CLIPModel`` whose text side fits the offline byte tokenizer (theory §12.4), frozen, eval mode."""
    from transformers import CLIPConfig, CLIPModel, CLIPVisionConfig

    from flowlite.text import tiny_clip_text_config

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
        emb = projected_embedding(self.clip.get_image_features(pixel_values=pixels.to(dtype))).float()
        return F.normalize(emb, dim=-1)

    def train(self, mode: bool = True) -> "CLIPImageReward":
        """A reward is frozen: it stays in eval mode (the aesthetic head has dropout) whatever its owner does."""
        return super().train(False)

    @classmethod
    def _load_clip(cls, pretrained, what: str, tokenizer_from=None):
        from transformers import CLIPModel, CLIPTokenizer

        source = check_pretrained(pretrained, what)
        clip = CLIPModel.from_pretrained(source)
        tokenizer = None
        if tokenizer_from is not False:
            tokenizer_source = check_pretrained(tokenizer_from or source, what + " tokenizer")
            tokenizer = CLIPTokenizer.from_pretrained(tokenizer_source)
            check_tokenizer(tokenizer, clip.config.text_config.vocab_size, tokenizer_source, what)
        return clip, tokenizer

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write the CLIP model (and tokenizer) so that ``from_pretrained(directory)`` loads them back."""
        directory = Path(directory)
        self.clip.save_pretrained(directory)
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(directory)
        return directory
