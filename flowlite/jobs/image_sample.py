"""``python -m flowlite sd3-sample``: images from a trained LoRA through diffusers, the path users take after training.

``StableDiffusion3Pipeline`` (or ``FluxPipeline``) ``.from_pretrained(base)`` + ``load_lora_weights(lora folder)`` + one call per prompt with
``generator=torch.Generator().manual_seed(seed)``: with the run's steps, guidance and sizes (read from its
``config.json``) this reproduces the training-time evaluation image of the same prompt and seed.
"""

from __future__ import annotations

from pathlib import Path

import torch

from flowlite.errors import FlowliteError
from flowlite.jobs.image_settings import CONFIG_FILE, LORA_DIR, PRECISIONS, TINY_BASE_DIR
from flowlite.jobs.run_folder import saved_config
from flowlite.jobs.validate import check_lora_file
from flowlite.sd3.lora import WEIGHT_NAME


def find_lora(run_or_folder: str | Path, checkpoint: str | None = None) -> tuple[Path, dict]:
    """(folder holding pytorch_lora_weights.safetensors, the run's config). ``checkpoint``: None for the final LoRA,
    ``latest`` or a step number for one under ``checkpoints/``."""
    from flowlite.checkpoint import PREFIX, latest_checkpoint

    run = Path(run_or_folder)
    if not (run / CONFIG_FILE).is_file():
        raise FlowliteError(f"--lora {str(run)!r} is not a run folder of `python -m flowlite sd3` "
                            f"(no {CONFIG_FILE} in it)")
    config = saved_config(run, "--lora")
    if checkpoint is None:
        folder = run / LORA_DIR
        if not (folder / WEIGHT_NAME).is_file():  # a run that stopped early: its newest checkpoint
            last = latest_checkpoint(run / "checkpoints")
            folder = last / LORA_DIR if last is not None else folder
    elif checkpoint == "latest":
        last = latest_checkpoint(run / "checkpoints")
        if last is None:
            raise FlowliteError(f"--checkpoint latest: no checkpoint in {str(run / 'checkpoints')!r}")
        folder = last / LORA_DIR
    else:
        folder = run / "checkpoints" / f"{PREFIX}{int(checkpoint):07d}" / LORA_DIR
    if not (folder / WEIGHT_NAME).is_file():
        raise FlowliteError(f"no LoRA weights at {str(folder / WEIGHT_NAME)!r}")
    check_lora_file(folder / WEIGHT_NAME)
    return folder, config


def load_pipeline(run: str | Path, config: dict, lora_folder: Path, device: str = "auto"):
    """The run's base (its saved tiny base for --tiny runs) with the LoRA loaded by diffusers."""
    from flowlite.jobs.image_models import MODELS

    base = Path(run) / TINY_BASE_DIR if config["tiny"] else config["pretrained"]
    dtype = PRECISIONS[config["mixed_precision"]] if config["mixed_precision"] != "no" else torch.float32
    pipe = MODELS[config.get("model", "sd3")].load(base, dtype=dtype, device=device, drop_t5=config["drop_t5"])
    pipe.load_lora_weights(str(lora_folder))
    pipe.set_progress_bar_config(disable=True)
    return pipe


@torch.no_grad()
def sample_images(pipe, config: dict, prompts: list[str], seed: int, solver_steps: int | None = None,
                  guidance_scale: float | None = None) -> torch.Tensor:
    """Images in [0, 1], (B, 3, H, W): one pipeline call per prompt with a generator seeded ``seed``."""
    images = []
    for prompt in prompts:
        out = pipe(prompt, num_inference_steps=solver_steps or config["eval_steps"],
                   guidance_scale=config["guidance_scale"] if guidance_scale is None else guidance_scale,
                   height=config["height"], width=config["width"], max_sequence_length=config["max_sequence_length"],
                   generator=torch.Generator().manual_seed(seed), output_type="pt")
        images.append(out.images.float().cpu())
    return torch.cat(images)


def run_sample(lora: str, prompts: list[str], seed: int, output: str | None = None, checkpoint: str | None = None,
               solver_steps: int | None = None, guidance_scale: float | None = None) -> list[Path]:
    from flowlite.jobs.image_eval import save_png, to_uint8
    from flowlite.text import check_prompts

    prompts = check_prompts(prompts)
    folder, config = find_lora(lora, checkpoint)
    pipe = load_pipeline(lora, config, folder)
    pixels = to_uint8(sample_images(pipe, config, prompts, seed, solver_steps, guidance_scale))
    out = Path(output) if output else Path(lora) / "samples"
    paths = []
    for i, image in enumerate(pixels):
        path = out / f"sample{i:02d}_seed{seed}.png" if out.suffix != ".png" else out
        if out.suffix == ".png" and len(pixels) > 1:
            path = out.with_name(f"{out.stem}_{i:02d}.png")
        save_png(image, path)
        paths.append(path)
    return paths
