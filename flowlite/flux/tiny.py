"""A tiny random FLUX.1 pipeline, built from configs with offline tokenizers (theory §12.1).

Same components as FLUX.1-dev: a ``FluxTransformer2DModel`` with double- and single-stream blocks, rotary position
ids over (text, row, column) and a guidance embedding; CLIP (pooled) and T5 text encoders; a 16-channel VAE with
FLUX's scaling 0.3611 and shift 0.1159; a dynamically shifted scheduler. Saved with ``save_pretrained`` and loaded
back through :func:`flowlite.flux.load_flux`, as users load a hub id.
"""

from __future__ import annotations

import torch

from flowlite.sd3.loading import freeze_pipeline
from flowlite.text import tiny_clip_text_config, tiny_clip_tokenizer, tiny_t5_tokenizer


def build_tiny_flux(seed: int = 0, sample_size: int = 16, guidance_embeds: bool = True):
    """A ``FluxPipeline`` with random weights: latents (16, sample_size, sample_size), VAE factor 2 (default images
    32x32), one double- and one single-stream block, CLIP width 32, T5 width 48; eval mode, gradients off."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel, T5Config, T5EncoderModel

    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=64, num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=48, pooled_projection_dim=32, guidance_embeds=guidance_embeds, axes_dims_rope=(4, 6, 6))
    vae = AutoencoderKL(
        block_out_channels=(8, 16), in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=1, latent_channels=16, norm_num_groups=4,
        use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.1159, scaling_factor=0.3611,
        sample_size=2 * sample_size)
    tokenizer_2 = tiny_t5_tokenizer()
    text_encoder_2 = T5EncoderModel(T5Config(vocab_size=len(tokenizer_2), d_model=48, d_kv=8, d_ff=37, num_layers=2,
                                             num_heads=4, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0))
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                                base_image_seq_len=16, max_image_seq_len=256)
    pipe = FluxPipeline(scheduler=scheduler, vae=vae, text_encoder=CLIPTextModel(tiny_clip_text_config(32, 32)),
                        tokenizer=tiny_clip_tokenizer(), text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2,
                        transformer=transformer)
    pipe.default_sample_size = sample_size  # FluxPipeline's own default (128) is FLUX.1's 1024 px
    pipe.set_progress_bar_config(disable=True)
    return freeze_pipeline(pipe)
