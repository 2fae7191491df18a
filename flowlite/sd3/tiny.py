"""Tiny random Stable Diffusion 3 and 3.5 pipelines, built from configs with offline tokenizers (theory §12.1).

Same components and shapes as the real models (16 latent channels, patch 2, two CLIP encoders and T5, the VAE's
scaling 1.5305 and shift 0.0609), small enough that a 4-step 32x32 image takes tens of milliseconds on one CPU
thread. Nothing is downloaded: the tokenizers are built from in-memory character vocabularies. Tests save them with
``save_pretrained`` and load them back through :func:`flowlite.sd3.load_sd3`, the loader users call with a hub id.

``variant="sd3.5"`` exercises SD3.5's own code paths: a dual-attention block (``dual_attention_layers``), RMS
q/k normalisation (``qk_norm="rms_norm"``), and CLIP widths (16 + 24) narrower than T5's (64), so
``encode_prompt`` pads the CLIP states up to the joint width, as with the real 768 + 1280 < 4096.
"""

from __future__ import annotations

import torch

from flowlite.errors import FlowliteError
from flowlite.sd3.loading import freeze_pipeline
from flowlite.text import tiny_clip_text_config, tiny_clip_tokenizer, tiny_t5_tokenizer

# per variant: the two CLIP widths (hidden = projection), T5's width (= joint attention width) and the SD3.5 blocks
_VARIANTS = {
    "sd3": {"clip": (32, 32), "t5": 32, "transformer": {}},
    "sd3.5": {"clip": (16, 24), "t5": 64, "transformer": {"dual_attention_layers": (0,), "qk_norm": "rms_norm"}},
}


def build_tiny_sd3(seed: int = 0, t5: bool = True, sample_size: int = 16, num_layers: int = 2, shift: float = 3.0,
                   variant: str = "sd3"):
    """A ``StableDiffusion3Pipeline`` with random weights: latents (16, sample_size, sample_size), VAE factor 2
    (default images 32x32), patch 2, ``num_layers`` joint blocks, scheduler shift 3 (SD3-medium, SD3.5). All modules
    in eval mode with gradients off, as :func:`~flowlite.sd3.load_sd3` returns them."""
    from diffusers import (AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel,
                           StableDiffusion3Pipeline)
    from transformers import CLIPTextModelWithProjection, T5Config, T5EncoderModel

    if variant not in _VARIANTS:
        raise FlowliteError(f"unknown tiny SD3 variant {variant!r}; accepted: {', '.join(_VARIANTS)}")
    spec = _VARIANTS[variant]
    (clip_1, clip_2), width = spec["clip"], spec["t5"]
    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(
        sample_size=sample_size, patch_size=2, in_channels=16, num_layers=num_layers, attention_head_dim=8,
        num_attention_heads=4, joint_attention_dim=width, caption_projection_dim=32,
        pooled_projection_dim=clip_1 + clip_2, out_channels=16, pos_embed_max_size=max(32, sample_size),
        **spec["transformer"])
    vae = AutoencoderKL(
        block_out_channels=(8, 16), in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=1, latent_channels=16, norm_num_groups=4,
        use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5305,
        sample_size=2 * sample_size)
    text_encoder = CLIPTextModelWithProjection(tiny_clip_text_config(clip_1, clip_1))
    text_encoder_2 = CLIPTextModelWithProjection(tiny_clip_text_config(clip_2, clip_2))
    text_encoder_3 = tokenizer_3 = None
    if t5:
        tokenizer_3 = tiny_t5_tokenizer()
        text_encoder_3 = T5EncoderModel(T5Config(vocab_size=len(tokenizer_3), d_model=width, d_kv=8, d_ff=37,
                                                 num_layers=2, num_heads=4, pad_token_id=0, eos_token_id=1,
                                                 decoder_start_token_id=0))
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=shift), vae=vae,
        text_encoder=text_encoder, tokenizer=tiny_clip_tokenizer(), text_encoder_2=text_encoder_2,
        tokenizer_2=tiny_clip_tokenizer(), text_encoder_3=text_encoder_3, tokenizer_3=tokenizer_3)
    pipe.set_progress_bar_config(disable=True)
    return freeze_pipeline(pipe)
