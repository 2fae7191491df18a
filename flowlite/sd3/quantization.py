"""A quantised frozen base (theory §12.9): the transformer's linear weights stored in int8, the LoRA in fp32.

Only the frozen base is quantised. Every ``nn.Linear`` weight of the transformer becomes torchao's int8 weight-only
tensor: per output row, w ≈ scale · (q - zero_point) with q int8, so the row costs ``in_features`` bytes plus a
float32 scale and an int8 zero point, against 2 · ``in_features`` in bf16. Activations, the LoRA (added by peft on
top of the quantised layer), the VAE, the text encoders and the reward stay as they were. The quantisation happens
while diffusers loads the weights (``PipelineQuantizationConfig``), so the full-precision transformer never sits in
memory, and peft recognises the layers it adapts.

int8 weight-only runs on CPU and GPU. 4-bit NF4 (bitsandbytes) needs CUDA, so nothing here can test it: flowlite does
not offer it.
"""

from __future__ import annotations

from flowlite.errors import FlowliteError

BASE_QUANTIZATIONS = {"int8": "int8 weight-only (torchao): CPU and GPU"}
INT8_ROW_EXTRA_BYTES = 4 + 1
"""Bytes per output row of an int8 weight-only linear layer besides its int8 weights: a float32 scale and an int8 zero
point (torchao's ``Int8Tensor``)."""


def check_quantization(kind: str | None) -> None:
    """Refuse an unknown kind, or int8 without torchao installed, with one line."""
    if kind is None:
        return
    if kind not in BASE_QUANTIZATIONS:
        raise FlowliteError(f"unknown base quantisation {kind!r}; accepted: {', '.join(BASE_QUANTIZATIONS)}")
    import importlib.util

    if importlib.util.find_spec("torchao") is None:
        raise FlowliteError("--quantize-base int8 needs torchao (pip install torchao==0.18.0, as requirements.txt pins)")


def pipeline_quantization(kind: str | None):
    """diffusers' ``PipelineQuantizationConfig`` that quantises the pipeline's ``transformer`` while loading it, or
    None for no quantisation."""
    check_quantization(kind)
    if kind is None:
        return None
    from diffusers import PipelineQuantizationConfig, TorchAoConfig
    from torchao.quantization import Int8WeightOnlyConfig

    return PipelineQuantizationConfig(quant_mapping={"transformer": TorchAoConfig(Int8WeightOnlyConfig())})


def int8_linear_bytes(out_features: int, in_features: int) -> int:
    """Stored bytes of one int8 weight-only linear weight: int8 entries plus a scale and a zero point per row."""
    return out_features * (in_features + INT8_ROW_EXTRA_BYTES)


def stored_bytes(tensor) -> int:
    """Bytes a tensor really holds: the inner tensors of a torchao tensor subclass, else numel · element_size (a
    quantised weight reports its activation dtype's element size, which is not what it stores)."""
    flatten = getattr(tensor, "__tensor_flatten__", None)
    if flatten is None or type(tensor).__module__.startswith("torch."):
        return tensor.numel() * tensor.element_size()
    return sum(stored_bytes(getattr(tensor, name)) for name in flatten()[0] if getattr(tensor, name) is not None)
