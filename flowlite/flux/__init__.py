"""FLUX.1 through the same ``FlowModel`` seam as SD3 (theory §1.2, §12): ``FluxFlow`` (packing, ids, guidance
embedding, σ ↔ t, the dynamically shifted grid: the family's conventions in ``flow.py``), ``FluxPromptCache`` (T5 +
CLIP pooled), ``load_flux`` and a tiny random pipeline. Latents, VAE, rewards on latents, LoRA files and value
networks are the image family's shared pieces in ``flowlite.sd3``. Importing this package loads no diffusers."""

from flowlite.flux.flow import FluxFlow, image_ids, pack_latents, unpack_latents
from flowlite.flux.loading import load_flux
from flowlite.flux.prompts import FluxPromptCache
from flowlite.flux.tiny import build_tiny_flux

__all__ = ["FluxFlow", "image_ids", "pack_latents", "unpack_latents", "load_flux", "FluxPromptCache",
           "build_tiny_flux"]
