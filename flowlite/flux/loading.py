"""Loading FLUX.1 from a hub id or a local folder, frozen and in eval mode (theory §12.1)."""

from __future__ import annotations

from pathlib import Path

import torch

from flowlite.sd3.loading import load_pipeline


def load_flux(pretrained: str | Path, dtype: torch.dtype | None = None, device: str | torch.device = "auto",
              quantize: str | None = None):
    """A ``FluxPipeline`` (e.g. ``black-forest-labs/FLUX.1-dev``) on ``device`` in ``dtype`` (bf16 on a GPU); its
    transformer's linear weights in int8 with ``quantize="int8"`` (theory §12.9)."""
    return load_pipeline("FluxPipeline", pretrained, "FLUX", dtype, device, quantize)
