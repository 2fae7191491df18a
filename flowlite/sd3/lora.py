"""SD3Flow's LoRA adapter as a file in the diffusers format (theory §12.2).

Saving goes through ``StableDiffusion3Pipeline.save_lora_weights`` with ``get_peft_model_state_dict`` straight in
(never ``convert_state_dict_to_diffusers``, which silently drops the to_q/k/v/out weights on SD3) and the adapter's
config as metadata, so a LoRA with alpha ≠ rank loads back with its own scale. The file is what
``pipe.load_lora_weights(folder)`` reads: fine-tuned weights work in any diffusers pipeline.
"""

from __future__ import annotations

from pathlib import Path

from flowlite.errors import FlowliteError
from flowlite.sd3.flow import SD3Flow

WEIGHT_NAME = "pytorch_lora_weights.safetensors"


def lora_state_dict(flow: SD3Flow) -> dict:
    """The adapter's weights as peft names them (``transformer_blocks.0.attn.to_q.lora_A.weight`` ...)."""
    from peft.utils import get_peft_model_state_dict

    return get_peft_model_state_dict(flow.transformer, adapter_name=flow.adapter_name)


def lora_metadata(flow: SD3Flow) -> dict:
    """The adapter's LoraConfig as a dict (rank, alpha, targets): the loader needs it when alpha ≠ rank."""
    return flow.transformer.peft_config[flow.adapter_name].to_dict()


def save_lora(flow: SD3Flow, directory: str | Path) -> Path:
    """Write ``directory/pytorch_lora_weights.safetensors`` in the diffusers format; returns the file."""
    from diffusers import StableDiffusion3Pipeline

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in lora_state_dict(flow).items()}
    StableDiffusion3Pipeline.save_lora_weights(save_directory=str(directory), transformer_lora_layers=state,
                                               transformer_lora_adapter_metadata=lora_metadata(flow),
                                               weight_name=WEIGHT_NAME)
    return directory / WEIGHT_NAME


def load_lora(flow: SD3Flow, directory: str | Path) -> None:
    """Load a LoRA saved by :func:`save_lora` (or any diffusers SD3 LoRA with the same targets) into ``flow``'s
    adapter in place, e.g. to resume training. The adapter's rank and targets must match the file's."""
    from diffusers import StableDiffusion3Pipeline
    from diffusers.utils import convert_unet_state_dict_to_peft
    from peft import set_peft_model_state_dict

    directory = Path(directory)
    if not (directory / WEIGHT_NAME).is_file():
        raise FlowliteError(f"no LoRA weights in {str(directory)!r} (expected {WEIGHT_NAME})")
    state = StableDiffusion3Pipeline.lora_state_dict(str(directory), weight_name=WEIGHT_NAME)
    prefix = "transformer."
    state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    result = set_peft_model_state_dict(flow.transformer, convert_unet_state_dict_to_peft(state),
                                       adapter_name=flow.adapter_name)
    unexpected = [k for k in getattr(result, "unexpected_keys", None) or [] if flow.adapter_name in k or "lora" in k]
    if unexpected:
        raise FlowliteError(f"LoRA file {str(directory)!r} does not fit this adapter: unexpected keys "
                            f"{unexpected[:3]}...")
