"""The seven defects a user with real weights would hit (issue "Beyond SD3"), each checked against an outcome: a
tokenizer with an implausible vocabulary refused, the transformer's timestep kept fp32, μ from the pipeline's own
rule, LoRA alpha tensors for ComfyUI, the aesthetic head checked before any download, the dry run without text
encoders, HPSv2's letterbox and ImageReward's wrapper."""

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from flowlite.errors import FlowliteError
from flowlite.rewards import clip as clip_module
from flowlite.rewards.clip import CLIP_MEAN, CLIP_STD, clip_preprocess
from flowlite.rewards.image import AestheticReward, PickScore
from flowlite.rewards.registry import image_reward
from flowlite.sd3 import PromptCache, SD3Flow, build_tiny_sd3, pipeline_grid
from flowlite.sd3 import lora as lora_module


def test_a_reward_folder_without_tokenizer_files_is_refused_naming_the_flag(tmp_path):
    reward = PickScore.tiny(seed=0)
    reward.clip.save_pretrained(tmp_path / "model")  # no tokenizer files: transformers would return 2 tokens
    with pytest.raises(FlowliteError, match="--reward-tokenizer"):
        image_reward("pickscore", pretrained=tmp_path / "model")
    reward.tokenizer.save_pretrained(tmp_path / "tok")
    loaded = image_reward("pickscore", pretrained=tmp_path / "model", tokenizer=tmp_path / "tok")
    emb = loaded.text_embedding(["a cat", "a dog"])
    assert (emb[0] @ emb[1]).item() < 0.999  # different prompts, different text embeddings


def test_the_transformer_timestep_stays_fp32_in_the_bf16_path():
    pipe = build_tiny_sd3(seed=0)
    cond = PromptCache(pipe, max_sequence_length=32)(["a cat"])
    pipe.transformer.to(torch.bfloat16)
    flow = SD3Flow.from_pipeline(pipe, guidance_scale=1.0)
    seen = []
    pipe.transformer.register_forward_pre_hook(lambda m, a, kw: seen.append(kw["timestep"]), with_kwargs=True)
    t = torch.tensor([1 - 0.987])  # 1000·σ = 987 is not a bf16 number (984 and 988 are)
    with torch.no_grad():
        flow.velocity(torch.randn(1, *flow.event_shape), t, cond)
    assert seen[0].dtype == torch.float32 and abs(seen[0].item() - 987.0) < 1e-3


def test_dynamic_shifting_grid_uses_the_pipelines_mu():
    from diffusers import FlowMatchEulerDiscreteScheduler

    pipe = build_tiny_sd3(seed=0)
    pipe.scheduler = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_image_seq_len=16,
                                                     max_image_seq_len=256, base_shift=0.5, max_shift=1.16)
    flow = SD3Flow.from_pipeline(pipe, height=48, width=32)
    pipe(["a cat"], num_inference_steps=3, height=48, width=32, guidance_scale=1.0, output_type="latent",
         max_sequence_length=32)
    expected = 1 - pipe.scheduler.sigmas.double()
    with pytest.raises(FlowliteError, match="image_seq_len"):
        pipeline_grid(pipe.scheduler, 3)
    grid = pipeline_grid(pipe.scheduler, 3, flow.image_seq_len)
    assert flow.image_seq_len == 12 * 8
    assert torch.allclose(grid, expected, atol=1e-6), (grid, expected)


def test_comfyui_file_carries_alpha_tensors_that_give_the_adapters_scale(tmp_path):
    pipe = build_tiny_sd3(seed=0)
    flow = SD3Flow.from_pipeline(pipe, rank=4, alpha=2.0, init_lora_weights=False)
    for p in flow.trainable_parameters():
        torch.nn.init.normal_(p, std=0.1)
    lora_module.save_lora(flow, tmp_path, comfyui=True)
    state = load_file(str(tmp_path / "lora_comfyui.safetensors"))
    diffusers_keys = set(load_file(str(tmp_path / "pytorch_lora_weights.safetensors")))
    alphas = {k: v for k, v in state.items() if k.endswith(".alpha")}
    assert set(state) - set(alphas) == diffusers_keys and len(alphas) == len(diffusers_keys) // 2
    # ComfyUI's rule: delta W = (alpha / rank) B A, checked against peft's own merged weight
    layer = pipe.transformer.transformer_blocks[0].attn.to_q
    key = "transformer.transformer_blocks.0.attn.to_q"
    a, b, alpha = state[f"{key}.lora_A.weight"], state[f"{key}.lora_B.weight"], state[f"{key}.alpha"]
    delta = (alpha / a.shape[0]) * b @ a
    assert torch.allclose(delta, layer.get_delta_weight("default"), atol=1e-6)
    assert alpha.item() == 2.0


def test_aesthetic_head_is_checked_before_clip_is_loaded(tmp_path, monkeypatch):
    import transformers

    def no_download(*a, **k):
        raise AssertionError("CLIP loaded before the head file was checked")

    monkeypatch.setattr(transformers.CLIPModel, "from_pretrained", no_download)
    with pytest.raises(FlowliteError, match="aesthetic head file"):
        AestheticReward.from_pretrained("openai/clip-vit-large-patch14")
    with pytest.raises(FlowliteError, match="aesthetic head file"):
        AestheticReward.from_pretrained(tmp_path, head=tmp_path / "missing.pth")


def test_dry_run_frees_the_text_encoders_before_its_steps(tmp_path, monkeypatch):
    import flowlite.train
    from flowlite.jobs.image_job import dry_run
    from flowlite.jobs.image_settings import resolve_config

    (tmp_path / "p.txt").write_text("cat\ndog\n")
    real_train, seen = flowlite.train.train, []

    def spy(method, *a, **k):
        seen.append(PromptCache.free_text_encoders.calls)
        return real_train(method, *a, **k)

    original = PromptCache.free_text_encoders

    def counting(self):
        PromptCache.free_text_encoders.calls += 1
        original(self)

    counting.calls = 0
    monkeypatch.setattr(PromptCache, "free_text_encoders", counting)
    monkeypatch.setattr(flowlite.train, "train", spy)
    config = resolve_config({"method": "draft", "reward": "aesthetic", "prompts": str(tmp_path / "p.txt"),
                             "eval_prompts": str(tmp_path / "p.txt"), "tiny": True, "solver_steps": 2,
                             "eval_steps": 2, "output": str(tmp_path / "run")})
    dry_run(config)
    assert seen == [1]


def _pil_letterbox(image: np.ndarray, size: int) -> np.ndarray:
    """open_clip's ResizeMaxSize on a PIL image (long side to size, bicubic; black padding, centred), then the
    CLIP normalisation: the reference HPSv2 evaluates with."""
    pil = Image.fromarray(image)
    w, h = pil.size
    scale = size / max(h, w)
    new_h, new_w = round(h * scale), round(w * scale)
    pil = pil.resize((new_w, new_h), Image.BICUBIC)
    canvas = Image.new("RGB", (size, size), (0, 0, 0))
    canvas.paste(pil, ((size - new_w) // 2, (size - new_h) // 2))
    x = np.asarray(canvas).astype(np.float32) / 255
    return ((x - np.array(CLIP_MEAN)) / np.array(CLIP_STD)).transpose(2, 0, 1)


def test_hpsv2_letterbox_matches_the_reference_resize_and_keeps_the_whole_image():
    gen = torch.Generator().manual_seed(0)
    images = torch.nn.functional.interpolate(torch.rand(1, 3, 6, 9, generator=gen), size=(256, 384),
                                             mode="bilinear", align_corners=False)
    ours = clip_module.letterbox_preprocess(images, 224)
    array = (images[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    theirs = torch.from_numpy(_pil_letterbox(array, 224)).float()[None]
    std = torch.tensor(CLIP_STD).reshape(1, 3, 1, 1)
    error = ((ours - theirs) * std).abs()
    assert error.mean() < 5e-3 and error.max() < 0.05, (error.mean(), error.max())
    assert not torch.allclose(ours, clip_preprocess(images, 224), atol=0.1)  # the crop would cut the sides
    square = images[..., :256, :256]
    assert torch.allclose(clip_module.letterbox_preprocess(square, 224), clip_preprocess(square, 224), atol=1e-6)


@pytest.mark.parametrize("name", ["imagereward", "hpsv2"])
def test_optional_rewards_say_what_to_install(name):
    import importlib.util

    package = {"imagereward": "ImageReward", "hpsv2": "hpsv2"}[name]
    if importlib.util.find_spec(package) is not None:
        pytest.skip(f"{package} is installed here")
    with pytest.raises(FlowliteError, match="pip install"):
        image_reward(name, pretrained="checkpoint.pt" if name == "imagereward" else None)


def test_optional_rewards_are_selectable_in_the_job_and_need_a_beta(tmp_path):
    from flowlite.jobs.image_settings import resolve_config

    base = {"method": "adjoint-matching", "prompts": "p.txt", "pretrained": "owner/model"}
    with pytest.raises(FlowliteError, match="--beta"):
        resolve_config({**base, "reward": "hpsv2"})
    assert resolve_config({**base, "reward": "imagereward", "beta": 10.0})["reward"] == "imagereward"
    assert resolve_config({**base, "method": "draft", "reward": "hpsv2"})["beta"] is None
    with pytest.raises(FlowliteError, match="no tiny"):
        resolve_config({**base, "reward": "hpsv2", "beta": 1.0, "tiny": True})


def test_the_job_writes_the_comfyui_file_with_comfyui(tmp_path):
    from flowlite.jobs.cli import main

    (tmp_path / "p.txt").write_text("cat\n")
    out = tmp_path / "run"
    assert main(["sd3", "--tiny", "--method", "draft", "--reward", "aesthetic", "--prompts", str(tmp_path / "p.txt"),
                 "--eval-prompts", str(tmp_path / "p.txt"), "--output", str(out), "--solver-steps", "2",
                 "--eval-steps", "2", "--train-steps", "1", "--quiet", "--comfyui"]) == 0
    state = load_file(str(out / "lora" / "lora_comfyui.safetensors"))
    alphas = [v.item() for k, v in state.items() if k.endswith(".alpha")]
    assert alphas and set(alphas) == {4.0}  # --tiny's rank 4, alpha = rank
