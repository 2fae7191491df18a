"""``python -m flowlite plan``: peak accelerator memory of one training update, per model x method (theory §12.7).

    peak = weights + trainable (LoRA, value networks) x (param + grad + 2 Adam moments) + trajectory
           + max over the method's passes of [pass bytes + the graph a pass runs beside]

Weights and trainable parameters are counted exactly from the config (the transformer instantiated on the meta
device, the LoRA added by peft at the recipe's rank and targets); pass bytes are traced on fake tensors at full width
(``plan_trace``). Each method's pattern of passes is read off its ``loss`` (``flowlite/methods``) and written below.
Not counted: the VAE decoder and the reward model (reward-backprop methods differentiate through them), text encoders
(their embeddings are precomputed), the CUDA context and allocator slack (``fits`` keeps 10% of the card for them).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

import torch

from flowlite.errors import FlowliteError
from flowlite.jobs.plan_models import MODELS, ModelSpec, load_spec
from flowlite.jobs.plan_trace import build_meta, trace_passes
from flowlite.methods import METHODS
from flowlite.sd3.flow import LORA_TARGETS
from flowlite.sd3.quantization import BASE_QUANTIZATIONS, int8_linear_bytes

CARDS_GIB = (24, 48, 80)
USABLE = 0.9  # of a card's memory left for tensors (the rest: CUDA context, allocator fragmentation)
PRECISIONS = {"bf16": torch.bfloat16, "fp32": torch.float32}
ADAM_BYTES = 4 + 4 + 8  # fp32 parameter, fp32 grad, two fp32 moments
GIB = 2**30


@dataclass(frozen=True)
class Step:
    """One pass of a method's update: ``kind`` (sample, vjp, regress) on ``batch`` samples, optionally run while the
    graph of an earlier regress pass of batch ``beside`` is still held."""

    kind: str
    batch: int
    beside: int | None = None


def method_steps(name: str, batch: int, steps: int, cfg: bool) -> list[Step]:
    """The passes of one micro-batch of a registered method at its SD3 recipe settings (``flowlite.sd3.recipes``).

    c = 2 with CFG: no-grad and VJP calls batch [uncond, cond]; calls with grad run the unconditional branch without
    grad (sg(w_u)) and the conditional one with grad, each at the plain batch."""
    c = 2 if cfg else 1
    sample = Step("sample", c * batch)

    def regress(n: int) -> list[Step]:  # velocity with grad at n samples, its sg(w_u) first
        return ([Step("sample", n)] if cfg else []) + [Step("regress", n)]

    if name in ("adjoint-matching", "non-memoryless-control", "vgg-flow-pmp"):  # time_subset "recipe"
        n_late = max(1, math.ceil(0.25 * steps))
        n_t = n_late + min(10, steps - 1 - n_late)
        return [sample, Step("vjp", c * batch), Step("sample", c * n_t * batch)] + regress(n_t * batch)
    if name == "vgg-flow":  # match on ≤ n_bins + 1 transitions; base velocity and finite differences beside its graph
        n = (min(5, steps - 1) + 1) * batch
        return [sample, *regress(n), Step("sample", c * n, beside=n)]
    if name == "ac-flow":  # recipe: n_times = 2 intermediate states per trajectory
        return [sample, *regress(2 * batch)]
    if name == "rwr":  # offline: base samples of 2 batches, then flow matching on one batch
        return [Step("sample", 2 * c * batch), *regress(batch)]
    if name in ("orw", "refl", "draft"):  # sampler without grad, then one velocity with grad (+ the reward)
        return [sample, *regress(batch)]
    raise FlowliteError(f"no pass pattern for method {name!r}; add it to flowlite/jobs/plan.py")


def value_network_params(name: str, spec: ModelSpec) -> int:
    """Parameters of the method's own value network: VGG-Flow's correction ν_φ, AC-Flow's critic V_φ."""
    from flowlite.sd3.nets import LatentCorrection, LatentCritic

    with torch.device("meta"):
        if name == "vgg-flow":
            net = LatentCorrection(16)
        elif name == "ac-flow":
            net = LatentCritic(16, pooled_dim=spec.config.get("pooled_projection_dim"))
        else:
            return 0
    return sum(p.numel() for p in net.parameters())


@dataclass(frozen=True)
class Workload:
    model: str
    resolution: int
    batch_size: int = 4
    solver_steps: int = 20
    precision: str = "bf16"
    gradient_checkpointing: bool = False
    gpus: int = 1
    fsdp: bool = False
    rank: int = 8
    quantize_base: str | None = None  # "int8": the frozen linear weights in int8 (theory §12.9)


@dataclass(frozen=True)
class Counts:
    """Exact byte counts of the state that lives through the whole update."""

    weights: int  # frozen transformer parameters and buffers, per GPU
    trainable: int  # LoRA parameters + grads + Adam moments, per GPU
    lora_params: int
    largest_block: int  # bytes of the biggest block (FSDP gathers one at a time, one more prefetched)


def count_state(spec: ModelSpec, w: Workload) -> Counts:
    """Weights and LoRA state from the meta-device model; FSDP full-shard divides both by the GPU count and adds two
    gathered blocks."""
    model = build_meta(spec, spec.config, PRECISIONS[w.precision], w.rank, LORA_TARGETS)
    frozen = sum(p.numel() * p.element_size() for p in model.parameters() if not p.requires_grad)
    if w.quantize_base:  # each frozen linear weight as int8 rows with a scale and a zero point, instead of its dtype
        linears = [m.weight for m in model.modules() if isinstance(m, torch.nn.Linear) and not m.weight.requires_grad]
        frozen += sum(int8_linear_bytes(*p.shape) - p.numel() * p.element_size() for p in linears)
    dtype = PRECISIONS[w.precision]  # diffusers casts floating buffers (SD3's position table) to the load dtype
    frozen += sum(b.numel() * (dtype.itemsize if b.is_floating_point() else b.element_size()) for b in model.buffers())
    lora = sum(p.numel() for p in model.parameters() if p.requires_grad)
    blocks = [sum(p.numel() * p.element_size() for p in block.parameters())
              for blocks in model.children() if isinstance(blocks, torch.nn.ModuleList) for block in blocks]
    largest = max(blocks, default=0)
    shards = w.gpus if w.fsdp else 1
    if w.quantize_base and shards > 1:
        raise FlowliteError("--quantize-base with --fsdp is not planned: the shipped FSDP configs shard bf16 weights")
    weights = frozen // shards + (2 * largest if shards > 1 else 0)
    return Counts(weights, math.ceil(lora * ADAM_BYTES / shards), lora, largest)


def plan(w: Workload, methods: list[str] | None = None, spec: ModelSpec | None = None) -> list[dict]:
    """Predicted peak bytes per method for workload ``w`` (one row per method, bytes and GiB)."""
    spec = spec or load_spec(w.model, resolution=w.resolution)
    methods = list(METHODS) if methods is None else methods
    for name in methods:
        if name not in METHODS:
            raise FlowliteError(f"unknown method {name!r}; accepted: {', '.join(METHODS)}")
    counts = count_state(spec, w)
    steps = {m: method_steps(m, w.batch_size, w.solver_steps, spec.cfg) for m in methods}
    passes = sorted({(s.kind, s.batch) for ss in steps.values() for s in ss}
                    | {("regress", s.beside) for ss in steps.values() for s in ss if s.beside})
    traces = trace_passes(spec, passes, w.resolution, PRECISIONS[w.precision], w.gradient_checkpointing, w.rank,
                          LORA_TARGETS)
    side = spec.latent_side(w.resolution)
    latent = 16 * side * side * 4  # one fp32 latent
    rows = []
    for m in methods:
        per_pass = [traces[(s.kind, s.batch)].peak + (traces[("regress", s.beside)].held if s.beside else 0)
                    for s in steps[m]]
        worst = max(range(len(per_pass)), key=per_pass.__getitem__)
        adjoint = any(s.kind == "vjp" for s in steps[m])
        trajectory = (w.solver_steps + 1) * w.batch_size * latent * (2 if adjoint else 1)
        value = value_network_params(m, spec) * ADAM_BYTES
        total = counts.weights + counts.trainable + value + trajectory + per_pass[worst]
        rows.append({"method": m, "peak_pass": asdict(steps[m][worst]), "weights": counts.weights,
                     "trainable": counts.trainable, "lora_params": counts.lora_params, "value_networks": value,
                     "trajectory": trajectory, "activations": per_pass[worst], "total": total,
                     "fits": {f"{g} GB": total <= USABLE * g * GIB for g in CARDS_GIB}})
    return rows


def format_table(w: Workload, rows: list[dict]) -> str:
    head = ("| method | peak pass | weights | LoRA+grad+Adam | value nets | activations | total GiB | "
            + " | ".join(f"{g} GB" for g in CARDS_GIB) + " |")
    lines = [head, "|" + "---|" * (7 + len(CARDS_GIB))]
    for r in rows:
        p = r["peak_pass"]
        cells = [r["method"], f"{p['kind']} x{p['batch']}" + (f" beside regress x{p['beside']}" if p["beside"] else ""),
                 *(f"{r[k] / GIB:.2f}" for k in ("weights", "trainable", "value_networks", "activations", "total")),
                 *("yes" if ok else "no" for ok in r["fits"].values())]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def add_plan_parser(sub) -> None:
    """The ``plan`` job's flags, on the command line's subparsers."""
    from flowlite.jobs.arguments import positive_int

    p = sub.add_parser("plan", help="predict peak GPU memory per model x method (nothing downloaded, no GPU needed)")
    p.add_argument("--model", default="sd3-medium", help=f"{', '.join(MODELS)}, a transformer config.json or a "
                                                         "pipeline folder")
    p.add_argument("--method", nargs="+", default=None, metavar="METHOD", help=f"default all: {', '.join(METHODS)}")
    p.add_argument("--resolution", type=positive_int, default=None, help="image side in pixels (default: model's)")
    p.add_argument("--batch-size", type=positive_int, default=4, help="trajectories per micro-batch and GPU")
    p.add_argument("--solver-steps", type=positive_int, default=20)
    p.add_argument("--precision", choices=list(PRECISIONS), default="bf16", help="the frozen base's dtype")
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--gpus", type=positive_int, default=1)
    p.add_argument("--fsdp", action="store_true", help="FSDP full-shard of the base and the LoRA over --gpus")
    p.add_argument("--rank", type=positive_int, default=8, help="LoRA rank")
    p.add_argument("--quantize-base", choices=list(BASE_QUANTIZATIONS), default=None,
                   help="the frozen transformer's linear weights in int8 (as the job's --quantize-base)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the rows as JSON")
    p.set_defaults(func=cmd_plan)


def cmd_plan(args) -> int:
    spec = load_spec(args.model, resolution=args.resolution)
    w = Workload(args.model, spec.resolution, args.batch_size, args.solver_steps, args.precision,
                 args.gradient_checkpointing, args.gpus, args.fsdp, args.rank, args.quantize_base)
    rows = plan(w, args.method, spec)
    print(f"{spec.name}: {w.resolution}x{w.resolution}, {spec.tokens(w.resolution)} image + {spec.text_tokens} text "
          f"tokens, batch {w.batch_size}{' (CFG x2 without grad)' if spec.cfg else ''}, {w.solver_steps} steps, "
          f"{w.precision}, checkpointing {'on' if w.gradient_checkpointing else 'off'}, "
          f"{w.gpus} GPU{'s' if w.gpus > 1 else ''}{' FSDP' if w.fsdp else ''}, LoRA rank {w.rank} "
          f"{'(base int8) ' if w.quantize_base else ''}"
          f"({rows[0]['lora_params'] / 1e6:.1f} M)")
    print(format_table(w, rows))
    print(f"GiB per GPU; 'fits' when the total is at most {USABLE:.0%} of the card. Not counted: VAE, reward model, "
          "text encoders, CUDA context.")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"workload": asdict(w), "rows": rows}, f, indent=2)
    return 0
