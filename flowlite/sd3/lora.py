"""SD3Flow's LoRA adapter as a file in the diffusers format (theory §12.2).

Saving goes through the family's pipeline class (``StableDiffusion3Pipeline``, ``FluxPipeline``: ``flow.PIPELINE``) ``.save_lora_weights`` with ``get_peft_model_state_dict`` straight in
(never ``convert_state_dict_to_diffusers``, which silently drops the to_q/k/v/out weights on SD3) and the adapter's
config as metadata, so a LoRA with alpha ≠ rank loads back with its own scale. The file is what
``pipe.load_lora_weights(folder)`` reads: fine-tuned weights work in any diffusers pipeline.

ComfyUI reads the same ``transformer.<module>.lora_A/B.weight`` keys but not the metadata: it takes each module's
scale alpha/rank from a ``<module>.alpha`` tensor (1 when absent), so a LoRA with alpha ≠ rank would load at the wrong
strength. ``save_lora(..., comfyui=True)`` also writes ``lora_comfyui.safetensors``: the same keys plus one fp32
``alpha`` scalar per module (the job's LoRAs have alpha = rank, where both files give the same result). The layout
was checked by reading ComfyUI's LoRA loader (``comfy/lora.py``): for SD3 and FLUX models it maps each diffusers
module name under ``transformer.`` to its own weight and reads ``<key>.lora_B.weight``, ``<key>.lora_A.weight`` and
``<key>.alpha``; ComfyUI itself was not run (it is not installable here).
"""

from __future__ import annotations

from pathlib import Path

import torch

from flowlite.errors import FlowliteError
from flowlite.sd3.flow import SD3Flow

WEIGHT_NAME = "pytorch_lora_weights.safetensors"
COMFYUI_NAME = "lora_comfyui.safetensors"


def lora_state_dict(flow: SD3Flow) -> dict:
    """The adapter's weights as peft names them (``transformer_blocks.0.attn.to_q.lora_A.weight`` ...)."""
    from peft.utils import get_peft_model_state_dict

    return get_peft_model_state_dict(flow.transformer, adapter_name=flow.adapter_name)


def lora_metadata(flow: SD3Flow) -> dict:
    """The adapter's LoraConfig as a dict (rank, alpha, targets): the loader needs it when alpha ≠ rank."""
    return flow.transformer.peft_config[flow.adapter_name].to_dict()


def comfyui_state_dict(flow: SD3Flow) -> dict:
    """``transformer.<module>.lora_A/B.weight`` as diffusers writes them, plus ``transformer.<module>.alpha`` (fp32
    scalar) for every adapted module: what ComfyUI's LoRA loader reads."""
    config = flow.transformer.peft_config[flow.adapter_name]
    state = {f"transformer.{k}": v.detach().contiguous() for k, v in lora_state_dict(flow).items()}
    modules = {k[:-len(".lora_A.weight")] for k in state if k.endswith(".lora_A.weight")}
    for module in modules:
        inner = module[len("transformer."):]
        rank = config.rank_pattern.get(inner, config.r)
        alpha = config.alpha_pattern.get(inner, config.lora_alpha)
        if state[f"{module}.lora_A.weight"].shape[0] != rank:
            raise FlowliteError(f"LoRA module {module} has rank {state[f'{module}.lora_A.weight'].shape[0]}, "
                                f"its config says {rank}")
        state[f"{module}.alpha"] = torch.tensor(float(alpha))
    return state


def save_lora(flow: SD3Flow, directory: str | Path, comfyui: bool = False) -> Path:
    """Write ``directory/pytorch_lora_weights.safetensors`` in the diffusers format (and, with ``comfyui``,
    ``directory/lora_comfyui.safetensors`` with alpha tensors); returns the diffusers file."""
    import diffusers

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in lora_state_dict(flow).items()}
    getattr(diffusers, flow.PIPELINE).save_lora_weights(save_directory=str(directory), transformer_lora_layers=state,
                                               transformer_lora_adapter_metadata=lora_metadata(flow),
                                               weight_name=WEIGHT_NAME)
    if comfyui:
        from safetensors.torch import save_file

        save_file(comfyui_state_dict(flow), str(directory / COMFYUI_NAME), metadata={"format": "pt"})
    return directory / WEIGHT_NAME


def load_lora(flow: SD3Flow, directory: str | Path) -> None:
    """Load a LoRA saved by :func:`save_lora` (or any diffusers SD3 LoRA with the same targets) into ``flow``'s
    adapter in place, e.g. to resume training. The adapter's rank and targets must match the file's."""
    import diffusers
    from diffusers.utils import convert_unet_state_dict_to_peft
    from peft import set_peft_model_state_dict

    directory = Path(directory)
    if not (directory / WEIGHT_NAME).is_file():
        raise FlowliteError(f"no LoRA weights in {str(directory)!r} (expected {WEIGHT_NAME})")
    state = getattr(diffusers, flow.PIPELINE).lora_state_dict(str(directory), weight_name=WEIGHT_NAME)
    prefix = "transformer."
    state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    result = set_peft_model_state_dict(flow.transformer, convert_unet_state_dict_to_peft(state),
                                       adapter_name=flow.adapter_name)
    unexpected = [k for k in getattr(result, "unexpected_keys", None) or [] if flow.adapter_name in k or "lora" in k]
    if unexpected:
        raise FlowliteError(f"LoRA file {str(directory)!r} does not fit this adapter: unexpected keys "
                            f"{unexpected[:3]}...")
