"""Loading SD3 from a hub id or a local folder, frozen and in eval mode (theory §12.1)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from flowlite.config import pick_device
from flowlite.errors import FlowliteError
from flowlite.hub import check_pretrained


def freeze_pipeline(pipe):
    """eval() and requires_grad_(False) on every module of a pipeline (modules built from configs start in train
    mode, and T5's dropout would make outputs random: theory §12.1)."""
    for _, module in pipe.components.items():
        if isinstance(module, nn.Module):
            module.eval().requires_grad_(False)
    return pipe


def load_sd3(pretrained: str | Path, dtype: torch.dtype | None = None, device: str | torch.device = "auto",
             drop_t5: bool = False):
    """Load a ``StableDiffusion3Pipeline`` from a hub id or a local folder, frozen and in eval mode.

    ``dtype`` defaults to bfloat16 on a GPU and float32 on a CPU; ``drop_t5`` skips T5 (the pipeline then uses
    zeros for its part of the embeddings). Raises FlowliteError for a missing folder or an unreachable hub id.
    """
    from diffusers import StableDiffusion3Pipeline

    device = pick_device(device)
    dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    source = check_pretrained(pretrained, "SD3")
    path = Path(source)
    local = path.exists()
    if local and not (path / "model_index.json").is_file():
        raise FlowliteError(f"{str(pretrained)!r} is not an SD3 weight folder (no model_index.json in it)")
    kwargs = {"dtype": dtype}
    if drop_t5 or (local and _lacks_t5(path)):
        kwargs.update(text_encoder_3=None, tokenizer_3=None)
    try:
        pipe = StableDiffusion3Pipeline.from_pretrained(source, **kwargs)
    except (OSError, EnvironmentError) as err:
        raise FlowliteError(f"could not load SD3 weights from {str(pretrained)!r}: {err}") from None
    return freeze_pipeline(pipe.to(device))


def _lacks_t5(folder: Path) -> bool:
    """A pipeline saved without T5 lists text_encoder_3 as [null, null] (theory §12.1 pitfall 4)."""
    index = json.loads((folder / "model_index.json").read_text())
    return index.get("text_encoder_3", [None, None])[0] is None
