"""Optional rewards whose packages flowlite does not pin (they pull torchvision and timm): HPSv2.1 and ImageReward.

Importing this module is free; building a reward without its package raises one FlowliteError that says what to
install. Not run in flowlite's CI (the packages are absent there): treat it as a thin, documented adapter.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from flowlite.errors import FlowliteError
from flowlite.rewards.base import Reward
from flowlite.rewards.clip import clip_preprocess, letterbox_preprocess
from flowlite.text import prompts_for_batch

MISSING = {
    "hpsv2": "HPSv2 needs the optional package hpsv2 (pip install hpsv2; it pulls torchvision, timm and an old "
             "protobuf, which flowlite does not pin). It is not installed.",
    "imagereward": "ImageReward needs the optional package image-reward (pip install image-reward; it pulls "
                   "torchvision, timm and fairscale, which flowlite does not pin). It is not installed.",
}


class HPSv2Reward(Reward):
    """r(x, prompt) = cos(ê_image, ê_text) of HPSv2's open_clip ViT-H-14 (theory §6.6: HPSv2.1, raw score ≈ 0.2–0.35).

    ``checkpoint``: a local ``HPS_v2.1_compressed.pt`` (read with ``weights_only=True``); ``clip_pretrained``: the
    open_clip tag or local file of the ViT-H-14 it starts from. Preprocessing is the reference's letterbox (long side
    to 224 px, black padding: :func:`~flowlite.rewards.clip.letterbox_preprocess`) in torch, so gradients reach the
    image.
    """

    def __init__(self, checkpoint: str | Path, clip_pretrained: str = "laion2B-s32B-b79K"):
        super().__init__()
        try:
            from hpsv2.src.open_clip import create_model_and_transforms, get_tokenizer
        except ImportError:
            raise FlowliteError(MISSING["hpsv2"]) from None
        if not Path(checkpoint).is_file():
            raise FlowliteError(f"HPSv2 checkpoint {str(checkpoint)!r} not found; pass HPS_v2.1_compressed.pt")
        model = create_model_and_transforms("ViT-H-14", clip_pretrained, precision="fp32", device="cpu", jit=False,
                                            output_dict=True)[0]
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        model.load_state_dict(state.get("state_dict", state))
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = get_tokenizer("ViT-H-14")

    def forward(self, x: Tensor, cond=None) -> Tensor:
        image = F.normalize(self.model.encode_image(letterbox_preprocess(x.float(), 224)).float(), dim=-1)
        tokens = self.tokenizer(prompts_for_batch(cond, x.shape[0])).to(x.device)
        with torch.no_grad():
            text = F.normalize(self.model.encode_text(tokens).float(), dim=-1)
        return (image * text).sum(-1)

    def train(self, mode: bool = True) -> "HPSv2Reward":
        return super().train(False)


class ImageRewardModel(Reward):
    """r(x, prompt) = ImageReward-v1.0's standardised score (BLIP ViT-L image encoder, BERT text encoder crossing the
    image, MLP head, then (r - mean) / std as its ``score_gard``). Preprocessing as its reference: short side to 224
    (bicubic), centre crop, CLIP normalisation, done in torch so gradients reach the image.

    ``checkpoint``: a local ``ImageReward.pt`` (or the package's name ``ImageReward-v1.0``, which it downloads);
    ``med_config``: its ``med_config.json`` (downloaded by the package when None).
    """

    def __init__(self, checkpoint: str | Path = "ImageReward-v1.0", med_config: str | Path | None = None):
        super().__init__()
        try:
            import ImageReward as image_reward_package
        except ImportError:
            raise FlowliteError(MISSING["imagereward"]) from None
        self.model = image_reward_package.load(str(checkpoint), device="cpu",
                                               med_config=None if med_config is None else str(med_config))
        self.model.eval().requires_grad_(False)

    def forward(self, x: Tensor, cond=None) -> Tensor:
        tokens = self.model.blip.tokenizer(prompts_for_batch(cond, x.shape[0]), padding="max_length", truncation=True,
                                           max_length=35, return_tensors="pt").to(x.device)
        score = self.model.score_gard(tokens.input_ids, tokens.attention_mask, clip_preprocess(x.float(), 224))
        return score.reshape(-1).float()

    def train(self, mode: bool = True) -> "ImageRewardModel":
        return super().train(False)


def optional_reward(name: str, pretrained: str | Path | None = None, **kw) -> Reward:
    """``hpsv2`` (``pretrained`` = the HPSv2.1 checkpoint file) or ``imagereward`` (``pretrained`` = its checkpoint,
    default the package's ``ImageReward-v1.0``); a clear FlowliteError when the package is missing."""
    if name == "hpsv2":
        if pretrained is None:
            try:
                import hpsv2  # noqa: F401
            except ImportError:
                raise FlowliteError(MISSING["hpsv2"]) from None
            raise FlowliteError("hpsv2 needs pretrained= a local HPS_v2.1_compressed.pt checkpoint")
        return HPSv2Reward(pretrained, **kw)
    return ImageRewardModel(pretrained or "ImageReward-v1.0", **kw)
