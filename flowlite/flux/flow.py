"""FLUX.1 behind the ``FlowModel`` seam: the family's conventions, all in this file (theory §1.2).

* time ↔ σ: as SD3, σ = 1 - t, but the transformer takes ``timestep = σ`` (it multiplies by 1000 itself; the
  pipeline passes ``t / 1000``), kept in fp32.
* sign: the transformer predicts w = dx/dσ = ε - x_data, as SD3: v = dx/dt = -w.
* latents: the state methods see is the VAE's (B, 16, h, w); the transformer sees it packed into 2x2 patches,
  (B, h/2 · w/2, 64), with image position ids (0, row, column) and zero text ids, as ``FluxPipeline`` builds them.
* guidance: FLUX.1-dev is guidance-distilled: ``guidance_scale`` enters the transformer's guidance embedding (no
  CFG, no negative prompt); FLUX.1-schnell has no guidance embedding and ignores it.
* σ grid: ``linspace(1, 1/N, N)`` shifted by μ(image tokens) (``use_dynamic_shifting``), as the pipeline does.

Everything else (LoRA, CFG-free velocity, base velocity with the adapter off, critic and value networks on latents)
is :class:`~flowlite.sd3.SD3Flow`'s: methods stay unchanged.
"""

from __future__ import annotations

import torch
from torch import Tensor

from flowlite.errors import FlowliteError
from flowlite.paths import batch_time
from flowlite.sd3.flow import SD3Flow
from flowlite.sd3.sigma import pipeline_grid, sigma_from_time


def pack_latents(x: Tensor) -> Tensor:
    """(B, C, h, w) -> (B, h/2 · w/2, 4C): each 2x2 patch becomes one token, channels-major within the patch."""
    b, c, h, w = x.shape
    return x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // 2) * (w // 2), c * 4)


def unpack_latents(tokens: Tensor, h: int, w: int) -> Tensor:
    """The inverse of :func:`pack_latents`: (B, h/2 · w/2, 4C) -> (B, C, h, w)."""
    b, _, d = tokens.shape
    return tokens.view(b, h // 2, w // 2, d // 4, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, d // 4, h, w)


def image_ids(h: int, w: int, device=None, dtype=None) -> Tensor:
    """Position ids (0, row, column) of the h/2 x w/2 packed tokens, row-major: (h/2 · w/2, 3)."""
    rows, cols = torch.meshgrid(torch.arange(h // 2), torch.arange(w // 2), indexing="ij")
    ids = torch.stack([torch.zeros_like(rows), rows, cols], dim=-1).reshape(-1, 3)
    return ids.to(device=device, dtype=dtype)


class FluxFlow(SD3Flow):
    """A ``FlowModel`` over diffusers' ``FluxTransformer2DModel`` with a peft LoRA adapter (theory §1.2):
    v_θ(x, t, c) = -unpack(transformer(pack(x), timestep = 1 - t, guidance = g, c)). ``guidance_scale`` is the
    guidance embedding's g (FLUX.1-dev: 3.5); arguments as :class:`~flowlite.sd3.SD3Flow`."""

    PIPELINE = "FluxPipeline"

    @classmethod
    def from_pipeline(cls, pipe, height: int | None = None, width: int | None = None, **kw) -> "FluxFlow":
        """Wrap ``pipe.transformer`` for images of height x width (default: the pipeline's default size)."""
        f = pipe.vae_scale_factor
        height = height or pipe.default_sample_size * f
        width = width or pipe.default_sample_size * f
        if height <= 0 or width <= 0 or height % (2 * f) or width % (2 * f):
            raise FlowliteError(f"image size {height}x{width} is not allowed: FLUX needs height and width positive "
                                f"multiples of {2 * f} (VAE factor {f} x the 2x2 latent packing)")
        channels = pipe.transformer.config.in_channels // 4
        return cls(pipe.transformer, (channels, height // f, width // f), **kw)

    @property
    def image_seq_len(self) -> int:
        return (self.event_shape[1] // 2) * (self.event_shape[2] // 2)

    def pipeline_grid(self, scheduler, steps: int) -> Tensor:
        """FluxPipeline's grid: σ = linspace(1, 1/N, N) shifted by μ(image tokens), then 0; in paper time."""
        sigmas = torch.linspace(1.0, 1.0 / steps, steps, dtype=torch.float64).tolist()
        return pipeline_grid(scheduler, steps, self.image_seq_len, sigmas=sigmas)

    def _model_output(self, x: Tensor, t: Tensor, prompt_embeds: Tensor, pooled: Tensor) -> Tensor:
        """w = unpack(transformer(pack(x), timestep = σ, guidance = g, ids, c)) with σ = 1 - t, in x's dtype."""
        dtype, (b, _, h, w) = self.transformer.dtype, x.shape
        sigma = sigma_from_time(batch_time(t, x)).float()
        guidance = None
        if self.transformer.config.guidance_embeds:
            guidance = torch.full((b,), self.guidance_scale, device=x.device, dtype=torch.float32)
        out = self.transformer(hidden_states=pack_latents(x).to(dtype), timestep=sigma, guidance=guidance,
                               pooled_projections=pooled.to(dtype), encoder_hidden_states=prompt_embeds.to(dtype),
                               txt_ids=torch.zeros(prompt_embeds.shape[1], 3, device=x.device, dtype=dtype),
                               img_ids=image_ids(h, w, x.device, dtype), return_dict=False)[0]
        return unpack_latents(out, h, w).to(x.dtype)
