"""Stable Diffusion 3 behind the ``FlowModel`` seam (DESIGN §2; spec §1.2, §3.5).

SD3 works in σ = 1 - t (σ = 1 is noise), feeds the transformer ``timestep = 1000·σ`` and predicts
w = ε - x_data = dx/dσ. Paper time predicts v = dx/dt, so

    v(x, t) = -w(x, timestep = 1000·(1 - t)),        x̂1 = x + (1 - t) v = x - σ w.

That conversion lives in :meth:`SD3Flow._sd3_output` and nowhere else: every method sees paper time.

Pieces: :class:`PromptEmbeddings` (the ``cond`` object), :class:`PromptCache` (encode once, then free the text
encoders), :class:`SD3Flow` (LoRA adapter, CFG, base with the adapter off), :func:`load_sd3` (hub id or folder),
:func:`pipeline_grid` (the scheduler's shifted σ grid in paper time), latents ↔ images through the VAE.
The tiny random pipeline for tests is in ``sd3_tiny.py``; LoRA files in the diffusers format in ``sd3_lora.py``.
"""

from __future__ import annotations

import json
import re
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Iterator, Sequence

import torch
from torch import Tensor, nn

from flowlite.config import pick_device
from flowlite.errors import FlowliteError
from flowlite.flows import FlowModel
from flowlite.paths import batch_time, sd3_sigma_from_time, time_from_sd3_sigma

# diffusers' train_dreambooth_lora_sd3.py defaults: rank 4, alpha = rank, gaussian init, these attention projections.
LORA_TARGETS = ("attn.add_k_proj", "attn.add_q_proj", "attn.add_v_proj", "attn.to_add_out",
                "attn.to_k", "attn.to_out.0", "attn.to_q", "attn.to_v")


# ------------------------------------------------------------------------------------------- conditioning
@dataclass
class PromptEmbeddings:
    """The ``cond`` object of SD3: text embeddings for a batch of prompts (negatives for CFG, may be None).

    ``prompt_embeds`` (B, L, D) and ``pooled`` (B, P) come from ``StableDiffusion3Pipeline.encode_prompt``.
    Methods stack states time-major (n·B, ...); :meth:`for_batch` tiles the embeddings to match.
    """

    prompt_embeds: Tensor
    pooled: Tensor
    negative_prompt_embeds: Tensor | None = None
    negative_pooled: Tensor | None = None
    prompts: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return self.prompt_embeds.shape[0]

    @property
    def has_negative(self) -> bool:
        return self.negative_prompt_embeds is not None

    def _map(self, fn) -> "PromptEmbeddings":
        changes = {f.name: fn(getattr(self, f.name)) for f in fields(self)
                   if torch.is_tensor(getattr(self, f.name))}
        return replace(self, **changes)

    def repeat_batch(self, times: int) -> "PromptEmbeddings":
        """The batch stacked ``times`` over itself (time-major), as ``flows.repeat_cond`` expects."""
        out = self._map(lambda x: x.repeat(times, *([1] * (x.ndim - 1))))
        out.prompts = list(self.prompts) * times
        return out

    def for_batch(self, n: int) -> "PromptEmbeddings":
        """Embeddings for a batch of n states: as is when n = B, tiled when n is a multiple of B."""
        b = len(self)
        if n == b:
            return self
        if n % b:
            raise FlowliteError(f"a batch of {n} states cannot use conditioning for {b} prompts "
                                "(the batch must be a multiple of the number of prompts)")
        return self.repeat_batch(n // b)

    def to(self, device=None, dtype=None) -> "PromptEmbeddings":
        return self._map(lambda x: x.to(device=device, dtype=dtype))


def prompts_for_batch(cond, n: int) -> list[str]:
    """The prompt text of each of n samples (rewards that read text: PickScore, CLIPScore)."""
    if isinstance(cond, PromptEmbeddings):
        return cond.for_batch(n).prompts
    if isinstance(cond, str):
        return [cond] * n
    if isinstance(cond, (list, tuple)) and cond and all(isinstance(p, str) for p in cond):
        if n % len(cond):
            raise FlowliteError(f"{len(cond)} prompts cannot be spread over a batch of {n}")
        return list(cond) * (n // len(cond))
    raise FlowliteError("this reward needs prompts: pass a PromptEmbeddings (from PromptCache), a string or a list "
                        f"of strings as cond, got {type(cond).__name__}")


def check_prompts(prompts) -> list[str]:
    """A non-empty list of strings (a single string becomes a list of one)."""
    prompts = [prompts] if isinstance(prompts, str) else list(prompts or [])
    if not prompts:
        raise FlowliteError("the prompt list is empty; give at least one prompt")
    if not all(isinstance(p, str) for p in prompts):
        raise FlowliteError("prompts must be strings")
    return prompts


class PromptCache:
    """Encodes prompts with the pipeline's three text encoders once and keeps the rows, so the encoders can be freed
    (:meth:`free_text_encoders`) before training. ``negative_prompt`` (default "") is SD3's unconditional branch."""

    def __init__(self, pipe, max_sequence_length: int = 256, negative_prompt: str = "", chunk: int = 16):
        self.pipe = pipe
        self.chunk = chunk
        self.max_sequence_length = max_sequence_length
        self.negative_prompt = negative_prompt
        self._rows: dict[str, tuple[Tensor, ...]] = {}

    @torch.no_grad()
    def _encode(self, prompts: list[str]) -> None:
        if self.pipe.text_encoder is None:
            raise FlowliteError(f"prompts {prompts[:3]} are not cached and the text encoders were freed; "
                                "encode every prompt before free_text_encoders()")
        for start in range(0, len(prompts), self.chunk):  # chunks bound the text encoders' memory
            chunk = prompts[start:start + self.chunk]
            pe, npe, ppe, nppe = self.pipe.encode_prompt(
                chunk, chunk, chunk, device=self.pipe.device, do_classifier_free_guidance=True,
                negative_prompt=[self.negative_prompt] * len(chunk), max_sequence_length=self.max_sequence_length)
            for i, p in enumerate(chunk):
                self._rows[p] = (pe[i], ppe[i], npe[i], nppe[i])

    def __call__(self, prompts: str | Sequence[str]) -> PromptEmbeddings:
        """Embeddings for ``prompts`` (one row each, in order), encoding only the ones not seen before."""
        prompts = check_prompts(prompts)
        missing = list(dict.fromkeys(p for p in prompts if p not in self._rows))
        if missing:
            self._encode(missing)
        rows = [self._rows[p] for p in prompts]
        pe, ppe, npe, nppe = (torch.stack(col) for col in zip(*rows))
        return PromptEmbeddings(pe, ppe, npe, nppe, prompts=list(prompts))

    def free_text_encoders(self) -> None:
        """Drop the three text encoders from the pipeline (their memory is freed; cached prompts still work)."""
        for name in ("text_encoder", "text_encoder_2", "text_encoder_3"):
            setattr(self.pipe, name, None)


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
    """A ``FlowModel`` over diffusers' ``SD3Transformer2DModel`` with a peft LoRA adapter (spec §1.2, §3.5).

    v_θ(x, t, c) = -w_cfg,  w_cfg = sg(w_u) + s (w_c - sg(w_u))  with  w = transformer(x, 1000·(1 - t), c):
    the parameter gradient flows through the conditional branch only (spec §3.5, the VGG-Flow code).
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

    # ---------------------------------------------------------------- the one σ ↔ t conversion
    def _sd3_output(self, x: Tensor, t: Tensor, prompt_embeds: Tensor, pooled: Tensor) -> Tensor:
        """w = transformer(x, timestep = 1000·σ, c) with σ = 1 - t, in x's dtype."""
        dtype = self.transformer.dtype
        sigma = sd3_sigma_from_time(batch_time(t, x))
        w = self.transformer(hidden_states=x.to(dtype), timestep=(1000 * sigma).to(dtype),
                             encoder_hidden_states=prompt_embeds.to(dtype), pooled_projections=pooled.to(dtype),
                             return_dict=False)[0]
        return w.to(x.dtype)

    def _guided(self, x: Tensor, t: Tensor | float, cond: PromptEmbeddings, detach_uncond: bool) -> Tensor:
        if not isinstance(cond, PromptEmbeddings):
            raise FlowliteError(f"SD3Flow needs PromptEmbeddings as cond (from PromptCache), got {type(cond).__name__}")
        cond = cond.for_batch(x.shape[0])
        t = batch_time(t, x)
        if not (cond.has_negative and self.guidance_scale > 1.0):
            return -self._sd3_output(x, t, cond.prompt_embeds, cond.pooled)
        s = self.guidance_scale
        if detach_uncond and torch.is_grad_enabled():
            with torch.no_grad():  # sg(w_u): no graph kept for the unconditional branch
                w_u = self._sd3_output(x, t, cond.negative_prompt_embeds, cond.negative_pooled)
            w_c = self._sd3_output(x, t, cond.prompt_embeds, cond.pooled)
        else:  # one batched call [uncond, cond], as the pipeline does
            both = self._sd3_output(torch.cat([x, x]), torch.cat([t, t]),
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

    def train(self, mode: bool = True) -> "SD3Flow":
        """The transformer stays in eval mode (no dropout): training only changes which parameters get updated."""
        super().train(mode)
        self.transformer.eval()
        return self


# ------------------------------------------------------------------------------------------- grids, VAE
def pipeline_grid(scheduler, steps: int) -> Tensor:
    """The scheduler's own σ grid for ``steps`` steps (shifted, SD3-medium: shift 3), in paper time t = 1 - σ."""
    scheduler.set_timesteps(steps)
    return time_from_sd3_sigma(scheduler.sigmas.to(torch.float64).cpu())


def decode_latents(vae: nn.Module, latents: Tensor) -> Tensor:
    """Images in [0, 1], (B, 3, H, W): vae.decode(z / scaling + shift) mapped from [-1, 1] and clamped (spec §1.2).
    Differentiable; computed in the VAE's dtype and returned in the latents' dtype."""
    z = latents.to(vae.dtype) / vae.config.scaling_factor + vae.config.shift_factor
    images = vae.decode(z, return_dict=False)[0]
    return (images / 2 + 0.5).clamp(0, 1).to(latents.dtype)


def encode_images(vae: nn.Module, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Latents z = (sample of vae.encode(2·img - 1) - shift) · scaling, from images in [0, 1]."""
    dist = vae.encode((2 * images - 1).to(vae.dtype)).latent_dist
    return ((dist.sample(generator) - vae.config.shift_factor) * vae.config.scaling_factor).to(images.dtype)


# ------------------------------------------------------------------------------------------- loading
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def check_pretrained(pretrained: str | Path, what: str) -> str:
    """An existing local path, or a string shaped like a hub id (owner/name); anything else is a missing folder."""
    path = Path(pretrained).expanduser()
    if path.exists():
        return str(path)
    if _HUB_ID.match(str(pretrained)):
        return str(pretrained)
    raise FlowliteError(f"{what} weight folder {str(pretrained)!r} not found; pass an existing folder (saved with "
                        "save_pretrained) or a hub id such as owner/name")


def freeze_pipeline(pipe):
    """eval() and requires_grad_(False) on every module of a pipeline (modules built from configs start in train
    mode, and T5's dropout would make outputs random: ecosystem §2)."""
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
    """A pipeline saved without T5 lists text_encoder_3 as [null, null] (ecosystem §2 pitfall 4)."""
    index = json.loads((folder / "model_index.json").read_text())
    return index.get("text_encoder_3", [None, None])[0] is None
