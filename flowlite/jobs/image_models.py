"""The image model families the fine-tuning job takes (``--model``), as data: which diffusers pipeline, loader, tiny
random builder, ``FlowModel`` adapter and prompt cache each uses, and its per-model recipe with the source of every
value. The families' conventions (σ ↔ t, output sign, latent packing, guidance) live in their adapters
(``flowlite/sd3/flow.py``, ``flowlite/flux/flow.py``); nothing here converts anything."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from flowlite.errors import FlowliteError


@dataclass(frozen=True)
class ImageFamily:
    name: str
    pipeline: str  # the diffusers pipeline class
    hub_id: str    # the weights the recipe is for
    recipe: dict   # settings the job takes from the family unless a flag or --tiny gives them
    source: str

    def load(self, pretrained, dtype, device, drop_t5: bool = False, quantize: str | None = None):
        """The family's pipeline from a hub id or folder; ``quantize="int8"``: its transformer in int8 (theory §12.9)."""
        if self.name == "flux":
            from flowlite.flux import load_flux

            _no_t5_drop(self, drop_t5)
            return load_flux(pretrained, dtype=dtype, device=device, quantize=quantize)
        from flowlite.sd3 import load_sd3

        return load_sd3(pretrained, dtype=dtype, device=device, drop_t5=drop_t5, quantize=quantize)

    def tiny(self, seed: int = 0, drop_t5: bool = False):
        """The family's tiny random pipeline (deterministic in ``seed``)."""
        if self.name == "flux":
            from flowlite.flux import build_tiny_flux

            _no_t5_drop(self, drop_t5)
            return build_tiny_flux(seed=seed)
        from flowlite.sd3 import build_tiny_sd3

        return build_tiny_sd3(seed=seed, t5=not drop_t5, variant=self.name)

    def flow(self, pipe, height: int, width: int, **kw):
        """The ``FlowModel`` adapter (SD3Flow or FluxFlow) with a LoRA, for images of height x width."""
        if self.name == "flux":
            from flowlite.flux import FluxFlow

            return FluxFlow.from_pipeline(pipe, height, width, **kw)
        from flowlite.sd3 import SD3Flow

        return SD3Flow.from_pipeline(pipe, height, width, **kw)

    def prompt_cache(self, pipe, max_sequence_length: int):
        if self.name == "flux":
            from flowlite.flux import FluxPromptCache

            return FluxPromptCache(pipe, max_sequence_length=max_sequence_length)
        from flowlite.sd3 import PromptCache

        return PromptCache(pipe, max_sequence_length=max_sequence_length)


def base_pipeline(family: ImageFamily, config: dict, dtype: torch.dtype, device: torch.device):
    """The pipeline a run trains on: ``--pretrained`` loaded (its transformer quantised with ``--quantize-base``), or
    with ``--tiny`` the family's random pipeline; a quantised tiny one goes through the loader users call (saved, then
    loaded back quantised)."""
    quantize = config.get("quantize_base")
    if not config["tiny"]:
        return family.load(config["pretrained"], dtype=dtype, device=device, drop_t5=config["drop_t5"],
                           quantize=quantize)
    pipe = family.tiny(seed=config["seed"], drop_t5=config["drop_t5"])
    if quantize:
        with tempfile.TemporaryDirectory() as folder:
            pipe.save_pretrained(folder)
            return family.load(folder, dtype=dtype, device=device, drop_t5=config["drop_t5"], quantize=quantize)
    if dtype != torch.float32 or device.type != "cpu":
        pipe.to(device, dtype)
    return pipe


def _no_t5_drop(family: ImageFamily, drop_t5: bool) -> None:
    if drop_t5:
        raise FlowliteError(f"--drop-t5 does not apply to --model {family.name}: its prompt states come from T5")


MODELS = {
    "sd3": ImageFamily(
        "sd3", "StableDiffusion3Pipeline", "stabilityai/stable-diffusion-3-medium-diffusers",
        {"guidance_scale": 5.0, "solver_steps": 20, "eval_steps": 20, "height": 512, "width": 512,
         "max_sequence_length": 256},
        "the VGG-Flow paper's SD3-medium set-up (theory §6.6): CFG 5, 20 Euler steps, 512 px"),
    "sd3.5": ImageFamily(
        "sd3.5", "StableDiffusion3Pipeline", "stabilityai/stable-diffusion-3.5-medium",
        {"guidance_scale": 4.5, "solver_steps": 10, "eval_steps": 40, "height": 512, "width": 512,
         "max_sequence_length": 256},
        "Flow-GRPO's SD3.5-Medium set-up (arXiv 2505.05470): CFG 4.5, 10 sampling steps in training, 40 at "
        "evaluation, 512 px; T5 length as SD3"),
    "flux": ImageFamily(
        "flux", "FluxPipeline", "black-forest-labs/FLUX.1-dev",
        {"guidance_scale": 3.5, "solver_steps": 28, "eval_steps": 28, "height": 512, "width": 512,
         "max_sequence_length": 512},
        "FluxPipeline's defaults for FLUX.1-dev (guidance embedding 3.5, 28 steps, T5 length 512); 512 px as the "
        "SD3 budget (derived; FLUX.1-dev's native size is 1024)"),
}


def infer_model(pretrained: str | Path | None) -> str:
    """The family of a pipeline folder from its ``model_index.json`` (``FluxPipeline`` -> flux; an SD3 transformer
    with ``qk_norm`` or dual attention layers -> sd3.5, else sd3); for a hub id, from its name; sd3 by default."""
    if pretrained is None:
        return "sd3"
    folder = Path(pretrained).expanduser()
    index = folder / "model_index.json"
    if index.is_file():
        from flowlite.hub import read_model_index  # one error line for a truncated or hand-edited index

        name = read_model_index(folder, "--pretrained")["_class_name"]
        if name.startswith("Flux"):
            return "flux"
        if name != "StableDiffusion3Pipeline":
            raise FlowliteError(f"{str(pretrained)!r} holds a {name}, not one of: "
                                f"{', '.join(sorted({f.pipeline for f in MODELS.values()}))}")
        config = folder / "transformer" / "config.json"
        transformer = json.loads(config.read_text()) if config.is_file() else {}
        return "sd3.5" if transformer.get("qk_norm") or transformer.get("dual_attention_layers") else "sd3"
    lowered = str(pretrained).lower()
    return "flux" if "flux" in lowered else "sd3.5" if "3.5" in lowered else "sd3"
