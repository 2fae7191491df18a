"""``python -m flowlite sd3``: reward fine-tuning of Stable Diffusion 3 with LoRA as a real training job.

One job, from one CPU (``--tiny``) to many GPUs (``accelerate launch``), built from the pieces every notebook uses:
``load_sd3`` → ``PromptCache`` (text encoders freed) → ``SD3Flow`` (LoRA) → a registered method → the one training
loop (``train.train``) with checkpoints, resume, CSV/TensorBoard, evaluation (``sd3_eval.Evaluator``).

Data parallel: each rank samples its own trajectories (its own prompts and noise), computes its reward and adjoint,
and backpropagates its own loss; the gradients are averaged across ranks through accelerate before every optimizer
step, so the LoRA stays identical on every rank. The logged loss is the mean over ranks.

Randomness is a pure function of (seed, step, micro-batch, rank): every micro-batch reseeds the global RNG, so
``--resume latest`` continues exactly on every rank, whatever the checkpoint saved.

Per-method defaults follow the papers' recipes (spec §3.6, §3.8, §4.3, §6): :data:`RECIPES`, printed by
``python -m flowlite sd3 --help`` and documented in the README.
"""

from __future__ import annotations

import json
import os
import resource
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from flowlite.checkpoint import write_folder_atomically
from flowlite.errors import FlowliteError, check_beta
from flowlite.parallel import Processes, processes, say

METHOD_NAMES = ("adjoint-matching", "vgg-flow", "ac-flow", "refl", "draft")
REWARD_NAMES = ("aesthetic", "pickscore", "clipscore")
PRECISIONS = {"no": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# LoRA on the attention projections, rank 8, alpha = rank: the official VGG-Flow code (spec §3.6).
LORA_TARGETS = ("attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0")
CONFIG_FILE = "config.json"
LORA_DIR = "lora"
BASE_DIR = "base"  # --tiny: the random base pipeline, saved so that sd3-sample can load it

# Shared by every method: VGG-Flow paper's SD3 setup (spec §3.6): 20 Euler steps, CFG 5, 400 updates of an
# effective batch of 32 (here 4 per step x 8 accumulated, per process), AdamW wd 1e-2, gradient-norm clip 1.
COMMON = {"steps": 400, "batch_size": 4, "grad_accum": 8, "solver_steps": 20, "guidance_scale": 5.0, "rank": 8,
          "height": 512, "width": 512, "weight_decay": 1e-2, "grad_clip": 1.0, "adam_betas": (0.9, 0.999),
          "max_sequence_length": 256, "eval_every": 50, "eval_seeds": 8, "eval_steps": 20,
          "checkpoint_every": 50, "keep_last": 3, "mixed_precision": "bf16", "seed": 0, "gradient_checkpointing": False,
          "drop_t5": False}

RECIPES: dict[str, dict] = {
    "adjoint-matching": {
        "source": "AM paper App. G via spec §4.3 (Adam lr 2e-5, betas (0.95, 0.999), wd 1e-2, clip 1; time subset: "
                  "last 25% of steps + 10 earlier); beta = reward multiplier of AM on SD3 in the VGG paper, spec §3.8",
        "lr": 2e-5, "adam_betas": (0.95, 0.999),
        "beta": {"aesthetic": 5e3, "pickscore": 1e4, "clipscore": 1e4},
        "options": {"time_subset": "recipe", "late_fraction": 0.25, "n_early": 10}},
    "vgg-flow": {
        "source": "VGG-Flow paper, spec §3.6 (lr 5e-4, AdamW (0.9, 0.999) wd 1e-2, clip 1, eta_t = t^2, boundary "
                  "coefficient 1e4; beta = 1/lambda: aesthetic 5e4, PickScore 5e5)",
        "lr": 5e-4,
        "beta": {"aesthetic": 5e4, "pickscore": 5e5, "clipscore": 5e5},
        "options": {"eta_schedule": "quadratic", "alpha": 1e4}},
    "ac-flow": {
        "source": "no published SD3 recipe (spec §5.4 is a reconstruction): lr 1e-4 as the VGG paper's baselines "
                  "(spec §3.8), beta = 1 on batch-standardised rewards, critic warm-up 50 of 400 updates",
        "lr": 1e-4, "beta": {"aesthetic": 1.0, "pickscore": 1.0, "clipscore": 1.0},
        "options": {"warmup": 50}},
    "refl": {
        "source": "VGG paper's ReFL baseline on SD3, spec §3.8/§6: truncation step 15-20 of 20, lr 1e-4, no KL",
        "lr": 1e-4, "beta": None, "options": {"late_fraction": (0.75, 1.0)}},
    "draft": {
        "source": "DRaFT-1 (K = 1, spec §6), lr 1e-4 as the VGG paper's baselines (spec §3.8), no KL",
        "lr": 1e-4, "beta": None, "options": {"k": 1}},
}
# CLIPScore is 100·cos like PickScore (same scale), so it takes PickScore's beta (derived, not from a paper).

# --tiny: a random 16x16 SD3 on one CPU thread; a plumbing rehearsal, not a recipe (random rewards have no scale,
# so beta is 1; CFG 1 because the lean adjoint through CFG 5 blows up on the random transformer, see notebook 08).
TINY = {"steps": 4, "batch_size": 2, "grad_accum": 1, "solver_steps": 4, "guidance_scale": 1.0, "rank": 4,
        "height": 16, "width": 16, "max_sequence_length": 32, "eval_every": 2, "eval_seeds": 2, "eval_steps": 4,
        "checkpoint_every": 2, "keep_last": 2, "mixed_precision": "no", "lr": 1e-3, "beta": 1.0,
        "eval_prompts_limit": 2}
TINY_OPTIONS = {"ac-flow": {"warmup": 1}, "adjoint-matching": {"n_early": 1}}

# Keys that must match the saved config when resuming (the rest may change, e.g. more --steps).
IDENTITY = ("method", "reward", "tiny", "pretrained", "reward_pretrained", "reward_head", "reward_vae", "rank", "beta", "batch_size",
            "grad_accum", "solver_steps", "guidance_scale", "height", "width", "seed", "mixed_precision",
            "drop_t5", "lr", "max_sequence_length")


# ------------------------------------------------------------------------------------------- configuration
def read_prompts(path, flag: str = "--prompts") -> list[str]:
    """One prompt per line; blank lines and lines starting with # are skipped."""
    path = Path(path)
    if not path.is_file():
        raise FlowliteError(f"{flag} file {str(path)!r} not found")
    prompts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    prompts = [p for p in prompts if p and not p.startswith("#")]
    if not prompts:
        raise FlowliteError(f"{flag} file {str(path)!r} has no prompts (one per line; blank and # lines skipped)")
    return prompts


def resolve_config(args: dict) -> dict:
    """Flags given on the command line win, then ``--tiny``'s sizes, then the method's recipe, then COMMON."""
    method, reward = args.get("method"), args.get("reward")
    if method not in METHOD_NAMES:
        raise FlowliteError(f"unknown --method {method!r}; accepted: {', '.join(METHOD_NAMES)}")
    if reward not in REWARD_NAMES:
        raise FlowliteError(f"unknown --reward {reward!r}; accepted: {', '.join(REWARD_NAMES)}")
    tiny = bool(args.get("tiny"))
    if not tiny and not args.get("pretrained"):
        raise FlowliteError("--pretrained is required (a hub id such as stabilityai/stable-diffusion-3-medium-"
                            "diffusers or a local folder), or pass --tiny for the random CPU model")
    recipe = RECIPES[method]
    config = dict(COMMON, lr=recipe["lr"], adam_betas=recipe.get("adam_betas", COMMON["adam_betas"]),
                  beta=recipe["beta"][reward] if recipe["beta"] else None, eval_prompts_limit=None)
    if tiny:
        config.update({k: v for k, v in TINY.items() if not (k == "beta" and config["beta"] is None)})
    config.update({k: v for k, v in args.items() if v is not None})
    config["tiny"] = tiny
    config["method_options"] = {**recipe["options"], **(TINY_OPTIONS.get(method, {}) if tiny else {})}
    config["recipe_source"] = recipe["source"]
    config["adam_betas"] = list(config["adam_betas"])
    if config["beta"] is not None:
        config["beta"] = check_beta(config["beta"])
    if config["mixed_precision"] not in PRECISIONS:
        raise FlowliteError(f"unknown --mixed-precision {config['mixed_precision']!r}; accepted: "
                            f"{', '.join(PRECISIONS)}")
    config["output"] = str(config.get("output") or f"runs/sd3/{method}-{reward}{'-tiny' if tiny else ''}")
    config.setdefault("eval_prompts", str(Path(__file__).resolve().parent.parent / "data/prompts/eval_animals.txt"))
    config.setdefault("reward_pretrained", None)
    config.setdefault("reward_head", None)
    config.setdefault("reward_vae", None)
    config.setdefault("pretrained", None)
    return config


def check_resume(config: dict, resume: str | None) -> None:
    """Before anything is written: --resume latest needs a checkpoint and the same identity; a fresh run must not
    overwrite a run folder that has checkpoints."""
    from flowlite.checkpoint import latest_checkpoint

    out = Path(config["output"])
    last = latest_checkpoint(out / "checkpoints")
    if resume is None:
        if last is not None:
            raise FlowliteError(f"--output {str(out)!r} already holds checkpoints; pass --resume latest to continue "
                                "that run, or choose another --output")
        return
    if resume != "latest":
        raise FlowliteError(f"--resume accepts only 'latest', got {resume!r}")
    if last is None:
        raise FlowliteError(f"--resume latest: no checkpoint in {str(out / 'checkpoints')!r}")
    if not (out / CONFIG_FILE).is_file():
        raise FlowliteError(f"--resume latest: {str(out)!r} has checkpoints but no {CONFIG_FILE}")
    saved = json.loads((out / CONFIG_FILE).read_text())
    differ = [k for k in IDENTITY if saved.get(k) != config.get(k)]
    if differ:
        raise FlowliteError(f"--resume latest: {', '.join(differ)} differ from the run's {CONFIG_FILE} "
                            f"(saved: {', '.join(f'{k}={saved.get(k)!r}' for k in differ)})")


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
    from flowlite.methods import build_method
    from flowlite.rewards.image import image_reward
    from flowlite.rewards.latent import LatentReward
    from flowlite.sd3 import PromptCache, SD3Flow, load_sd3, pipeline_grid
    from flowlite.sd3_eval import Evaluator
    from flowlite.sd3_nets import sd3_method_options

    train_prompts = read_prompts(config["prompts"])
    eval_prompts = read_prompts(config["eval_prompts"], "--eval-prompts")[: config.get("eval_prompts_limit")]
    dtype = PRECISIONS[config["mixed_precision"]]
    seed_everything(config["seed"])  # the same LoRA, critic and value-network initialisation on every rank
    if config["tiny"]:
        from flowlite.sd3_tiny import build_tiny_sd3

        pipe = build_tiny_sd3(seed=config["seed"], t5=not config["drop_t5"])
        if dtype != torch.float32 or procs.device.type != "cpu":
            pipe.to(procs.device, dtype)
    else:
        pipe = load_sd3(config["pretrained"], dtype=dtype, device=procs.device, drop_t5=config["drop_t5"])
    extra = {"head": config["reward_head"]} if config.get("reward_head") else {}
    if extra and config["reward"] != "aesthetic":
        raise FlowliteError("--reward-head applies to --reward aesthetic only")
    try:
        scorer = image_reward(config["reward"], pretrained=config["reward_pretrained"], tiny=config["tiny"],
                              seed=config["seed"] + 1, **extra)
    except OSError as err:  # an unreachable hub id or an incomplete folder
        raise FlowliteError(f"could not load the {config['reward']} reward "
                            f"({config['reward_pretrained'] or 'its default weights'}): {err}") from None
    reward = LatentReward(load_reward_vae(config, procs.device) or pipe.vae, scorer).to(procs.device)
    eval_reward = reward if reward.vae is pipe.vae else LatentReward(pipe.vae, scorer).to(procs.device)
    cache = PromptCache(pipe, max_sequence_length=config["max_sequence_length"])
    cache(train_prompts + eval_prompts)
    if config["gradient_checkpointing"]:
        pipe.transformer.enable_gradient_checkpointing()
    seed_everything(config["seed"])
    flow = SD3Flow.from_pipeline(pipe, config["height"], config["width"], guidance_scale=config["guidance_scale"],
                                 rank=config["rank"], alpha=config["rank"], target_modules=LORA_TARGETS)
    grid = pipeline_grid(pipe.scheduler, config["solver_steps"])
    cond = cache(train_prompts[:1]).for_batch(config["batch_size"])
    options = sd3_method_options(config["method"], flow, reward, batch_size=config["batch_size"],
                                 steps=config["solver_steps"], grid=grid, cond=cond)
    options.update(config["method_options"])
    method, _ = build_method(config["method"], flow, reward, config["beta"] or 0.0, **options)
    method.to(procs.device)
    optimizer = torch.optim.AdamW(method.parameter_groups(), lr=config["lr"], betas=tuple(config["adam_betas"]),
                                  weight_decay=config["weight_decay"])
    evaluator = Evaluator(flow, eval_reward, cache, eval_prompts, list(range(config["eval_seeds"])),
                          pipeline_grid(pipe.scheduler, config["eval_steps"]))
    return Job(config, pipe, flow, reward, cache, method, optimizer, train_prompts, evaluator, procs)


def load_reward_vae(config: dict, device):
    """--reward-vae: a tiny decoder (diffusers ``AutoencoderTiny``, e.g. madebyollin/taesd3) for the training reward
    only; evaluation still decodes with the pipeline's VAE. None when not asked for."""
    if not config.get("reward_vae"):
        return None
    from diffusers import AutoencoderTiny

    from flowlite.sd3 import check_pretrained

    source = check_pretrained(config["reward_vae"], "--reward-vae")
    try:
        return AutoencoderTiny.from_pretrained(source).to(device)
    except (OSError, ValueError) as err:
        raise FlowliteError(f"--reward-vae {source!r} is not an AutoencoderTiny folder or hub id: {err}") from None


def make_loss(job: Job):
    """loss_fn(step) for the training loop: reseed, draw this rank's prompts, the method's loss; with several
    ranks the returned value is the rank mean (the gradient stays this rank's own, averaged in before_step)."""
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


def save_lora_atomically(flow, folder: Path) -> None:
    """The LoRA in the diffusers format, written beside ``folder`` and renamed into place."""
    from flowlite.sd3_lora import save_lora

    write_folder_atomically(folder, lambda tmp: save_lora(flow, tmp))


def save_tiny_base(config: dict, folder: Path) -> None:
    """The random base pipeline of a --tiny run (rebuilt from its seed: build_tiny_sd3 is deterministic; the one in
    memory carries the LoRA adapter), saved so that sd3-sample loads it as it would a hub model."""
    from flowlite.sd3_tiny import build_tiny_sd3

    write_folder_atomically(folder, build_tiny_sd3(seed=config["seed"], t5=not config["drop_t5"]).save_pretrained)


def _peak_memory_mib(device: torch.device) -> tuple[str, float]:
    if device.type == "cuda":
        return "GPU peak allocated", torch.cuda.max_memory_allocated(device) / 2**20
    return "process peak RSS", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _wandb(config: dict, run_dir: Path):
    if config.get("no_wandb"):
        return None
    try:
        import wandb
    except ImportError:
        return None
    return wandb.init(project="flowlite-sd3", dir=str(run_dir), config=config,
                      mode=os.environ.get("WANDB_MODE", "offline"))


def dry_run(config: dict) -> dict:
    """Build everything, run two steps (the first warms up) and one evaluation; print seconds per step and peak
    memory. Writes nothing."""
    from flowlite.train import train

    procs = processes()
    clock = time.perf_counter()
    job = build_job(config, procs)
    built = time.perf_counter() - clock
    if procs.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(procs.device)
    result = train(job.method, make_loss(job), job.optimizer, 2, grad_clip=config["grad_clip"], progress=False,
                   accumulate=config["grad_accum"], before_step=procs.average_gradients)
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
    from flowlite.sd3_lora import save_lora
    from flowlite.train import train

    procs = processes()
    out = Path(config["output"])
    job = build_job(config, procs)  # everything that can fail on bad input fails before anything is written
    if procs.main:
        out.mkdir(parents=True, exist_ok=True)
        if config["tiny"] and not (out / BASE_DIR / "model_index.json").is_file():
            save_tiny_base(config, out / BASE_DIR)
        if resume is None:
            write_json(out / CONFIG_FILE, {**config, "reproduce": reproduce_command(config),
                                           "versions": _versions(), "world_size": procs.world})
    job.cache.free_text_encoders()
    job.evaluator.out_dir = out / "eval" if procs.main else None
    tracker = _wandb(config, out) if procs.main else None

    def evaluate(step: int) -> dict:
        metrics = job.evaluator(step) if procs.main else {}
        if tracker is not None:
            tracker.log(metrics, step=step)
        return metrics

    def lora_files(folder: Path) -> None:
        save_lora(job.flow, folder / LORA_DIR)

    result = train(job.method, make_loss(job), job.optimizer, config["steps"], run_dir=out,
                   checkpoint_every=config["checkpoint_every"], keep_last=config["keep_last"],
                   resume=resume is not None, grad_clip=config["grad_clip"], callback=evaluate,
                   callback_every=config["eval_every"], log_every=1, progress=not config.get("quiet"),
                   desc=f"sd3 {config['method']}", accumulate=config["grad_accum"],
                   before_step=procs.average_gradients, checkpoint_files=lora_files, main_process=procs.main)
    lora = torch.cat([p.detach().reshape(-1).float() for p in job.flow.trainable_parameters()])
    summary = {"steps": result.step, "seconds": result.seconds, "world_size": procs.world, "rank": procs.rank,
               "lora_max_difference_across_ranks": procs.max_difference(lora),
               "last": {k: v for k, v in (result.history[-1] if result.history else {}).items()}}
    if procs.main:
        if tracker is not None:
            tracker.finish()
        save_lora_atomically(job.flow, out / LORA_DIR)
        write_json(out / "summary.json", summary)
    if procs.world > 1:
        say(f"rank {procs.rank}/{procs.world} lora_max_difference_across_ranks "
            f"{summary['lora_max_difference_across_ranks']:.3g} lora_sum {lora.double().sum().item():.12g}")
        procs.accelerator.wait_for_everyone()
    return summary


# Config keys given back as command-line flags by reproduce_command (the others come from the method's recipe).
FLAGS = ("method", "reward", "prompts", "eval_prompts", "pretrained", "reward_pretrained", "reward_head", "reward_vae",
         "rank", "beta", "lr", "steps", "batch_size", "grad_accum", "solver_steps", "guidance_scale", "height", "width",
         "mixed_precision", "max_sequence_length", "eval_every", "eval_seeds", "eval_steps", "checkpoint_every",
         "keep_last", "seed", "output")


def reproduce_command(config: dict) -> str:
    """The command that repeats this run with every resolved value spelled out (per process; the world size is
    recorded beside it), so a change of defaults cannot change it."""
    parts = ["python -m flowlite sd3"] + (["--tiny"] if config["tiny"] else [])
    parts += [f"--{k.replace('_', '-')} {shlex.quote(str(config[k]))}" for k in FLAGS if config.get(k) is not None]
    parts += [f"--{k.replace('_', '-')}" for k in ("gradient_checkpointing", "drop_t5") if config.get(k)]
    return " ".join(parts)


def _versions() -> dict:
    import diffusers
    import peft
    import transformers

    return {"torch": torch.__version__, "diffusers": diffusers.__version__, "transformers": transformers.__version__,
            "peft": peft.__version__}
