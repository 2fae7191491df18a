"""The image model families the fine-tuning job takes (``--model``), as data: which diffusers pipeline, loader, tiny
random builder, ``FlowModel`` adapter and prompt cache each uses, and its per-model recipe with the source of every
value. The families' conventions (σ ↔ t, output sign, latent packing, guidance) live in their adapters
(``flowlite/sd3/flow.py``, ``flowlite/flux/flow.py``); nothing here converts anything."""

from __future__ import annotations

import importlib
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from flowlite.errors import FlowliteError


@dataclass(frozen=True)
class ImageFamily:
    """One image family as data: its diffusers pipeline, the weights its recipe is for, the recipe with its source,
    and where its pieces live (``package``: the loader, the tiny random builder, the ``FlowModel`` adapter and the
    prompt cache, by name). The methods never see any of this; the job calls the four pieces through this object."""

    name: str
    pipeline: str  # the diffusers pipeline class
    hub_id: str    # the weights the recipe is for
    recipe: dict   # settings the job takes from the family unless a flag or --tiny gives them
    source: str
    package: str   # flowlite.sd3 or flowlite.flux
    loader: str
    tiny_builder: str
    adapter: str
    prompts: str
    tiny_options: dict = field(default_factory=dict)  # the tiny builder's arguments for this family
    has_t5_drop: bool = True  # False: the prompt states come from T5, so --drop-t5 is refused
    fsdp_units: tuple[str, ...] = ("JointTransformerBlock",)  # --fsdp's units: configs/fsdp*.yaml's classes

    def _piece(self, name: str):
        return getattr(importlib.import_module(self.package), name)

    def _refuse_t5_drop(self, drop_t5: bool) -> None:
        if drop_t5 and not self.has_t5_drop:
            raise FlowliteError(f"--drop-t5 does not apply to --model {self.name}: its prompt states come from T5")

    def load(self, pretrained, dtype, device, drop_t5: bool = False, quantize: str | None = None):
        """The family's pipeline from a hub id or folder; ``quantize="int8"``: its transformer in int8 (theory §12.9)."""
        self._refuse_t5_drop(drop_t5)
        t5 = {"drop_t5": drop_t5} if self.has_t5_drop else {}
        return self._piece(self.loader)(pretrained, dtype=dtype, device=device, quantize=quantize, **t5)

    def tiny(self, seed: int = 0, drop_t5: bool = False):
        """The family's tiny random pipeline (deterministic in ``seed``)."""
        self._refuse_t5_drop(drop_t5)
        t5 = {"t5": not drop_t5} if self.has_t5_drop else {}
        return self._piece(self.tiny_builder)(seed=seed, **t5, **self.tiny_options)

    def flow(self, pipe, height: int, width: int, **kw):
        """The ``FlowModel`` adapter (SD3Flow or FluxFlow) with a LoRA, for images of height x width."""
        return self._piece(self.adapter).from_pipeline(pipe, height, width, **kw)

    def prompt_cache(self, pipe, max_sequence_length: int):
        return self._piece(self.prompts)(pipe, max_sequence_length=max_sequence_length)


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


_SD3_PIECES = ("flowlite.sd3", "load_sd3", "build_tiny_sd3", "SD3Flow", "PromptCache")
MODELS = {
    "sd3": ImageFamily(
        "sd3", "StableDiffusion3Pipeline", "stabilityai/stable-diffusion-3-medium-diffusers",
        {"guidance_scale": 5.0, "solver_steps": 20, "eval_steps": 20, "height": 512, "width": 512,
         "max_sequence_length": 256},
        "the VGG-Flow paper's SD3-medium set-up (theory §6.6): CFG 5, 20 Euler steps, 512 px",
        *_SD3_PIECES, tiny_options={"variant": "sd3"}),
    "sd3.5": ImageFamily(
        "sd3.5", "StableDiffusion3Pipeline", "stabilityai/stable-diffusion-3.5-medium",
        {"guidance_scale": 4.5, "solver_steps": 10, "eval_steps": 40, "height": 512, "width": 512,
         "max_sequence_length": 256},
        "Flow-GRPO's SD3.5-Medium set-up (arXiv 2505.05470): CFG 4.5, 10 sampling steps in training, 40 at "
        "evaluation, 512 px; T5 length as SD3",
        *_SD3_PIECES, tiny_options={"variant": "sd3.5"}),
    "flux": ImageFamily(
        "flux", "FluxPipeline", "black-forest-labs/FLUX.1-dev",
        {"guidance_scale": 3.5, "solver_steps": 28, "eval_steps": 28, "height": 512, "width": 512,
         "max_sequence_length": 512},
        "FluxPipeline's defaults for FLUX.1-dev (guidance embedding 3.5, 28 steps, T5 length 512); 512 px as the "
        "SD3 budget (derived; FLUX.1-dev's native size is 1024)",
        "flowlite.flux", "load_flux", "build_tiny_flux", "FluxFlow", "FluxPromptCache", has_t5_drop=False,
        fsdp_units=("FluxTransformerBlock", "FluxSingleTransformerBlock")),
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
