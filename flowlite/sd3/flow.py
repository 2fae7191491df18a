"""Stable Diffusion 3 (and 3.5) behind the ``FlowModel`` seam (theory §1.2, §6.5).

SD3 works in σ = 1 - t (σ = 1 is noise), feeds the transformer ``timestep = 1000·σ`` and predicts
w = ε - x_data = dx/dσ. Paper time predicts v = dx/dt, so

    v(x, t) = -w(x, timestep = 1000·(1 - t)),        x̂1 = x + (1 - t) v = x - σ w.

That conversion lives in :meth:`SD3Flow._model_output` (with ``sigma.py``) and nowhere else: every method sees paper
time. The rest of the family: ``prompts.py`` (the ``cond`` object), ``loading.py``, ``sigma.py`` (grids), ``vae.py``
(latents ↔ images, rewards on latents), ``lora.py`` (files in the diffusers format), ``nets.py`` (value networks),
``tiny.py`` (a tiny random pipeline), ``recipes.py`` (per-method settings, as data).
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Iterator, Sequence

import torch
from torch import Tensor, nn

from flowlite.errors import FlowliteError
from flowlite.flows import FlowModel
from flowlite.paths import batch_time
from flowlite.sd3.nets import LatentCorrection, LatentCritic
from flowlite.sd3.prompts import PromptEmbeddings
from flowlite.sd3.sigma import pipeline_grid, sigma_from_time

# The official VGG-Flow code's LoRA on SD3: the four attention projections of the image stream (rank 8, alpha = rank),
# which every method's recipe uses, so runs compare like for like (diffusers' DreamBooth script also adapts the text
# stream's add_*_proj; more targets give more capacity at more memory, and a different model to compare).
LORA_TARGETS = ("attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0")


# ------------------------------------------------------------------------------------------- the flow model
def check_image_size(height: int, width: int, vae_scale_factor: int, patch_size: int) -> None:
    """SD3 needs height and width divisible by vae_scale_factor · patch_size."""
    factor = vae_scale_factor * patch_size
    if height <= 0 or width <= 0 or height % factor or width % factor:
        raise FlowliteError(f"image size {height}x{width} is not allowed: height and width must be positive multiples "
                            f"of {factor} (VAE factor {vae_scale_factor} x patch size {patch_size})")


@contextmanager
def adapters_disabled(transformer: nn.Module):
    """Run the transformer as its base (peft adapters off); requires_grad flags are restored afterwards.
    Gradient checkpointing is off inside: its recomputation would run at backward time, after the context, with the
    adapter back on (the lean adjoint's VJPs of the base differentiate after the call returns)."""
    flags = [(p, p.requires_grad) for p in transformer.parameters()]
    checkpointing = getattr(transformer, "gradient_checkpointing", False)
    transformer.disable_adapters()
    transformer.gradient_checkpointing = False
    try:
        yield
    finally:
        transformer.enable_adapters()
        transformer.gradient_checkpointing = checkpointing
        for p, flag in flags:
            p.requires_grad_(flag)


class SD3Flow(FlowModel):
    """A ``FlowModel`` over diffusers' ``SD3Transformer2DModel`` with a peft LoRA adapter (theory §1.2, §6.5).

    v_θ(x, t, c) = -w_cfg,  w_cfg = sg(w_u) + s (w_c - sg(w_u))  with  w = transformer(x, 1000·(1 - t), c):
    the parameter gradient flows through the conditional branch only (theory §6.5, the VGG-Flow code).
    ``base_velocity`` is the same CFG field with the adapter disabled, differentiable in x (the lean adjoint needs
    its VJPs). Without negative embeddings, or with ``guidance_scale`` <= 1, no CFG is applied.

    Args:
        transformer: the (frozen) transformer; a LoRA adapter is added unless it has one named ``adapter_name``,
            and that adapter becomes the only active one.
        latent_shape: (C, H/f, W/f) of the latents this model samples.
        rank, alpha, target_modules, init_lora_weights: the adapter (defaults as diffusers' SD3 LoRA script;
            alpha defaults to rank). Its weights are kept in fp32 whatever the transformer's dtype.
    """

    def __init__(self, transformer: nn.Module, latent_shape: tuple[int, int, int], guidance_scale: float = 5.0,
                 rank: int = 4, alpha: float | None = None, target_modules: Sequence[str] = LORA_TARGETS,
                 init_lora_weights: str | bool = "gaussian", adapter_name: str = "default"):
        super().__init__()
        self.event_shape = tuple(latent_shape)
        self.guidance_scale = float(guidance_scale)
        self.adapter_name = adapter_name
        transformer.requires_grad_(False)
        self.transformer = transformer.eval()
        if adapter_name not in (getattr(transformer, "peft_config", None) or {}):
            from peft import LoraConfig

            config = LoraConfig(r=rank, lora_alpha=alpha if alpha is not None else rank,
                                init_lora_weights=init_lora_weights, target_modules=list(target_modules))
            with warnings.catch_warnings():  # a second adapter is deliberate: set_adapter picks the active one
                warnings.filterwarnings("ignore", message="Already found a `peft_config`")
                transformer.add_adapter(config, adapter_name=adapter_name)
        transformer.set_adapter(adapter_name)  # the only active adapter, and the only trainable one
        for name, p in transformer.named_parameters():
            p.requires_grad_(f".{adapter_name}." in name and "lora_" in name)
            if p.requires_grad and p.dtype != torch.float32:  # fp32 master weights for the LoRA, as diffusers'
                p.data = p.data.float()                       # script does: bf16 would round small updates away

    @classmethod
    def from_pipeline(cls, pipe, height: int | None = None, width: int | None = None, **kw) -> "SD3Flow":
        """Wrap ``pipe.transformer`` for images of height x width (default: the pipeline's default size)."""
        tr = pipe.transformer
        f = pipe.vae_scale_factor
        height = height or pipe.default_sample_size * f
        width = width or pipe.default_sample_size * f
        check_image_size(height, width, f, tr.config.patch_size)
        return cls(tr, (tr.config.in_channels, height // f, width // f), **kw)

    PIPELINE = "StableDiffusion3Pipeline"
    """The diffusers pipeline class of this family (its LoRA files are written and read through it)."""

    @property
    def image_seq_len(self) -> int:
        """Image tokens per sample, (h/p)·(w/p): what a dynamically shifted σ grid depends on."""
        p = self.transformer.config.patch_size
        return (self.event_shape[1] // p) * (self.event_shape[2] // p)

    def pipeline_grid(self, scheduler, steps: int) -> Tensor:
        """The pipeline's own σ grid for ``steps`` steps at this flow's image size, in paper time."""
        return pipeline_grid(scheduler, steps, self.image_seq_len)

    # ---------------------------------------------------------------- the one σ ↔ t conversion
    def _model_output(self, x: Tensor, t: Tensor, prompt_embeds: Tensor, pooled: Tensor) -> Tensor:
        """w = transformer(x, timestep = 1000·σ, c) with σ = 1 - t, in x's dtype. The timestep stays fp32 whatever the
        transformer's dtype, as in the pipeline (bf16 would put it up to 2 of 1000 off)."""
        dtype = self.transformer.dtype
        sigma = sigma_from_time(batch_time(t, x))
        w = self.transformer(hidden_states=x.to(dtype), timestep=(1000 * sigma).float(),
                             encoder_hidden_states=prompt_embeds.to(dtype), pooled_projections=pooled.to(dtype),
                             return_dict=False)[0]
        return w.to(x.dtype)

    def _guided(self, x: Tensor, t: Tensor | float, cond: PromptEmbeddings, detach_uncond: bool) -> Tensor:
        if not isinstance(cond, PromptEmbeddings):
            raise FlowliteError(f"SD3Flow needs PromptEmbeddings as cond (from PromptCache), got {type(cond).__name__}")
        cond = cond.for_batch(x.shape[0])
        t = batch_time(t, x)
        if not (cond.has_negative and self.guidance_scale > 1.0):
            return -self._model_output(x, t, cond.prompt_embeds, cond.pooled)
        s = self.guidance_scale
        if detach_uncond and torch.is_grad_enabled():
            with torch.no_grad():  # sg(w_u): no graph kept for the unconditional branch
                w_u = self._model_output(x, t, cond.negative_prompt_embeds, cond.negative_pooled)
            w_c = self._model_output(x, t, cond.prompt_embeds, cond.pooled)
        else:  # one batched call [uncond, cond], as the pipeline does
            both = self._model_output(torch.cat([x, x]), torch.cat([t, t]),
                                    torch.cat([cond.negative_prompt_embeds, cond.prompt_embeds]),
                                    torch.cat([cond.negative_pooled, cond.pooled]))
            w_u, w_c = both.chunk(2)
        return -(w_u + s * (w_c - w_u))

    def velocity(self, x: Tensor, t: Tensor | float, cond=None) -> Tensor:
        """v_θ = -(sg(w_u) + s (w_c - sg(w_u))) with the LoRA adapter on."""
        return self._guided(x, t, cond, detach_uncond=True)

    def base_velocity(self, x: Tensor, t: Tensor | float, cond=None) -> Tensor:
        """v_base = -(w_u + s (w_c - w_u)) with the adapter off; differentiable in x."""
        with adapters_disabled(self.transformer):
            return self._guided(x, t, cond, detach_uncond=False)

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        return (p for p in self.transformer.parameters() if p.requires_grad)

    def sample_prior(self, n: int, cond=None, generator: torch.Generator | None = None) -> Tensor:
        """x0 ~ N(0, I) of shape (n, C, h, w), drawn on the generator's device (as the pipeline does), in fp32."""
        device = generator.device if generator is not None else torch.device("cpu")
        x = torch.randn(n, *self.event_shape, generator=generator, device=device)
        return x.to(self.transformer.device)

    def make_critic(self, cond=None) -> LatentCritic:
        """AC-Flow's critic on latents; it reads the pooled text embedding when ``cond`` is given (theory §7.4)."""
        pooled_dim = cond.pooled.shape[-1] if cond is not None else None
        return LatentCritic(self.event_shape[0], pooled_dim=pooled_dim).to(self.transformer.device)

    def make_value_correction(self, cond=None) -> LatentCorrection:
        """VGG-Flow's correction ν_φ on latents, zero at initialisation (theory §6.3)."""
        return LatentCorrection(self.event_shape[0]).to(self.transformer.device)

    def train(self, mode: bool = True) -> "SD3Flow":
        """The transformer stays in eval mode (no dropout): training only changes which parameters get updated."""
        super().train(mode)
        self.transformer.eval()
        return self


