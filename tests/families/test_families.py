"""SD3.5 and FLUX.1 through the same classes as SD3 (theory §1.2, §12): for each family, Euler over the adapter's
paper-time velocity on the pipeline's own grid reproduces the diffusers pipeline's latents (SD3.5 with CFG, FLUX with
its guidance embedding), every registered method trains the LoRA and nothing else, and a saved LoRA loads into a
fresh diffusers pipeline with identical outputs. Tiny random pipelines, saved and loaded back through the loaders."""

import copy

import pytest
import torch

from flowlite.finetune import finetune
from flowlite.jobs.image_models import MODELS, infer_model
from flowlite.methods import METHODS, ReFL, build_method
from flowlite.rewards.image import AestheticReward
from flowlite.sd3 import LatentReward, method_options
from flowlite.sd3.lora import save_lora
from flowlite.solvers import solve_ode

FAMILIES = ("sd3.5", "flux")
PROMPTS = ["a photo of a cat", "a red square"]
GUIDANCE = {"sd3.5": 4.5, "flux": 3.5}
STEPS, MAX_SEQ, SIZE = 4, 32, 32


@pytest.fixture(scope="module", params=FAMILIES)
def family_folder(request, tmp_path_factory):
    family = MODELS[request.param]
    folder = tmp_path_factory.mktemp(request.param.replace(".", "_"))
    family.tiny(seed=0).save_pretrained(folder)
    return family, folder


def fresh(family, folder):
    pipe = family.load(folder, dtype=torch.float32, device="cpu")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def pipeline_latents(family, pipe, seed=0):
    out = pipe(PROMPTS, num_inference_steps=STEPS, guidance_scale=GUIDANCE[family.name], height=SIZE, width=SIZE,
               generator=torch.Generator().manual_seed(seed), output_type="latent", max_sequence_length=MAX_SEQ).images
    if family.name == "flux":  # the pipeline returns packed tokens
        from flowlite.flux import unpack_latents

        out = unpack_latents(out, SIZE // 2, SIZE // 2)
    return out


def euler_latents(flow, pipe, cond, field=None, seed=0):
    x0 = flow.sample_prior(len(cond), cond, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return solve_ode(field or flow.velocity, x0, grid=flow.pipeline_grid(pipe.scheduler, STEPS), cond=cond,
                         store=False).final


def setup(family, folder, **kw):
    pipe = fresh(family, folder)
    cond = family.prompt_cache(pipe, MAX_SEQ)(PROMPTS)
    flow = family.flow(pipe, SIZE, SIZE, guidance_scale=GUIDANCE[family.name], **kw)
    return pipe, cond, flow


def test_the_saved_folder_is_recognised_and_exercises_the_familys_paths(family_folder):
    family, folder = family_folder
    assert infer_model(folder) == family.name
    pipe = fresh(family, folder)
    if family.name == "sd3.5":
        assert pipe.transformer.config.qk_norm == "rms_norm" and pipe.transformer.config.dual_attention_layers
        clip_width = pipe.text_encoder.config.hidden_size + pipe.text_encoder_2.config.hidden_size
        assert clip_width < pipe.transformer.config.joint_attention_dim  # encode_prompt pads CLIP to T5's width
        assert pipe.vae.config.scaling_factor == 1.5305 and pipe.vae.config.shift_factor == 0.0609
    else:
        assert pipe.transformer.config.guidance_embeds and pipe.scheduler.config.use_dynamic_shifting
        assert pipe.vae.config.scaling_factor == 0.3611 and pipe.vae.config.shift_factor == 0.1159


def test_euler_over_the_adapters_velocity_reproduces_the_pipeline(family_folder):
    family, folder = family_folder
    pipe, cond, flow = setup(family, folder)
    expected = pipeline_latents(family, pipe)
    grid = flow.pipeline_grid(pipe.scheduler, STEPS)
    assert grid[0] == 0 and grid[-1] == 1 and (grid.diff() > 0).all()
    for field in (flow.velocity, flow.base_velocity):  # the gaussian LoRA init starts exactly at the base
        error = (euler_latents(flow, pipe, cond, field) - expected).abs().max().item()
        print(f"{family.name}: max |Euler - pipeline| = {error:.3g} (latents up to {expected.abs().max():.3g})")
        assert error < 1e-5, error


def test_flux_guidance_embedding_and_packing():
    from flowlite.flux import FluxFlow, pack_latents, unpack_latents

    x = torch.randn(2, 16, 6, 8)
    assert torch.equal(unpack_latents(pack_latents(x), 6, 8), x)
    assert torch.equal(pack_latents(x)[0, 1, :4], x[0, 0, 0:2, 2:4].reshape(-1))  # token 1 = patch (row 0, col 1)
    pipe = MODELS["flux"].tiny(seed=0)
    cond = MODELS["flux"].prompt_cache(pipe, MAX_SEQ)(PROMPTS[:1])
    z, t = torch.randn(1, 16, 8, 8), 0.4
    with torch.no_grad():
        v = [FluxFlow.from_pipeline(copy.deepcopy(pipe), 16, 16, guidance_scale=g).velocity(z, t, cond)
             for g in (1.0, 3.5)]
    assert (v[0] - v[1]).abs().max() > 1e-4  # the guidance scale reaches the transformer


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_trains_the_lora_and_leaves_the_base_alone(family_folder, name):
    family, folder = family_folder
    pipe = fresh(family, folder)
    cond = family.prompt_cache(pipe, MAX_SEQ)(PROMPTS)
    reward = LatentReward(pipe.vae, AestheticReward.tiny(seed=0))
    torch.manual_seed(0)
    flow = family.flow(pipe, 16, 16, guidance_scale=GUIDANCE[family.name])
    options = method_options(name, batch_size=2, solver_steps=3, grid=flow.pipeline_grid(pipe.scheduler, 3),
                             cond=cond)
    options.update({"ac-flow": {"warmup": 0}, "adjoint-matching": {"n_early": 1}}.get(name, {}))
    method, _ = build_method(name, flow, reward, beta=1.0, **options)
    params = dict(flow.transformer.named_parameters())
    base = {n: p.detach().clone() for n, p in params.items() if not p.requires_grad}
    lora = {n: p.detach().clone() for n, p in params.items() if p.requires_grad}
    extra = [p for group in method.parameter_groups()[1:] for p in group["params"]]
    extra_before = [p.detach().clone() for p in extra]
    losses = finetune(method, 2, lr=1e-2, grad_clip=None, progress=False).column("loss")
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    moved = sum(not torch.equal(params[n], b) for n, b in lora.items())
    assert moved >= len(lora) // 2, f"{moved} of {len(lora)} LoRA tensors moved"
    assert all(torch.equal(params[n], b) for n, b in base.items()), "a base weight moved"
    if extra:
        assert any(not torch.equal(p, b) for p, b in zip(extra, extra_before))


def test_lora_loads_into_a_fresh_pipeline_with_identical_outputs(family_folder, tmp_path):
    family, folder = family_folder
    pipe, cond, flow = setup(family, folder, rank=4, alpha=2.0)
    method = ReFL(flow, LatentReward(pipe.vae, AestheticReward.tiny(0)), batch_size=2,
                  grid=flow.pipeline_grid(pipe.scheduler, STEPS), cond=cond)
    finetune(method, 2, lr=3e-2, progress=False)
    trained = pipeline_latents(family, pipe)
    assert (trained - pipeline_latents(family, fresh(family, folder))).abs().max() > 1e-4
    save_lora(flow, tmp_path / "lora")
    other = fresh(family, folder)
    other.load_lora_weights(tmp_path / "lora")
    assert torch.equal(pipeline_latents(family, other), trained)
    assert (euler_latents(flow, pipe, cond) - trained).abs().max() < 1e-5
