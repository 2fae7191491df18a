"""Loading SD3 (and any diffusers pipeline of an image family) from a hub id or a local folder, frozen and in eval
mode (theory §12.1)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from flowlite.config import pick_device
from flowlite.errors import FlowliteError, first_line
from flowlite.hub import check_pretrained, read_model_index


def freeze_pipeline(pipe):
    """eval() and requires_grad_(False) on every module of a pipeline (modules built from configs start in train
    mode, and T5's dropout would make outputs random: theory §12.1)."""
    for _, module in pipe.components.items():
        if isinstance(module, nn.Module):
            module.eval().requires_grad_(False)
    return pipe


def load_sd3(pretrained: str | Path, dtype: torch.dtype | None = None, device: str | torch.device = "auto",
             drop_t5: bool = False, quantize: str | None = None):
    """Load a ``StableDiffusion3Pipeline`` (SD3 or SD3.5) from a hub id or a local folder, frozen and in eval mode.

    ``dtype`` defaults to bfloat16 on a GPU and float32 on a CPU; ``drop_t5`` skips T5 (the pipeline then uses
    zeros for its part of the embeddings); ``quantize="int8"`` stores the transformer's linear weights in int8
    (:mod:`flowlite.sd3.quantization`). Raises FlowliteError for a missing folder or an unreachable hub id.
    """
    path = Path(pretrained)
    lacks_t5 = path.exists() and (path / "model_index.json").is_file() and _lacks_t5(path)
    kwargs = {"text_encoder_3": None, "tokenizer_3": None} if drop_t5 or lacks_t5 else {}
    return load_pipeline("StableDiffusion3Pipeline", pretrained, "SD3", dtype, device, quantize, **kwargs)


def load_pipeline(class_name: str, pretrained: str | Path, what: str, dtype: torch.dtype | None = None,
                  device: str | torch.device = "auto", quantize: str | None = None, **kwargs):
    """``diffusers.<class_name>.from_pretrained`` from a hub id or folder, on ``device`` in ``dtype`` (default bf16
    on a GPU, fp32 on a CPU), frozen and in eval mode, its transformer quantised while loading when ``quantize`` is
    given (``"int8"``: theory §12.9); one FlowliteError for a folder without model_index.json or
    weights that cannot be loaded."""
    import diffusers

    from flowlite.sd3.quantization import pipeline_quantization

    quantization = pipeline_quantization(quantize)  # refuses an unknown kind before anything is read
    if quantization is not None:
        kwargs["quantization_config"] = quantization
    device = pick_device(device)
    dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    source = check_pretrained(pretrained, what)
    path = Path(source)
    if path.exists() and not (path / "model_index.json").is_file():
        raise FlowliteError(f"{str(pretrained)!r} is not an {what} weight folder (no model_index.json in it)")
    if path.exists():
        read_model_index(path, what)  # one error line for a truncated or hand-edited index
    try:
        pipe = getattr(diffusers, class_name).from_pretrained(source, dtype=dtype, **kwargs)
    except (OSError, ValueError) as err:  # a missing file, an unknown class name in model_index.json
        reason = first_line(err)
        raise FlowliteError(f"could not load {what} weights from {str(pretrained)!r}: {reason}") from None
    return freeze_pipeline(pipe.to(device))


def _lacks_t5(folder: Path) -> bool:
    """A pipeline saved without T5 lists text_encoder_3 as [null, null] (theory §12.1 pitfall 4)."""
    index = read_model_index(folder, "SD3")
    return index.get("text_encoder_3", [None, None])[0] is None
