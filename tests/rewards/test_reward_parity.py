"""Reward parity: each reward's differentiable torch path (preprocessing in torch, so gradients reach the pixels)
scores fixed images as the reference preprocessing path does (transformers' ``CLIPImageProcessor`` on 8-bit images
for the CLIP rewards; open_clip's letterbox on PIL for HPSv2's), at 512² and 1024²: max |Δr| within 2 % of the spread
of the scores over the images. Tiny random weights, saved and loaded back through ``from_pretrained``."""

import numpy as np
import pytest
import torch

import flowlite.rewards.clip as clip_module
from flowlite.rewards.registry import image_reward

REWARDS = ("aesthetic", "pickscore", "clipscore")
PROMPTS = ["a photo of a cat", "a red square", "a cat", "a dog"]


def fixed_images(size: int, n: int = 4, seed: int = 0) -> torch.Tensor:
    """Smooth images (bilinear from 12x12), quantised to 8 bits so both paths see the same pixels."""
    coarse = torch.rand(n, 3, 12, 12, generator=torch.Generator().manual_seed(seed))
    images = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    return (images * 255).round() / 255


def processor_preprocess(size: int):
    """The reference: CLIPImageProcessor (PIL bicubic resize of the short side, centre crop, normalise)."""
    from transformers import CLIPImageProcessor

    processor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})

    def preprocess(images, _size):
        arrays = [(im.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8) for im in images]
        return processor(images=arrays, return_tensors="pt")["pixel_values"].to(images.dtype)

    return preprocess


@pytest.fixture(scope="module")
def rewards(tmp_path_factory):
    loaded = {}
    for name in REWARDS:
        folder = tmp_path_factory.mktemp(name)
        image_reward(name, tiny=True, seed=0).save_pretrained(folder)
        loaded[name] = image_reward(name, pretrained=folder)
    return loaded


@pytest.mark.parametrize("size", [512, 1024])
@pytest.mark.parametrize("name", REWARDS)
def test_torch_path_scores_as_the_reference_preprocessing(rewards, monkeypatch, name, size):
    reward = rewards[name]
    images = fixed_images(size)
    with torch.no_grad():
        ours = reward(images, PROMPTS)
        monkeypatch.setattr(clip_module, "clip_preprocess", processor_preprocess(reward.image_size))
        theirs = reward(images, PROMPTS)
    spread = theirs.std().item()
    error = (ours - theirs).abs().max().item()
    print(f"{name} at {size}²: max |Δr| = {error:.3g}, spread of r over the images {spread:.3g}")
    assert spread > 0 and error < 0.02 * spread, (error, spread)  # measured: at most 0.8 % (clipscore, 512²)


@pytest.mark.parametrize("shape", [(512, 512), (1024, 1024), (512, 1024)])
def test_letterbox_matches_the_reference_resize_at_full_size(shape):
    from tests.fidelity.test_defects import _pil_letterbox

    images = torch.nn.functional.interpolate(torch.rand(1, 3, 12, 12, generator=torch.Generator().manual_seed(1)),
                                             size=shape, mode="bilinear", align_corners=False)
    images = (images * 255).round() / 255
    ours = clip_module.letterbox_preprocess(images, 224)
    theirs = torch.from_numpy(_pil_letterbox((images[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8),
                                             224)).float()[None]
    error = ((ours - theirs) * torch.tensor(clip_module.CLIP_STD).reshape(1, 3, 1, 1)).abs()
    print(f"letterbox {shape}: mean |Δpixel| {error.mean():.3g}, max {error.max():.3g}")
    assert error.mean() < 5e-3 and error.max() < 0.03
