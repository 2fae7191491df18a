"""Launched by ``test_fsdp_rehearsal.py`` under ``accelerate launch`` (two gloo processes on CPU): the tiny SD3
transformer with its LoRA, sharded with FSDP2 (each ``JointTransformerBlock`` one unit, the rest in the root), trained
for two updates of Adjoint Matching and of VGG-Flow through the one training loop (``train(..., shard_units=...)``),
with evaluation on every rank (the job's ``Evaluator``; rank 0 writes the images), checkpoints gathered for rank 0 to
write (the job's LoRA file inside); Adjoint Matching is also stopped after one update and resumed. Each rank also computes one method's unsharded reference:
one process, the two ranks' batches as two halves of one update. Writes ``<method>/rank<r>.safetensors``,
``<method>/reference*.safetensors``, ``base.safetensors`` and ``rank<r>.json`` into the folder given as the first
argument."""

import copy
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

from flowlite.checkpoint import trainable_state_dict
from flowlite.jobs.image_eval import Evaluator
from flowlite.methods import build_method
from flowlite.parallel import make_accelerator
from flowlite.rewards.image import AestheticReward
from flowlite.sd3 import LatentReward, PromptCache, SD3Flow, build_tiny_sd3, method_options, pipeline_grid, save_lora
from flowlite.train import train

METHODS, STEPS, BATCH, SOLVER_STEPS, LR, CLIP = ("adjoint-matching", "vgg-flow"), 2, 2, 4, 1e-2, 1.0
LATENT, UNITS, RESUMED = (16, 8, 8), ("JointTransformerBlock",), "adjoint-matching"  # configs/fsdp.yaml's units


def seed(step: int, rank: int) -> int:
    return 1000 * step + rank


def build(pipe, cond, reward, name: str):
    """The job's way: seed, LoRA (rank 4, alpha 4) on a copy of the transformer, the registered method, AdamW."""
    torch.manual_seed(0)
    flow = SD3Flow(copy.deepcopy(pipe.transformer), LATENT, guidance_scale=5.0)
    options = method_options(name, BATCH, SOLVER_STEPS, grid=pipeline_grid(pipe.scheduler, SOLVER_STEPS), cond=cond)
    method, _ = build_method(name, flow, reward, beta=1.0, **options)
    return flow, method, torch.optim.AdamW(method.parameter_groups(), lr=LR)


def sharded_run(pipe, cond, reward, name: str, folder: Path, accelerator, steps: int, resume: bool = False,
                evaluate: bool = False):
    flow, method, optimizer = build(pipe, cond, reward, name)
    rank = accelerator.process_index
    evaluator = Evaluator(flow, reward, cache, ["a red cube"], [0, 1], pipeline_grid(pipe.scheduler, 3),
                          out_dir=folder / "eval" if rank == 0 else None) if evaluate else None

    def loss_fn(step: int):
        torch.manual_seed(seed(step, rank))
        loss, logs = method.loss(step)
        mean = accelerator.reduce(loss.detach().clone(), reduction="mean")
        return loss + (mean - loss.detach()), logs  # the value is the rank mean, the gradient this rank's own

    def lora_files(checkpoint: Path) -> None:  # the job's LoRA file, written by rank 0 inside the checkpoint
        save_lora(flow, checkpoint / "lora")

    result = train(method, loss_fn, optimizer, steps, run_dir=folder, checkpoint_every=1, resume=resume,
                   grad_clip=CLIP, callback=evaluator, callback_every=STEPS, progress=False, log_every=1,
                   accelerator=accelerator, checkpoint_files=lora_files, shard_units=UNITS)
    return flow, result


def reference(pipe, cond, reward, name: str) -> dict:
    """One process, no sharding: each update is the mean of the two ranks' losses (same seeds), clipped, AdamW."""
    flow, method, optimizer = build(pipe, cond, reward, name)
    params, norms = [p for g in optimizer.param_groups for p in g["params"]], []
    for step in range(STEPS):
        optimizer.zero_grad()
        for rank in (0, 1):
            torch.manual_seed(seed(step, rank))
            (method.loss(step)[0] / 2).backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_(params, CLIP)))
        optimizer.step()
    evaluator = Evaluator(flow, reward, cache, ["a red cube"], [0, 1], pipeline_grid(pipe.scheduler, 3))
    state = {k: v.detach().clone().contiguous() for k, v in flow.transformer.state_dict().items()}
    return state, trainable_state_dict(method), {"grad_norm": norms, **evaluator(STEPS)}


if __name__ == "__main__":
    out = Path(sys.argv[1])
    accelerator = make_accelerator(1, cpu=True)
    rank = accelerator.process_index
    pipe = build_tiny_sd3(seed=0)
    cache = PromptCache(pipe, max_sequence_length=32)
    cache(["a cat", "a dog", "a red cube"])
    cond = cache(["a cat", "a dog"])
    reward = LatentReward(pipe.vae, AestheticReward.tiny(seed=0))
    report = {"world": accelerator.num_processes, "sharded": {}, "loss": {}, "grad_norm": {}, "eval": {}}
    for name in METHODS:
        flow, result = sharded_run(pipe, cond, reward, name, out / name / "whole", accelerator, STEPS, evaluate=True)
        report["sharded"][name] = sorted({type(p).__name__ for p in flow.transformer.parameters()})
        full = get_model_state_dict(flow.transformer, options=StateDictOptions(full_state_dict=True))
        offloaded = get_model_state_dict(flow.transformer, options=StateDictOptions(full_state_dict=True,
                                                                                    cpu_offload=True))
        report["offloaded_keys"] = len(offloaded)  # cpu_offload gathers onto rank 0 only
        if rank == 0:
            assert all(torch.equal(offloaded[k], full[k]) for k in full)
        save_file({k: v.contiguous() for k, v in full.items()}, str(out / name / f"rank{rank}.safetensors"))
        report["loss"][name] = result.column("loss")
        report["grad_norm"][name] = result.column("grad_norm")
        report["eval"][name] = result.history[-1]["eval_reward"]
        if name == RESUMED:  # stopped after one update, resumed (optimizer state included) for the second
            sharded_run(pipe, cond, reward, name, out / name / "resumed", accelerator, 1)
            flow, _ = sharded_run(pipe, cond, reward, name, out / name / "resumed", accelerator, STEPS, resume=True)
            resumed = get_model_state_dict(flow.transformer, options=StateDictOptions(full_state_dict=True))
            save_file({k: v.contiguous() for k, v in resumed.items() if "lora" in k},
                      str(out / name / f"resumed{rank}.safetensors"))
    if rank == 0:  # the pretrained weights, before any LoRA was added
        save_file({k: v.contiguous() for k, v in pipe.transformer.state_dict().items()}, str(out / "base.safetensors"))
    mine = METHODS[rank]  # each rank computes one method's unsharded reference
    state, trained, metrics = reference(pipe, cond, reward, mine)
    save_file(state, str(out / mine / "reference.safetensors"))
    save_file(trained, str(out / mine / "reference_trained.safetensors"))
    report["reference"] = {mine: metrics}
    (out / f"rank{rank}.json").write_text(json.dumps(report))
