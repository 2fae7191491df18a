"""``python -m flowlite sd3``: reward fine-tuning of an image model (``--model sd3``, ``sd3.5``, ``flux``) with LoRA
as a real training job.

One job, from one CPU (``--tiny``) to many GPUs (``accelerate launch``), built from the pieces every notebook uses:
the family's loader → prompt cache (text encoders freed) → ``SD3Flow`` / ``FluxFlow`` (LoRA) → a registered method → the one training
loop (``train.train``) with checkpoints, resume, CSV/TensorBoard, evaluation (``image_eval.Evaluator``).

Data parallel: each rank samples its own trajectories (its own prompts and noise), computes its reward and adjoint,
and backpropagates its own loss; the loop's ``Accelerator`` (built here from ``--grad-accum`` and
``--mixed-precision``, ``flowlite.parallel.processes``) wraps the method in DistributedDataParallel, which averages
the gradients in the backward pass of the last micro-batch, so the LoRA stays identical on every rank. The logged loss
is the mean over ranks. With ``--fsdp`` the transformer is sharded instead (torch's FSDP2, ``flowlite.sharding``, one
unit per block): every rank evaluates (rank 0 writes), and checkpoints and the LoRA file are gathered from the shards
on every rank before rank 0 writes them. Trackers: TensorBoard and wandb (offline unless ``WANDB_MODE`` says otherwise) when installed,
through ``accelerator.log``.

Randomness is a pure function of (seed, step, micro-batch, rank): every micro-batch reseeds the global RNG, so
``--resume latest`` continues exactly on every rank, whatever the checkpoint saved.

Settings, defaults and per-method recipes: ``image_settings.py`` (one table) and ``flowlite.sd3.recipes`` (data keyed
by the registry's method names), printed by ``python -m flowlite sd3 --help`` and documented in the README.
"""

from __future__ import annotations

import json
import resource
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from flowlite.checkpoint import write_folder_atomically
from flowlite.errors import FlowliteError
from flowlite.jobs.image_settings import (CONFIG_FILE, LORA_DIR, PRECISIONS, TINY_BASE_DIR, read_prompts,
                                          reproduce_command)
from flowlite.jobs.image_processes import job_processes, shard_units, tracker_init
from flowlite.parallel import Processes, say
from flowlite.sharding import gathered, is_sharded
from flowlite.sd3.lora import save_lora

# ------------------------------------------------------------------------------------------- building
def step_seed(seed: int, step: int, micro: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, step, micro, rank]).generate_state(1)[0])


@dataclass
class Job:
    config: dict
    pipe: object
    flow: object
    reward: object
    cache: object
    method: object
    optimizer: torch.optim.Optimizer
    train_prompts: list[str]
    evaluator: object
    procs: Processes


def build_job(config: dict, procs: Processes) -> Job:
    """Everything from the config, writing nothing: pipeline, cached prompts, LoRA flow, reward, method, optimizer."""
    from flowlite.config import seed_everything
    from flowlite.jobs.image_eval import Evaluator
    from flowlite.methods import build_method
    from flowlite.rewards.registry import image_reward
    from flowlite.jobs.image_models import MODELS, base_pipeline
    from flowlite.sd3 import LORA_TARGETS, LatentReward, method_options

    train_prompts = read_prompts(config["prompts"])
    eval_prompts = read_prompts(config["eval_prompts"], "--eval-prompts")[: config.get("eval_prompts_limit")]
    dtype = PRECISIONS[config["mixed_precision"]]
    seed_everything(config["seed"])  # the same LoRA, critic and value-network initialisation on every rank
    family = MODELS[config.get("model", "sd3")]
    pipe = base_pipeline(family, config, dtype, procs.device)
    extra = {"head": config["reward_head"]} if config.get("reward_head") else {}
    if extra and config["reward"] != "aesthetic":
        raise FlowliteError("--reward-head applies to --reward aesthetic only")
    if config.get("reward_tokenizer"):
        if config["reward"] not in ("pickscore", "clipscore"):
            raise FlowliteError("--reward-tokenizer applies to --reward pickscore and clipscore only")
        extra["tokenizer"] = config["reward_tokenizer"]
    try:
        scorer = image_reward(config["reward"], pretrained=config["reward_pretrained"], tiny=config["tiny"],
                              seed=config["seed"] + 1, **extra)
    except OSError as err:  # an unreachable hub id or an incomplete folder
        raise FlowliteError(f"could not load the {config['reward']} reward "
                            f"({config['reward_pretrained'] or 'its default weights'}): {err}") from None
    reward = LatentReward(load_reward_vae(config, procs.device) or pipe.vae, scorer).to(procs.device)
    eval_reward = reward if reward.vae is pipe.vae else LatentReward(pipe.vae, scorer).to(procs.device)
    cache = family.prompt_cache(pipe, config["max_sequence_length"])
    cache(train_prompts + eval_prompts)
    if config["gradient_checkpointing"]:
        pipe.transformer.enable_gradient_checkpointing()
    seed_everything(config["seed"])
    flow = family.flow(pipe, config["height"], config["width"], guidance_scale=config["guidance_scale"],
                       rank=config["rank"], alpha=config["rank"], target_modules=LORA_TARGETS)
    grid = flow.pipeline_grid(pipe.scheduler, config["solver_steps"])
    cond = cache(train_prompts[:1]).for_batch(config["batch_size"])
    options = method_options(config["method"], config["batch_size"], config["solver_steps"], grid=grid, cond=cond)
    options.update(config["method_options"])
    method, _ = build_method(config["method"], flow, reward, config["beta"] or 0.0, **options)
    method.to(procs.device)
    optimizer = torch.optim.AdamW(method.parameter_groups(), lr=config["lr"], betas=tuple(config["adam_betas"]),
                                  weight_decay=config["weight_decay"])
    evaluator = Evaluator(flow, eval_reward, cache, eval_prompts, list(range(config["eval_seeds"])),
                          flow.pipeline_grid(pipe.scheduler, config["eval_steps"]))
    return Job(config, pipe, flow, reward, cache, method, optimizer, train_prompts, evaluator, procs)


def load_reward_vae(config: dict, device):
    """--reward-vae: a tiny decoder (diffusers ``AutoencoderTiny``, e.g. madebyollin/taesd3) for the training reward
    only; evaluation still decodes with the pipeline's VAE. None when not asked for."""
    if not config.get("reward_vae"):
        return None
    from diffusers import AutoencoderTiny

    from flowlite.hub import check_pretrained

    source = check_pretrained(config["reward_vae"], "--reward-vae")
    try:
        return AutoencoderTiny.from_pretrained(source).to(device)
    except (OSError, ValueError) as err:
        raise FlowliteError(f"--reward-vae {source!r} is not an AutoencoderTiny folder or hub id: {err}") from None


def make_loss(job: Job):
    """loss_fn(step) for the training loop: reseed, draw this rank's prompts, the method's loss; with several
    ranks the returned value is the rank mean (the gradient stays this rank's own; DDP averages it in the backward
    pass), so every rank logs, and the NaN guard judges, the same number."""
    config, procs, calls = job.config, job.procs, {"step": -1, "micro": 0}

    def loss_fn(step: int):
        calls["micro"] = calls["micro"] + 1 if calls["step"] == step else 0
        calls["step"] = step
        torch.manual_seed(step_seed(config["seed"], step, calls["micro"], procs.rank))
        picks = torch.randint(len(job.train_prompts), (config["batch_size"],)).tolist()
        job.method.cond = job.cache([job.train_prompts[i] for i in picks])
        loss, logs = job.method.loss(step)
        if procs.world > 1:
            keys = sorted(logs)
            local = torch.tensor([float(loss.detach())] + [float(logs[k]) for k in keys], device=procs.device)
            mean = procs.mean(local)
            say(f"rank {procs.rank}/{procs.world} step {step + 1} micro {calls['micro']} local_loss "
                f"{local[0].item():.8g} mean_loss {mean[0].item():.8g}")
            loss = loss + (mean[0].to(loss.dtype) - loss.detach())
            logs = dict(zip(keys, mean[1:].tolist()))
        return loss, logs

    return loss_fn


# ------------------------------------------------------------------------------------------- running
def write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    tmp.replace(path)


def save_lora_atomically(flow, folder: Path, comfyui: bool = False) -> None:
    """The LoRA in the diffusers format, written beside ``folder`` and renamed into place."""
    write_folder_atomically(folder, lambda tmp: save_lora(flow, tmp, comfyui=comfyui))


def save_tiny_base(config: dict, folder: Path) -> None:
    """The random base pipeline of a --tiny run (rebuilt from its seed: build_tiny_sd3 is deterministic; the one in
    memory carries the LoRA adapter), saved so that sd3-sample loads it as it would a hub model."""
    from flowlite.jobs.image_models import MODELS

    pipe = MODELS[config.get("model", "sd3")].tiny(seed=config["seed"], drop_t5=config["drop_t5"])
    write_folder_atomically(folder, pipe.save_pretrained)


def _peak_memory_mib(device: torch.device) -> tuple[str, float]:
    if device.type == "cuda":
        return "GPU peak allocated", torch.cuda.max_memory_allocated(device) / 2**20
    return "process peak RSS", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def dry_run(config: dict) -> dict:
    """Build everything, run two steps (the first warms up) and one evaluation; print seconds per step and peak
    memory. Writes nothing."""
    from flowlite.train import train

    procs = job_processes(config)
    units = shard_units(config, procs)
    clock = time.perf_counter()
    job = build_job(config, procs)
    job.cache.free_text_encoders()  # as the run does: the encoders (T5-XXL ~9.5 GB in bf16) are not in its peak
    built = time.perf_counter() - clock
    if procs.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(procs.device)
    result = train(job.method, make_loss(job), job.optimizer, 2, grad_clip=config["grad_clip"], progress=False,
                   accumulate=config["grad_accum"], accelerator=procs.accelerator, shard_units=units)
    seconds = result.column("seconds")
    clock = time.perf_counter()
    job.evaluator(0)
    eval_seconds = time.perf_counter() - clock
    what, peak = _peak_memory_mib(procs.device)
    report = {"build_seconds": built, "first_step_seconds": seconds[0], "seconds_per_step": seconds[1] - seconds[0],
              "eval_seconds": eval_seconds, "peak_memory_mib": peak, "peak_memory_kind": what,
              "device": str(procs.device), "loss": result.column("loss")}
    if procs.main:
        print(f"dry run on {procs.device} ({config['method']}, {config['reward']}, batch {config['batch_size']} x "
              f"accum {config['grad_accum']}, {config['height']}x{config['width']}, "
              f"{config['mixed_precision']}): built in {built:.1f} s; first step {seconds[0]:.2f} s (warm-up), "
              f"then {report['seconds_per_step']:.2f} s/step; evaluation {eval_seconds:.2f} s; "
              f"{what} {peak:.0f} MiB")
    return report


def run_sd3(config: dict, resume: str | None = None) -> dict:
    """The training job. Returns a summary (also written to ``summary.json``)."""
    from flowlite.train import train

    out = Path(config["output"])
    procs = job_processes(config, out)
    units = shard_units(config, procs)  # --fsdp: the family's FSDP units
    job = build_job(config, procs)  # everything that can fail on bad input fails before anything is written
    if procs.main:
        out.mkdir(parents=True, exist_ok=True)
        if config["tiny"] and not (out / TINY_BASE_DIR / "model_index.json").is_file():
            save_tiny_base(config, out / TINY_BASE_DIR)
        if resume is None:
            write_json(out / CONFIG_FILE, {**config, "reproduce": reproduce_command(config),
                                           "versions": _versions(), "world_size": procs.world})
    job.cache.free_text_encoders()
    job.evaluator.out_dir = out / "eval" if procs.main else None

    def evaluate(step: int) -> dict:  # sharded, every rank runs the passes (each unit all-gathers); rank 0 writes
        return job.evaluator(step) if procs.main or units else {}

    comfyui = bool(config.get("comfyui"))  # --comfyui: also the alpha-carrying file

    def lora_files(folder: Path) -> None:
        save_lora(job.flow, folder / LORA_DIR, comfyui=comfyui)

    result = train(job.method, make_loss(job), job.optimizer, config["train_steps"], run_dir=out,
                   checkpoint_every=config["checkpoint_every"], keep_last=config["keep_last"],
                   resume=resume is not None, grad_clip=config["grad_clip"], callback=evaluate,
                   callback_every=config["eval_every"], log_every=1, progress=not config.get("quiet"),
                   desc=f"sd3 {config['method']}", accumulate=config["grad_accum"], checkpoint_files=lora_files,
                   accelerator=procs.accelerator, project="flowlite-sd3", tracker_init=tracker_init(config, out),
                   shard_units=units)
    with gathered(job.method):  # sharded: the whole LoRA on every rank (each all-gathers); otherwise a no-op
        lora = torch.cat([p.detach().reshape(-1).float() for p in job.flow.trainable_parameters()])
        summary = {"train_steps": result.step, "seconds": result.seconds, "world_size": procs.world,
                   "rank": procs.rank, "lora_max_difference_across_ranks": procs.max_difference(lora),
                   "sharded": is_sharded(job.method),
                   "last": {k: v for k, v in (result.history[-1] if result.history else {}).items()}}
        if procs.main:
            save_lora_atomically(job.flow, out / LORA_DIR, comfyui=comfyui)
            write_json(out / "summary.json", summary)
    if procs.world > 1:
        say(f"rank {procs.rank}/{procs.world} lora_max_difference_across_ranks "
            f"{summary['lora_max_difference_across_ranks']:.3g} lora_sum {lora.double().sum().item():.12g}")
        procs.accelerator.wait_for_everyone()
    return summary


def _versions() -> dict:
    import diffusers
    import peft
    import transformers

    return {"torch": torch.__version__, "diffusers": diffusers.__version__, "transformers": transformers.__version__,
            "peft": peft.__version__}
