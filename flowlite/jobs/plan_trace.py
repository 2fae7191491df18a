"""Shape tracing for the memory planner (theory §12.7): run one transformer pass on fake tensors (no data, no compute,
any width) and record the peak of the bytes its operations hold.

``torch._subclasses.FakeTensorMode`` gives every tensor a shape, dtype and storage but no data, so a 12-billion
parameter FLUX runs on a laptop in a fraction of a second. A ``TorchDispatchMode`` sees every operation, forward and
backward: it adds each new storage an operation returns, drops storages that have been freed, and keeps the maximum
of the sum. Parameters and anything that existed before the pass are not counted (the planner counts them exactly).
The CPU kernels' fake versions are the ones traced, so attention saves q, k, v, the output and the log-sum-exp, as the
flash/memory-efficient kernels do on a GPU (the math kernel's N x N matrix is never stored).
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from flowlite.jobs.plan_models import ModelSpec

PASS_KINDS = ("sample", "vjp", "regress")
"""sample: the current model without grad (the sampler); vjp: the base (adapter off, checkpointing off) with the
graph to the input only, one VJP (the lean adjoint); regress: the current model with the graph to the LoRA, then
backward (the loss)."""


class LiveBytes(TorchDispatchMode):
    """Peak of the bytes held by storages created inside the mode (fake or real tensors); storages of ``existing``
    tensors (parameters, their grads: views of them, such as a weight's transpose, share them) are not counted."""

    def __init__(self, existing=()):
        super().__init__()
        self.live: dict[int, tuple[StorageWeakRef, int]] = {}
        self.existing = [t for t in existing if t is not None]  # kept alive: their addresses stay theirs
        self.skip = {StorageWeakRef(t.untyped_storage()).cdata for t in self.existing}
        self.peak = 0

    def current(self) -> int:
        for key in [k for k, (ref, _) in self.live.items() if ref.expired()]:
            del self.live[key]
        return sum(n for _, n in self.live.values())

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.current()  # frees first: a new storage may reuse a freed one's address
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                ref = StorageWeakRef(storage)
                if ref.cdata not in self.skip:
                    self.live.setdefault(ref.cdata, (ref, storage.nbytes()))
        self.peak = max(self.peak, self.current())
        return out


@dataclass(frozen=True)
class PassTrace:
    """Bytes of one pass: ``peak`` over the pass, ``held`` after the forward (the graph a later pass runs beside)."""

    peak: int
    held: int


@contextmanager
def default_dtype(dtype: torch.dtype):
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def add_lora(model, rank: int, targets) -> None:
    """A peft LoRA as ``SD3Flow`` adds it: alpha = rank, fp32 weights, the only trainable parameters."""
    from peft import LoraConfig

    model.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=list(targets)))
    for name, p in model.named_parameters():
        p.requires_grad_("lora_" in name)
        if p.requires_grad:
            p.data = p.data.float()


def run_pass(model, spec: ModelSpec, kind: str, batch: int, resolution: int, dtype: torch.dtype,
             checkpointing: bool, track: bool = True) -> PassTrace:
    """One pass of ``kind`` (see :data:`PASS_KINDS`) on ``batch`` samples; returns its bytes (tensors created inside
    only). Works on fake and real tensors alike; ``track=False`` runs it without counting (returns zeros)."""
    if kind not in PASS_KINDS:
        raise ValueError(f"unknown pass {kind!r}; accepted: {', '.join(PASS_KINDS)}")
    model.gradient_checkpointing = checkpointing and kind == "regress"  # adapters_disabled turns it off for VJPs
    if kind == "vjp":
        model.disable_adapters()
    lora = [p for p in model.parameters() if p.requires_grad]
    if kind == "regress":
        for p in lora:
            p.grad = torch.zeros_like(p)  # existing grads: counted once by the planner, accumulated in place here
    tracker = LiveBytes([*model.parameters(), *model.buffers(), *(p.grad for p in lora)]) if track else None
    try:
        with tracker or nullcontext(), torch.no_grad() if kind == "sample" else nullcontext():
            kw = spec.inputs(batch, resolution, dtype)
            x = kw["hidden_states"].requires_grad_(kind == "vjp")
            out = model(**kw)[0].float()
            held = tracker.current() if track else 0
            if kind == "vjp":
                torch.autograd.grad(out, x, torch.ones_like(out))
            elif kind == "regress":
                out.pow(2).mean().backward()
            del out, kw, x
    finally:
        if kind == "vjp":
            model.enable_adapters()
        for p in lora:
            p.grad = None
    return PassTrace(tracker.peak if track else 0, held)


def build_meta(spec: ModelSpec, config: dict, dtype: torch.dtype, rank: int, targets):
    """The transformer of ``config`` with its LoRA on the meta device (shapes only: counts parameters exactly)."""
    with torch.device("meta"), default_dtype(dtype):
        model = spec.build(config)
        add_lora(model, rank, targets)
    return model


def build_fake(spec: ModelSpec, config: dict, dtype: torch.dtype, rank: int, targets):
    """The transformer of ``config`` with its LoRA, as fake CPU tensors; returns (model, fake mode). Built on the meta
    device, then every parameter and buffer is replaced by a fake tensor of its shape (``Module.to`` cannot swap
    fake parameters)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    model = build_meta(spec, config, dtype, rank, targets)
    mode = FakeTensorMode()
    with mode:
        for module in model.modules():
            for name, p in list(module._parameters.items()):
                if p is not None:
                    module._parameters[name] = torch.nn.Parameter(torch.empty(p.shape, dtype=p.dtype),
                                                                  requires_grad=p.requires_grad)
            for name, b in list(module._buffers.items()):
                if b is not None:
                    module._buffers[name] = torch.zeros(b.shape, dtype=b.dtype)
    model.enable_gradient_checkpointing()  # run_pass switches it per pass
    return model, mode


def trace_passes(spec: ModelSpec, passes, resolution: int, dtype: torch.dtype, checkpointing: bool, rank: int,
                 targets) -> dict[tuple[str, int], PassTrace]:
    """Bytes of each (kind, batch) pass at full width and full depth, from traces at depth 2 and 3 of each block
    type: bytes(depth) = bytes(2, ..., 2) + Σ_type (n_type - 2) · [bytes(.., 3 of that type, ..) - bytes(2, ..., 2)].
    Depth 2, not 1: the first block needs no gradient for its inputs, so its backward is smaller than the others'."""
    depths = spec.depths()
    base = {k: min(n, 2) for k, n in depths.items()}
    variants = {"base": base, **{k: {**base, k: 3} for k, n in depths.items() if n >= 3}}
    traced: dict[str, dict] = {}
    for name, variant in variants.items():
        model, mode = build_fake(spec, spec.with_depths(variant), dtype, rank, targets)
        with mode, default_dtype(dtype):
            traced[name] = {p: run_pass(model, spec, p[0], p[1], resolution, dtype, checkpointing) for p in passes}
    out = {}
    for p in passes:
        b = traced["base"][p]
        peak, held = b.peak, b.held
        for k in variants.keys() - {"base"}:
            peak += (depths[k] - 2) * (traced[k][p].peak - b.peak)
            held += (depths[k] - 2) * (traced[k][p].held - b.held)
        out[p] = PassTrace(peak, held)
    return out
