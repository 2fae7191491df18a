"""The transformers the memory planner knows (theory §12.7): shipped configs of the real models, and per family how to
build the transformer from a config, feed it one batch, and change its depth.

Each shipped config is the ``transformer/config.json`` of the hub id named in ``source`` (fields as diffusers names
them); nothing is downloaded. A local ``config.json`` or a pipeline folder (its ``transformer/config.json``) works the
same way: the class is read from its ``_class_name``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from flowlite.errors import FlowliteError

_SD3 = {"_class_name": "SD3Transformer2DModel", "in_channels": 16, "out_channels": 16, "patch_size": 2,
        "attention_head_dim": 64, "joint_attention_dim": 4096, "pooled_projection_dim": 2048, "sample_size": 128}
MODELS: dict[str, dict] = {
    "sd3-medium": {
        "source": "stabilityai/stable-diffusion-3-medium-diffusers transformer/config.json: num_layers 24, "
                  "num_attention_heads 24, caption_projection_dim 1536, pos_embed_max_size 192",
        "resolution": 1024, "text_tokens": 77 + 256, "cfg": True,
        "config": {**_SD3, "num_layers": 24, "num_attention_heads": 24, "caption_projection_dim": 1536,
                   "pos_embed_max_size": 192}},
    "sd3.5-medium": {
        "source": "stabilityai/stable-diffusion-3.5-medium transformer/config.json: num_layers 24, num_attention_heads "
                  "24, dual_attention_layers 0-12, qk_norm rms_norm, pos_embed_max_size 384",
        "resolution": 1024, "text_tokens": 77 + 256, "cfg": True,
        "config": {**_SD3, "num_layers": 24, "num_attention_heads": 24, "caption_projection_dim": 1536,
                   "pos_embed_max_size": 384, "qk_norm": "rms_norm", "dual_attention_layers": list(range(13))}},
    "sd3.5-large": {
        "source": "stabilityai/stable-diffusion-3.5-large transformer/config.json: num_layers 38, num_attention_heads "
                  "38, caption_projection_dim 2432, qk_norm rms_norm, pos_embed_max_size 192",
        "resolution": 1024, "text_tokens": 77 + 256, "cfg": True,
        "config": {**_SD3, "num_layers": 38, "num_attention_heads": 38, "caption_projection_dim": 2432,
                   "pos_embed_max_size": 192, "qk_norm": "rms_norm"}},
    "flux.1-dev": {
        "source": "black-forest-labs/FLUX.1-dev transformer/config.json: num_layers 19, num_single_layers 38, "
                  "num_attention_heads 24, attention_head_dim 128, guidance_embeds true (no CFG batch)",
        "resolution": 1024, "text_tokens": 512, "cfg": False,
        "config": {"_class_name": "FluxTransformer2DModel", "patch_size": 1, "in_channels": 64, "num_layers": 19,
                   "num_single_layers": 38, "attention_head_dim": 128, "num_attention_heads": 24,
                   "joint_attention_dim": 4096, "pooled_projection_dim": 768, "guidance_embeds": True,
                   "axes_dims_rope": [16, 56, 56]}},
}
MODELS["flux.1-schnell"] = {
    **MODELS["flux.1-dev"], "text_tokens": 256,
    "source": "black-forest-labs/FLUX.1-schnell transformer/config.json: as FLUX.1-dev with guidance_embeds false",
    "config": {**MODELS["flux.1-dev"]["config"], "guidance_embeds": False}}


@dataclass(frozen=True)
class ModelSpec:
    """A transformer config with what the planner needs to feed it: the default image size, the text length and
    whether a step evaluates the conditional and unconditional branches (CFG doubles the sampling batch)."""

    name: str
    config: dict
    resolution: int
    text_tokens: int
    cfg: bool

    @property
    def family(self) -> str:
        return "flux" if self.config["_class_name"].startswith("Flux") else "sd3"

    def transformer_class(self):
        import diffusers

        return getattr(diffusers, self.config["_class_name"])

    def build(self, config: dict | None = None):
        """The transformer from ``config`` (default: this spec's), on the current default device and dtype."""
        cls = self.transformer_class()
        config = {k: v for k, v in (config or self.config).items() if not k.startswith("_")}
        return cls.from_config(config)

    # -------------------------------------------------------------------- depth: block types and their counts
    def depths(self, config: dict | None = None) -> dict[str, int]:
        """Number of blocks of each type: SD3 joint and dual-attention blocks, FLUX double- and single-stream."""
        c = config or self.config
        if self.family == "flux":
            return {"double": c["num_layers"], "single": c["num_single_layers"]}
        dual = len(c.get("dual_attention_layers") or ())
        return {"joint": c["num_layers"] - dual, "dual": dual}

    def with_depths(self, depths: dict[str, int]) -> dict:
        """This config with the given number of blocks of each type (everything else, widths included, unchanged)."""
        c = dict(self.config)
        if self.family == "flux":
            c.update(num_layers=depths["double"], num_single_layers=depths["single"])
        else:
            c.update(num_layers=depths["joint"] + depths["dual"], dual_attention_layers=list(range(depths["dual"])))
        return c

    # -------------------------------------------------------------------- one batch of inputs
    def latent_side(self, resolution: int) -> int:
        return resolution // 8  # the VAE's factor 8 (SD3, SD3.5 and FLUX)

    def tokens(self, resolution: int) -> int:
        """Image tokens at this resolution: (H/8/patch)², FLUX packing 2x2 latent patches."""
        patch = 2 if self.family == "flux" else self.config["patch_size"]
        return (self.latent_side(resolution) // patch) ** 2

    def inputs(self, batch: int, resolution: int, dtype: torch.dtype) -> dict:
        """Keyword arguments of one transformer call on ``batch`` samples (random values, current default device)."""
        c, n_text = self.config, self.text_tokens
        t = torch.full((batch,), 0.5, dtype=dtype)
        if self.family == "flux":
            side = self.latent_side(resolution) // 2
            ids = torch.zeros(side * side, 3, dtype=dtype)
            kw = {"hidden_states": torch.randn(batch, side * side, c["in_channels"], dtype=dtype),
                  "encoder_hidden_states": torch.randn(batch, n_text, c["joint_attention_dim"], dtype=dtype),
                  "pooled_projections": torch.randn(batch, c["pooled_projection_dim"], dtype=dtype), "timestep": t,
                  "img_ids": ids, "txt_ids": torch.zeros(n_text, 3, dtype=dtype), "return_dict": False}
            if c.get("guidance_embeds"):
                kw["guidance"] = torch.full((batch,), 3.5, dtype=dtype)
            return kw
        side = self.latent_side(resolution)
        return {"hidden_states": torch.randn(batch, c["in_channels"], side, side, dtype=dtype),
                "encoder_hidden_states": torch.randn(batch, n_text, c["joint_attention_dim"], dtype=dtype),
                "pooled_projections": torch.randn(batch, c["pooled_projection_dim"], dtype=dtype),
                "timestep": 1000 * t, "return_dict": False}

    def input_name(self) -> str:
        return "hidden_states"


def load_spec(name_or_path: str, resolution: int | None = None, text_tokens: int | None = None,
              cfg: bool | None = None) -> ModelSpec:
    """A shipped model by name (:data:`MODELS`), a ``config.json`` or a folder holding one (a pipeline folder's
    ``transformer/config.json``). Local configs default to 1024 px, 333 text tokens (77 CLIP + 256 T5) and CFG for
    SD3, 512 tokens and no CFG for FLUX."""
    if name_or_path in MODELS:
        entry = MODELS[name_or_path]
        spec = ModelSpec(name_or_path, entry["config"], entry["resolution"], entry["text_tokens"], entry["cfg"])
    else:
        path = Path(name_or_path)
        for candidate in (path, path / "config.json", path / "transformer" / "config.json"):
            if candidate.is_file():
                config = json.loads(candidate.read_text())
                break
        else:
            raise FlowliteError(f"unknown model {name_or_path!r}: give one of {', '.join(MODELS)}, a transformer "
                                f"config.json or a pipeline folder")
        if config.get("_class_name") not in ("SD3Transformer2DModel", "FluxTransformer2DModel"):
            raise FlowliteError(f"{str(candidate)!r} is not a transformer config the planner knows (_class_name "
                                f"SD3Transformer2DModel or FluxTransformer2DModel)")
        flux = config["_class_name"].startswith("Flux")
        spec = ModelSpec(path.name, config, 1024, 512 if flux else 333, not flux)
    changes = {k: v for k, v in {"resolution": resolution, "text_tokens": text_tokens, "cfg": cfg}.items()
               if v is not None}
    return ModelSpec(**{**spec.__dict__, **changes}) if changes else spec
