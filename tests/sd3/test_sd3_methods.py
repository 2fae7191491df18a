"""Every registered method runs unchanged on the tiny SD3 (theory §1.4: only the model and the reward change):
two iterations of the one training loop move the LoRA (and the critic / value network), never the base weights,
with finite losses."""

import copy

import pytest
import torch

from flowlite.finetune import finetune
from flowlite.methods import METHODS, build_method
from flowlite.rewards.image import AestheticReward
from flowlite.sd3.vae import LatentReward
from flowlite.sd3 import SD3Flow, pipeline_grid
from flowlite.sd3.recipes import method_options

LATENT = (16, 8, 8)  # 16x16 images: the smallest size the VAE (x2) and the patch (2) allow with 4x4 tokens


@pytest.fixture(scope="module")
def tiny(tiny_sd3):
    pipe, cond = tiny_sd3
    return pipe, cond, LatentReward(pipe.vae, AestheticReward.tiny(seed=0))


def lora_names_that_must_move(flow):
    """All LoRA tensors but the last block's add_q_proj: that block is context_pre_only, its text queries are
    never used, so their gradient is exactly zero (theory §12.2)."""
    last = flow.transformer.config.num_layers - 1
    return [n for n, p in flow.transformer.named_parameters()
            if p.requires_grad and f"transformer_blocks.{last}.attn.add_q_proj" not in n]


@pytest.mark.parametrize("name", sorted(METHODS))
def test_registered_method_trains_the_lora_and_leaves_the_base_alone(tiny, name):
    pipe, cond, reward = tiny
    torch.manual_seed(0)
    flow = SD3Flow(copy.deepcopy(pipe.transformer), LATENT, guidance_scale=5.0)
    options = method_options(name, batch_size=2, solver_steps=4, grid=pipeline_grid(pipe.scheduler, 4), cond=cond)
    if name == "ac-flow":
        options["warmup"] = 0  # train the actor from the first iteration
    method, _ = build_method(name, flow, reward, beta=1.0, **options)

    params = dict(flow.transformer.named_parameters())
    base = {n: p.detach().clone() for n, p in params.items() if not p.requires_grad}
    lora = {n: params[n].detach().clone() for n in lora_names_that_must_move(flow)}
    extra = [p for group in method.parameter_groups()[1:] for p in group["params"]]
    extra_before = [p.detach().clone() for p in extra]

    result = finetune(method, 2, lr=1e-2, grad_clip=None, progress=False)

    losses = result.column("loss")
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    assert all(not torch.equal(params[n], before) for n, before in lora.items()), "a LoRA tensor did not move"
    assert all(torch.equal(params[n], before) for n, before in base.items()), "a base weight moved"
    if extra:  # the critic or value-gradient network trains too
        assert any(not torch.equal(p, b) for p, b in zip(extra, extra_before))
