"""Every registered method runs unchanged on the tiny SD3 (DESIGN §2: only the model and the reward change):
two iterations of the one training loop move the LoRA (and the critic / value network), never the base weights,
with finite losses."""

import copy

import pytest
import torch

from flowlite.finetune import finetune
from flowlite.methods import METHODS, build_method
from flowlite.rewards.image import AestheticReward
from flowlite.rewards.latent import LatentReward
from flowlite.sd3 import PromptCache, SD3Flow, pipeline_grid
from flowlite.sd3_nets import sd3_method_options
from flowlite.sd3_tiny import build_tiny_sd3

LATENT = (16, 8, 8)  # 16x16 images: the smallest size the VAE (x2) and the patch (2) allow with 4x4 tokens


@pytest.fixture(scope="module")
def tiny():
    pipe = build_tiny_sd3(seed=0)
    cond = PromptCache(pipe, max_sequence_length=32)(["a photo of a cat", "a red square"])
    reward = LatentReward(pipe.vae, AestheticReward.tiny(seed=0))
    return pipe, cond, reward


def lora_names_that_must_move(flow):
    """All LoRA tensors but the last block's add_q_proj: that block is context_pre_only, its text queries are
    never used, so their gradient is exactly zero (ecosystem §3)."""
    last = flow.transformer.config.num_layers - 1
    return [n for n, p in flow.transformer.named_parameters()
            if p.requires_grad and f"transformer_blocks.{last}.attn.add_q_proj" not in n]


@pytest.mark.parametrize("name", sorted(METHODS))
def test_registered_method_trains_the_lora_and_leaves_the_base_alone(tiny, name):
    pipe, cond, reward = tiny
    torch.manual_seed(0)
    flow = SD3Flow(copy.deepcopy(pipe.transformer), LATENT, guidance_scale=5.0)
    options = sd3_method_options(name, flow, reward, batch_size=2, steps=4, cond=cond,
                                 grid=pipeline_grid(pipe.scheduler, 4))
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
