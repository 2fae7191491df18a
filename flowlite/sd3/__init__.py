"""Stable Diffusion 3 and 3.5 through the ``FlowModel`` seam (theory §1.2, §12): ``SD3Flow`` (LoRA, CFG, σ ↔ t),
``PromptCache`` / ``PromptEmbeddings`` (the conditioning), ``load_sd3`` (hub id or folder), ``pipeline_grid`` (the
scheduler's σ grid in paper time), ``LatentReward`` (decode, then score), LoRA files in the diffusers format and a
tiny random pipeline. Importing this package loads diffusers only when a function that needs it runs."""

from flowlite.sd3.flow import LORA_TARGETS, SD3Flow, adapters_disabled, check_image_size
from flowlite.sd3.loading import freeze_pipeline, load_sd3
from flowlite.sd3.lora import load_lora, save_lora
from flowlite.sd3.prompts import PromptCache, PromptEmbeddings
from flowlite.sd3.recipes import RECIPES, method_options
from flowlite.sd3.sigma import pipeline_grid, shifted_grid
from flowlite.sd3.tiny import build_tiny_sd3
from flowlite.sd3.vae import LatentReward, decode_latents, encode_images

__all__ = ["LORA_TARGETS", "SD3Flow", "adapters_disabled", "check_image_size", "freeze_pipeline", "load_sd3",
           "load_lora", "save_lora", "PromptCache", "PromptEmbeddings", "RECIPES", "method_options", "pipeline_grid",
           "shifted_grid", "build_tiny_sd3", "LatentReward", "decode_latents", "encode_images"]
