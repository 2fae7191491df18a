"""The planner checked on CPU (theory §12.7): a random SD3 transformer trained for two real updates of a registered
method, in a fresh process, its peak resident memory beside what :func:`flowlite.jobs.plan.plan` predicts for the
same workload in fp32.

The measured figure is the process's peak RSS (``VmHWM``, reset through ``/proc/self/clear_refs``) minus its RSS
just before the transformer is built; glibc is told to ``mmap`` every allocation over 64 KiB
(``MALLOC_MMAP_THRESHOLD_``) so that freed tensors leave the resident set at once, as they leave a GPU allocator's
"allocated" count. Linux only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SIZES: dict[str, dict] = {
    "tiny": {"num_layers": 2, "num_attention_heads": 4, "attention_head_dim": 64},
    "small": {"num_layers": 3, "num_attention_heads": 6, "attention_head_dim": 64},
    "mid": {"num_layers": 4, "num_attention_heads": 12, "attention_head_dim": 64},
    "warm-up": {"num_layers": 1, "num_attention_heads": 1, "attention_head_dim": 16},
}
"""Widths 256, 384 and 768 (SD3-medium: 1536); 2-4 joint blocks. ``warm-up``: the smallest, run first."""


def sd3_config(size: str, side: int = 32) -> dict:
    """A random SD3 transformer config at one of :data:`SIZES`, for latents of ``side`` x ``side``."""
    width = SIZES[size]["num_attention_heads"] * SIZES[size]["attention_head_dim"]
    return {"_class_name": "SD3Transformer2DModel", "in_channels": 16, "out_channels": 16, "patch_size": 2,
            "joint_attention_dim": 256, "pooled_projection_dim": 128, "caption_projection_dim": width,
            "sample_size": side, "pos_embed_max_size": side, **SIZES[size]}


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _run(job: dict) -> int:
    """Two updates of ``job['method']`` on a fresh random transformer; returns the peak RSS increase in bytes."""
    import gc

    import torch
    from diffusers import SD3Transformer2DModel

    from flowlite.methods import build_method
    from flowlite.sd3.flow import SD3Flow
    from flowlite.sd3.prompts import PromptEmbeddings
    from flowlite.sd3.recipes import RECIPES, method_options

    torch.manual_seed(0)
    config, side, name = job["config"], job["side"], job["method"]
    cond = PromptEmbeddings(torch.randn(1, job["text_tokens"], config["joint_attention_dim"]),
                            torch.randn(1, config["pooled_projection_dim"]))
    options = {**RECIPES[name]["options"], **method_options(name, job["batch_size"], job["solver_steps"], cond=cond)}

    def reward(x, c=None):
        return -x.float().pow(2).flatten(1).mean(1)

    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS to the current RSS
    start = _status("VmRSS")
    transformer = SD3Transformer2DModel.from_config({k: v for k, v in config.items() if not k.startswith("_")})
    flow = SD3Flow(transformer, (16, side, side), guidance_scale=1.0, rank=job["rank"])
    method, _ = build_method(name, flow, reward, beta=1.0, **options)
    optimizer = torch.optim.AdamW([p for g in method.parameter_groups() for p in g["params"]], lr=1e-5)
    for step in range(2):
        loss, _ = method.loss(step)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return _status("VmHWM") - start


def _worker(jobs: list[dict]) -> list[int]:
    """Runs in the child: a warm-up (a 1-block model, every method once: libraries' code pages and thread pools are
    loaded before anything is measured), then each job; peak RSS increases in bytes."""
    import torch

    torch.set_num_threads(1)
    for name in dict.fromkeys(job["method"] for job in jobs):
        _run({**jobs[0], "method": name, "side": 8, "config": sd3_config("warm-up", 8)})
    return [_run(job) for job in jobs]


def measure(configs: list[dict], methods: list[str], side: int, batch_size: int = 1, solver_steps: int = 4,
            text_tokens: int = 16, rank: int = 8) -> list[int]:
    """Peak RSS increase (bytes) of two updates of each method on a random transformer of each config (configs x
    methods, in that order), in one fresh process."""
    jobs = [{"config": config, "method": method, "side": side, "batch_size": batch_size, "solver_steps": solver_steps,
             "text_tokens": text_tokens, "rank": rank} for config in configs for method in methods]
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    out = subprocess.run([sys.executable, "-m", "flowlite.jobs.plan_check", json.dumps(jobs)], env=env,
                         capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def predict(config: dict, method: str, side: int, batch_size: int = 1, solver_steps: int = 4, text_tokens: int = 16,
            rank: int = 8) -> dict:
    """The planner's row for the same workload: fp32, no CFG, no checkpointing, one process."""
    from flowlite.jobs.plan import Workload, plan
    from flowlite.jobs.plan_models import ModelSpec

    spec = ModelSpec("random", config, 8 * side, text_tokens, cfg=False)
    w = Workload("random", 8 * side, batch_size, solver_steps, "fp32", False, 1, False, rank)
    return plan(w, [method], spec)[0]


if __name__ == "__main__":
    print(json.dumps(_worker(json.loads(sys.argv[1]))))
