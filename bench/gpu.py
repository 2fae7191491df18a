"""One-shot GPU measurement: seconds per update and torch.cuda.max_memory_allocated per model x method, beside the
planner's prediction (``python -m flowlite plan``, theory §12.7). Random weights in the real configurations, nothing
downloaded; bf16 base, fp32 LoRA, gradient checkpointing, precomputed random text embeddings (text encoders never
loaded), a cheap latent reward (no VAE, no reward model: the planner does not count them either).

Every row runs the registered method itself, one real update per step, through the family's ``FlowModel``: ``SD3Flow``
for SD3 and SD3.5 (CFG with a negative prompt), ``FluxFlow`` for FLUX.1 (packed latents, guidance embedding 3.5, no
negative prompt; theory §12.8). Configurations the planner says do not fit the card are dropped and listed. A time
budget (default 420 s) stops the run early; what was not run is listed too.

    python bench/gpu.py                                   # on an 80-GB-class GPU: writes bench/gpu_results.json/.md
    python bench/gpu.py --tiny --device cpu --out /tmp/x  # the same code on tiny random models (CI runs this)
    python bench/gpu.py --quantize-base int8 --out bench/gpu_results_int8.json   # the int8 base (theory §12.9)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from flowlite.jobs.plan import GIB, USABLE, Workload, plan
from flowlite.jobs.plan_check import _status, sd3_config
from flowlite.jobs.plan_models import ModelSpec, load_spec
from flowlite.jobs.plan_trace import default_dtype
from flowlite.methods import METHODS
from flowlite.sd3.quantization import BASE_QUANTIZATIONS

TINY = {"sd3-tiny": ModelSpec("sd3-tiny", sd3_config("tiny", 8), 64, 16, cfg=True),
        "flux-tiny": ModelSpec("flux-tiny", {
            "_class_name": "FluxTransformer2DModel", "patch_size": 1, "in_channels": 64, "num_layers": 1,
            "num_single_layers": 1, "attention_head_dim": 16, "num_attention_heads": 2, "joint_attention_dim": 32,
            "pooled_projection_dim": 32, "guidance_embeds": True, "axes_dims_rope": [4, 6, 6]}, 64, 8, cfg=False)}


def reward(x, cond=None):
    return -x.float().pow(2).flatten(1).mean(1)


def flow_update(spec: ModelSpec, method: str, w: Workload, device: torch.device, dtype: torch.dtype):
    """A function doing one real update of ``method`` on a random ``spec`` transformer through its family's flow."""
    from flowlite.flux.flow import FluxFlow
    from flowlite.methods import build_method
    from flowlite.sd3.flow import SD3Flow
    from flowlite.sd3.prompts import PromptEmbeddings
    from flowlite.sd3.recipes import RECIPES, method_options

    c, side = spec.config, spec.latent_side(w.resolution)
    text = [torch.randn(1, spec.text_tokens, c["joint_attention_dim"]), torch.randn(1, c["pooled_projection_dim"])]
    if spec.family == "flux":  # guidance-distilled: g enters the transformer, no negative prompt; latents packed 2x2
        cond, adapter, shape, guidance = PromptEmbeddings(*text), FluxFlow, (c["in_channels"] // 4, side, side), 3.5
    else:  # CFG with a negative prompt
        cond = PromptEmbeddings(*text, *[t.clone() for t in text])
        adapter, shape, guidance = SD3Flow, (c["in_channels"], side, side), 5.0
    cond = cond.to(device)
    with torch.device(device), default_dtype(dtype):
        transformer = spec.build()
    if w.quantize_base:  # the job's int8 base (theory §12.9), applied in place to the random weights
        from torchao.quantization import Int8WeightOnlyConfig, quantize_

        quantize_(transformer, Int8WeightOnlyConfig())
    if w.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    flow = adapter(transformer, shape, guidance_scale=guidance, rank=w.rank)
    options = {**RECIPES[method]["options"], **method_options(method, w.batch_size, w.solver_steps, cond=cond)}
    m, _ = build_method(method, flow, reward, beta=1.0, **options)
    m.to(device)
    optimizer = torch.optim.AdamW([p for g in m.parameter_groups() for p in g["params"]], lr=1e-5)

    def update(step: int):
        loss, _ = m.loss(step)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return update


def measure(spec: ModelSpec, method: str, w: Workload, device: torch.device, updates: int) -> dict:
    dtype = torch.bfloat16 if w.precision == "bf16" else torch.float32
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    else:
        Path("/proc/self/clear_refs").write_text("5")
        start = _status("VmRSS")
    update = flow_update(spec, method, w, device, dtype)
    seconds = []
    for step in range(updates + 1):  # the first update warms up and is not timed
        t0 = time.perf_counter()
        update(step)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else _status("VmHWM") - start
    return {"seconds_per_update": sum(seconds[1:]) / max(1, updates), "peak_bytes": peak,
            "measured_as": "cuda max_memory_allocated" if device.type == "cuda" else "peak RSS increase",
            "how": "method updates via " + ("FluxFlow" if spec.family == "flux" else "SD3Flow")}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny random models (sd3-tiny, flux-tiny)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--models", nargs="+", default=None, help="default: sd3-medium sd3.5-medium sd3.5-large "
                                                                   "flux.1-dev (with --tiny: sd3-tiny flux-tiny)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--resolution", type=int, default=None, help="default 512 (64 with --tiny)")
    parser.add_argument("--updates", type=int, default=2, help="timed updates after one warm-up update")
    parser.add_argument("--budget-seconds", type=float, default=420.0)
    parser.add_argument("--card-gib", type=float, default=None, help="default: the device's memory")
    parser.add_argument("--quantize-base", choices=list(BASE_QUANTIZATIONS), default=None,
                        help="the frozen linear weights in int8")
    parser.add_argument("--out", default="bench/gpu_results.json")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    names = args.models or (list(TINY) if args.tiny else ["sd3-medium", "sd3.5-medium", "sd3.5-large", "flux.1-dev"])
    resolution = args.resolution or (64 if args.tiny else 512)
    card = args.card_gib or (torch.cuda.get_device_properties(device).total_memory / GIB if device.type == "cuda"
                             else float("inf"))
    precision = "bf16" if device.type == "cuda" else "fp32"
    rows, started = [], time.perf_counter()
    for name in names:
        spec = TINY[name] if name in TINY else load_spec(name)
        w = Workload(name, resolution, 4 if not args.tiny else 1, 20 if not args.tiny else 3, precision,
                     gradient_checkpointing=True, quantize_base=args.quantize_base)
        for row in plan(w, args.methods, spec):
            entry = {"model": name, "method": row["method"], "predicted_bytes": row["total"], "workload": w.__dict__}
            if row["total"] > USABLE * card * GIB:
                entry["status"] = f"dropped: the planner predicts {row['total'] / GIB:.1f} GiB > {USABLE:.0%} of card"
            elif time.perf_counter() - started > args.budget_seconds:
                entry["status"] = "not run: time budget spent"
            else:
                entry.update(measure(spec, row["method"], w, device, args.updates), status="measured")
            rows.append(entry)
            print(json.dumps({k: v for k, v in entry.items() if k != "workload"}), flush=True)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"device": device_name, "rows": rows}, indent=2))
    unit, scale = ("MiB", 2**20) if args.tiny else ("GiB", GIB)
    lines = [f"GPU measurement on {device_name} ({time.strftime('%Y-%m-%d')})", "",
             f"| model | method | predicted {unit} | measured {unit} | s/update | status |", "|---|---|---|---|---|---|"]
    for r in rows:
        measured = f"{r['peak_bytes'] / scale:.2f}" if "peak_bytes" in r else "-"
        speed = f"{r['seconds_per_update']:.2f}" if "seconds_per_update" in r else "-"
        lines.append(f"| {r['model']} | {r['method']} | {r['predicted_bytes'] / scale:.2f} | {measured} | {speed} | "
                     f"{r['status']} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
