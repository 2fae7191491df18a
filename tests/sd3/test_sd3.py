"""SD3Flow on a tiny random SD3 (theory §12.1–4): the σ ↔ t convention against diffusers' own pipeline, CFG
gradients, the loader, prompt caching, the VAE round trip, LoRA files that diffusers loads back exactly, bad input."""

import copy
import json

import pytest
import torch

from flowlite.errors import FlowliteError
from flowlite.finetune import finetune
from flowlite.methods import ReFL
from flowlite.rewards.image import AestheticReward
from flowlite.sd3.vae import LatentReward
from flowlite.sd3 import (PromptCache, PromptEmbeddings, SD3Flow, decode_latents, encode_images, load_sd3,
                          pipeline_grid)
from flowlite.sd3.lora import load_lora, save_lora
from flowlite.sd3.tiny import build_tiny_sd3
from flowlite.solvers import solve_ode

PROMPTS = ["a photo of a cat", "a red square"]
GUIDANCE, STEPS, MAX_SEQ = 5.0, 4, 32


def fresh(folder, **kw):
    pipe = load_sd3(folder, device="cpu", **kw)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def pipeline_latents(pipe, prompts=PROMPTS, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return pipe(prompts, num_inference_steps=STEPS, guidance_scale=GUIDANCE, generator=gen, output_type="latent",
                max_sequence_length=MAX_SEQ).images


def euler_latents(flow, pipe, cond, seed=0, field=None):
    x0 = flow.sample_prior(len(cond), cond, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return solve_ode(field or flow.velocity, x0, grid=pipeline_grid(pipe.scheduler, STEPS), cond=cond,
                         store=False).final


def test_euler_over_paper_time_velocity_reproduces_the_pipeline(tiny_sd3_folder):
    pipe = fresh(tiny_sd3_folder)
    expected = pipeline_latents(pipe)
    cond = PromptCache(pipe, max_sequence_length=MAX_SEQ)(PROMPTS)
    flow = SD3Flow.from_pipeline(pipe, guidance_scale=GUIDANCE)
    grid = pipeline_grid(pipe.scheduler, STEPS)
    assert grid[0] == 0 and grid[-1] == 1 and (grid.diff() > 0).all()  # paper time, noise -> data
    for field in (flow.velocity, flow.base_velocity):  # the gaussian LoRA init starts exactly at the base
        error = (euler_latents(flow, pipe, cond, field=field) - expected).abs().max().item()
        assert error < 1e-5, error


def test_velocity_is_minus_the_sd3_prediction_at_timestep_1000_sigma(tiny_sd3_folder):
    pipe = fresh(tiny_sd3_folder)
    cond = PromptCache(pipe, max_sequence_length=MAX_SEQ)(PROMPTS[:1])
    flow = SD3Flow.from_pipeline(pipe, guidance_scale=1.0)  # no CFG: the bare conversion
    x, t = torch.randn(1, *flow.event_shape), 0.3
    with torch.no_grad():
        w = pipe.transformer(hidden_states=x, timestep=torch.tensor([700.0]), encoder_hidden_states=cond.prompt_embeds,
                             pooled_projections=cond.pooled, return_dict=False)[0]
        assert torch.allclose(flow.velocity(x, t, cond), -w, atol=1e-6)


def test_cfg_gradient_flows_through_the_conditional_branch_only(tiny_sd3_folder):
    pipe = fresh(tiny_sd3_folder)
    cond = PromptCache(pipe, max_sequence_length=MAX_SEQ)(PROMPTS)
    flow = SD3Flow.from_pipeline(pipe, guidance_scale=GUIDANCE)
    with torch.no_grad():  # move the LoRA off zero so its gradients are not trivially sparse
        for p in flow.trainable_parameters():
            p.add_(0.05 * torch.randn_like(p))
    x, t = torch.randn(2, *flow.event_shape), torch.tensor([0.2, 0.7])
    params = list(flow.trainable_parameters())
    grads = torch.autograd.grad(flow.velocity(x, t, cond).sum(), params)
    w_c = flow._model_output(x, t, cond.prompt_embeds, cond.pooled)
    expected = torch.autograd.grad((-GUIDANCE * w_c).sum(), params)
    assert max((a - b).abs().max().item() for a, b in zip(grads, expected)) < 1e-5
    base_params = [p for n, p in flow.transformer.named_parameters() if "lora_" not in n]
    assert not any(p.requires_grad for p in base_params)


def test_base_velocity_disables_the_adapter_and_keeps_trainable_flags(tiny_sd3_folder):
    pipe = fresh(tiny_sd3_folder)
    cond = PromptCache(pipe, max_sequence_length=MAX_SEQ)(PROMPTS)
    flow = SD3Flow.from_pipeline(pipe)
    x, t = torch.randn(2, *flow.event_shape), 0.5
    with torch.no_grad():
        before = flow.base_velocity(x, t, cond)
        for p in flow.trainable_parameters():
            p.add_(0.1 * torch.randn_like(p))
        assert torch.equal(flow.base_velocity(x, t, cond), before)
        assert (flow.velocity(x, t, cond) - before).abs().max() > 1e-3
    assert all(p.requires_grad for p in flow.trainable_parameters())
    # 2 blocks x 4 projections (LORA_TARGETS) x (A: 4x32 + B: 32x4), rank 4 (theory §12.2)
    assert sum(p.numel() for p in flow.trainable_parameters()) == 2 * 4 * (4 * 32 + 32 * 4)
    second = SD3Flow(flow.transformer, flow.event_shape, adapter_name="second")  # a new adapter is the active one
    with torch.no_grad():
        assert torch.equal(second.velocity(x, t, cond), before)
    assert all(".second." in n for n, p in second.transformer.named_parameters() if p.requires_grad)


def test_loader_reads_the_saved_folder_and_a_folder_without_t5(tiny_sd3_folder, tmp_path):
    pipe = fresh(tiny_sd3_folder)
    assert not any(m.training for m in pipe.components.values() if isinstance(m, torch.nn.Module))
    assert torch.equal(pipeline_latents(pipe), pipeline_latents(fresh(tiny_sd3_folder)))  # deterministic: eval mode
    no_t5 = fresh(tiny_sd3_folder, drop_t5=True)
    assert no_t5.text_encoder_3 is None
    no_t5.save_pretrained(tmp_path / "no_t5")
    assert json.loads((tmp_path / "no_t5" / "model_index.json").read_text())["text_encoder_3"][0] is None
    assert fresh(tmp_path / "no_t5").text_encoder_3 is None  # reloads without the [null, null] pitfall


def test_prompt_cache_encodes_once_and_outlives_the_text_encoders(tiny_sd3_folder):
    pipe = fresh(tiny_sd3_folder)
    cache = PromptCache(pipe, max_sequence_length=MAX_SEQ)
    first = cache(PROMPTS)
    assert first.prompt_embeds.shape == (2, 77 + MAX_SEQ, 32) and first.pooled.shape == (2, 64)
    cache.free_text_encoders()
    again = cache(list(reversed(PROMPTS)))
    assert torch.equal(again.prompt_embeds[0], first.prompt_embeds[1])
    assert isinstance(first.repeat_batch(3), PromptEmbeddings) and len(first.repeat_batch(3)) == 6
    assert first.for_batch(4).prompts == PROMPTS * 2
    with pytest.raises(FlowliteError, match="not cached"):
        cache(["a new prompt"])
    with pytest.raises(FlowliteError, match="multiple"):
        first.for_batch(3)


def test_vae_decode_and_encode_use_sd3_shift_and_scaling(tiny_sd3_folder):
    pipe = fresh(tiny_sd3_folder)
    z = torch.randn(1, 16, 16, 16)
    images = decode_latents(pipe.vae, z)
    assert images.shape == (1, 3, 32, 32) and images.min() >= 0 and images.max() <= 1
    expected = pipe.image_processor.postprocess(
        pipe.vae.decode(z / pipe.vae.config.scaling_factor + pipe.vae.config.shift_factor).sample, output_type="pt")
    assert torch.allclose(images, expected, atol=1e-6)
    latents = encode_images(pipe.vae, images, generator=torch.Generator().manual_seed(0))
    assert latents.shape == z.shape


@pytest.mark.parametrize("rank,alpha", [(4, 4), (4, 8)])
def test_lora_trained_two_steps_loads_into_a_fresh_pipeline_exactly(tiny_sd3_folder, tmp_path, rank, alpha):
    pipe = fresh(tiny_sd3_folder)
    cond = PromptCache(pipe, max_sequence_length=MAX_SEQ)(PROMPTS)
    flow = SD3Flow.from_pipeline(pipe, guidance_scale=GUIDANCE, rank=rank, alpha=alpha)
    reward = LatentReward(pipe.vae, AestheticReward.tiny(0))
    method = ReFL(flow, reward, batch_size=2, grid=pipeline_grid(pipe.scheduler, STEPS), cond=cond)
    before = [p.detach().clone() for p in flow.trainable_parameters()]
    finetune(method, 2, lr=3e-2, progress=False)
    assert any(not torch.equal(a, b) for a, b in zip(before, flow.trainable_parameters()))
    trained = pipeline_latents(pipe)  # pipe.transformer carries the trained adapter
    assert (trained - pipeline_latents(fresh(tiny_sd3_folder))).abs().max() > 1e-4  # the LoRA changed the output

    save_lora(flow, tmp_path / "lora")
    other = fresh(tiny_sd3_folder)
    other.load_lora_weights(tmp_path / "lora")
    assert torch.equal(pipeline_latents(other), trained)
    assert (euler_latents(flow, pipe, cond) - trained).abs().max() < 1e-5

    resumed = SD3Flow.from_pipeline(fresh(tiny_sd3_folder), guidance_scale=GUIDANCE, rank=rank, alpha=alpha)
    load_lora(resumed, tmp_path / "lora")
    assert all(torch.equal(a, b) for a, b in zip(resumed.trainable_parameters(), flow.trainable_parameters()))


def test_bad_input_gets_one_clear_error(tiny_sd3_folder, tmp_path):
    with pytest.raises(FlowliteError, match="not found"):
        load_sd3(tmp_path / "missing", device="cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FlowliteError, match="model_index.json"):
        load_sd3(tmp_path / "empty", device="cpu")
    pipe = fresh(tiny_sd3_folder)
    with pytest.raises(FlowliteError, match="empty"):
        PromptCache(pipe)([])
    with pytest.raises(FlowliteError, match="prompt 1 is 12000000 characters long"):  # refused before tokenizing
        PromptCache(pipe)(["a cat", "a" * 12_000_000])
    with pytest.raises(FlowliteError, match="multiples of 4"):
        SD3Flow.from_pipeline(copy.deepcopy(pipe), height=30, width=32)
    with pytest.raises(FlowliteError, match="no LoRA weights"):
        load_lora(SD3Flow.from_pipeline(pipe), tmp_path / "empty")
    with pytest.raises(FlowliteError, match="PromptEmbeddings"):
        SD3Flow.from_pipeline(fresh(tiny_sd3_folder)).velocity(torch.randn(1, 16, 16, 16), 0.5, None)


def test_bf16_pipeline_keeps_fp32_lora_and_fp32_velocities(tiny_sd3_folder, tmp_path):
    pipe = fresh(tiny_sd3_folder, dtype=torch.bfloat16)
    cond = PromptCache(pipe, max_sequence_length=MAX_SEQ)(PROMPTS)
    flow = SD3Flow.from_pipeline(pipe, guidance_scale=GUIDANCE)
    assert pipe.transformer.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in flow.trainable_parameters())  # master weights
    with torch.no_grad():
        for p in flow.trainable_parameters():
            p.add_(0.05 * torch.randn_like(p))
    v = flow.velocity(torch.randn(2, *flow.event_shape), 0.5, cond)
    assert v.dtype == torch.float32 and torch.isfinite(v).all()
    save_lora(flow, tmp_path / "lora")
    other = fresh(tiny_sd3_folder, dtype=torch.bfloat16)
    other.load_lora_weights(tmp_path / "lora")
    ours, theirs = pipeline_latents(pipe).float(), pipeline_latents(other).float()
    assert (ours - theirs).abs().max() / theirs.abs().max() < 2e-2  # bf16: about 3 significant digits
