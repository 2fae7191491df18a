"""Image rewards: torch preprocessing that matches CLIP's processor, gradients that reach the latents, tiny models
loaded through the same from_pretrained path as real ones, and one clear error for bad input."""

import importlib.util

import numpy as np
import pytest
import torch

from flowlite.errors import FlowliteError
from flowlite.rewards.base import reward_gradient
from flowlite.rewards.clip import clip_preprocess
from flowlite.rewards.image import AestheticReward, CLIPScore, PickScore
from flowlite.rewards.registry import image_reward
from flowlite.sd3.vae import LatentReward
from flowlite.sd3 import PromptCache

REWARDS = {"aesthetic": AestheticReward, "pickscore": PickScore, "clipscore": CLIPScore}
from tests.helpers import TINY_PROMPTS as PROMPTS


def smooth_images(n=2, size=48, seed=0):
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 6, 6, generator=gen)
    return torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)


def test_torch_preprocessing_matches_clip_image_processor():
    from transformers import CLIPImageProcessor

    images = smooth_images(n=1, size=64)
    ours = clip_preprocess(images, 224)
    array = (images[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    theirs = CLIPImageProcessor()(images=[array], return_tensors="pt")["pixel_values"]
    assert ours.shape == theirs.shape == (1, 3, 224, 224)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).reshape(1, 3, 1, 1)
    pixel_error = ((ours - theirs) * std).abs()  # back in [0, 1] pixel units: PIL vs torch bicubic, uint8 rounding
    assert pixel_error.mean() < 5e-3, pixel_error.mean()


@pytest.mark.parametrize("name", sorted(REWARDS))
def test_reward_gradient_reaches_the_latents(tiny_sd3, name):
    pipe, cond = tiny_sd3
    reward = LatentReward(pipe.vae, image_reward(name, tiny=True))
    latents = torch.randn(2, 16, 8, 8, generator=torch.Generator().manual_seed(1))
    r, grad = reward_gradient(reward, latents, cond)
    assert r.shape == (2,) and torch.isfinite(r).all()
    assert grad.shape == latents.shape and torch.isfinite(grad).all() and grad.abs().max() > 0
    # the stacked batches methods build (n·B states, B prompts) are scored prompt by prompt
    assert torch.allclose(reward(latents.repeat(2, 1, 1, 1), cond), r.repeat(2), atol=1e-5)


@pytest.mark.parametrize("name", sorted(REWARDS))
def test_tiny_reward_loads_back_through_from_pretrained(tmp_path, name):
    reward = REWARDS[name].tiny(seed=0)
    reward.save_pretrained(tmp_path)
    loaded = image_reward(name, pretrained=tmp_path)
    assert type(loaded) is REWARDS[name]
    images = smooth_images()
    with torch.no_grad():
        assert torch.equal(loaded(images, PROMPTS), reward(images, PROMPTS))


def test_aesthetic_head_loads_from_a_laion_style_pth_state_dict(tmp_path):
    reward = AestheticReward.tiny(seed=0)
    reward.clip.save_pretrained(tmp_path / "clip")
    torch.save(reward.head.state_dict(), tmp_path / "head.pth")
    loaded = AestheticReward.from_pretrained(tmp_path / "clip", head=tmp_path / "head.pth")
    images = smooth_images()
    with torch.no_grad():
        assert torch.equal(loaded(images), reward(images))


def test_text_rewards_read_the_prompt_and_stay_in_eval_mode():
    reward = PickScore.tiny(seed=0)
    images = smooth_images(n=1)
    reward.train()  # a method's train() reaches its reward: it must stay frozen and deterministic
    assert not reward.training and not reward.clip.training
    with torch.no_grad():
        a, b = reward(images, "a photo of a cat"), reward(images, "a red square")
    assert not torch.equal(a, b)
    aesthetic = AestheticReward.tiny(seed=0).train()
    with torch.no_grad():
        assert torch.equal(aesthetic(images), aesthetic(images))  # the head's dropout is off


def test_bad_reward_input_gets_one_clear_error(tmp_path):
    with pytest.raises(FlowliteError, match="unknown reward 'beauty'; accepted: aesthetic, pickscore, clipscore"):
        image_reward("beauty", tiny=True)
    with pytest.raises(FlowliteError, match="not found"):
        image_reward("aesthetic", pretrained=tmp_path / "missing")
    with pytest.raises(FlowliteError, match="aesthetic head file"):
        AestheticReward.tiny().clip.save_pretrained(tmp_path / "clip_only")
        image_reward("aesthetic", pretrained=tmp_path / "clip_only")
    with pytest.raises(FlowliteError, match=r"\(B, 3, H, W\)"):
        AestheticReward.tiny()(torch.rand(2, 16, 8, 8))
    with pytest.raises(FlowliteError, match="needs prompts"):
        PickScore.tiny()(smooth_images(), None)
    for name, module in (("hpsv2", "hpsv2"), ("imagereward", "ImageReward")):
        if importlib.util.find_spec(module) is None:
            with pytest.raises(FlowliteError, match="optional package"):
                image_reward(name)
