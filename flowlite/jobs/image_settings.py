"""Every setting of the image fine-tuning job (``python -m flowlite sd3``) written once, in :data:`SETTINGS`: the
command line's flags, the defaults, the keys a resume must match and the ``reproduce`` command all derive from it.

Resolution order: flags given on the command line, then ``--tiny``'s sizes, then the method's recipe
(``flowlite.sd3.recipes``, data keyed by the registry's method names), then the model's recipe
(``image_models.MODELS``, ``--model``), then the defaults below: the VGG-Flow
paper's SD3 set-up shared by every method (theory §6.6): 20 Euler steps, CFG 5, 400 updates of an effective batch of
32 (4 per micro-batch x 8 accumulated, per process), AdamW wd 1e-2, gradient-norm clip 1.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from flowlite.errors import FlowliteError
from flowlite.jobs.arguments import beta_value, guidance_value, positive_float, positive_int, seed_value
from flowlite.jobs.image_models import MODELS, infer_model
from flowlite.methods import METHODS, takes_beta
from flowlite.rewards.registry import IMAGE_REWARDS, OPTIONAL
from flowlite.sd3.quantization import BASE_QUANTIZATIONS
from flowlite.sd3.recipes import RECIPES

PRECISIONS = {"no": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
DATA_DIR = Path(__file__).resolve().parents[2] / "data"
CONFIG_FILE = "config.json"
LORA_DIR = "lora"
TINY_BASE_DIR = "base"  # --tiny: the random base pipeline, saved so that sd3-sample can load it


@dataclass(frozen=True)
class Setting:
    """One setting. ``parse`` None: an on/off switch; ``identity``: a resume must keep it; ``flag``: it is a command-line
    flag (given back by ``reproduce``)."""

    name: str
    default: object = None
    parse: Callable | None = str
    help: str = ""
    identity: bool = False
    flag: bool = True
    choices: tuple | None = None

    @property
    def option(self) -> str:
        return "--" + self.name.replace("_", "-")


SETTINGS = (
    Setting("method", help="one of: " + ", ".join(METHODS), identity=True),
    Setting("reward", help="one of: " + ", ".join(IMAGE_REWARDS) + " (optional packages: " + ", ".join(OPTIONAL)
            + "; --reward-pretrained = their checkpoint)", identity=True),
    Setting("prompts", help="training prompts, one per line (e.g. data/prompts/simple_animals.txt)"),
    Setting("eval_prompts", str(DATA_DIR / "prompts/eval_animals.txt"), help="held-out prompts"),
    Setting("model", None, str, "image model family (default: from --pretrained's model_index.json or hub id; "
                                "sd3 with --tiny)", identity=True, choices=tuple(MODELS)),
    Setting("pretrained", help="the model's hub id or folder (not needed with --tiny)", identity=True),
    Setting("reward_pretrained", help="reward weights: hub id or folder (default: the reward's)", identity=True),
    Setting("reward_head", help="aesthetic only: the LAION MLP (.pth or .safetensors)", identity=True),
    Setting("reward_tokenizer", help="pickscore/clipscore: the tokenizer's hub id or folder when the reward's own "
                                     "has none", identity=True),
    Setting("reward_vae", help="a tiny VAE decoder (AutoencoderTiny, e.g. madebyollin/taesd3) for the training "
                               "reward only, to save memory", identity=True),
    Setting("rank", 8, positive_int, "LoRA rank (alpha = rank)", identity=True),
    Setting("beta", None, beta_value, "KL strength, target p_base exp(beta r) (default: recipe); methods without a "
                                      "KL term refuse it", identity=True),
    Setting("lr", None, positive_float, "learning rate (default: recipe)", identity=True),
    Setting("train_steps", 400, positive_int, "optimizer updates"),
    Setting("batch_size", 4, positive_int, "trajectories per micro-batch and process", identity=True),
    Setting("grad_accum", 8, positive_int, "micro-batches per update", identity=True),
    Setting("solver_steps", 20, positive_int, "sampler steps in training", identity=True),
    Setting("guidance_scale", 5.0, guidance_value, "CFG scale (1 with --tiny)", identity=True),
    Setting("height", 512, positive_int, identity=True),
    Setting("width", 512, positive_int, identity=True),
    Setting("mixed_precision", "bf16", str, "transformer weights' dtype; LoRA, VAE, reward, adjoints stay fp32",
            identity=True, choices=tuple(PRECISIONS)),
    Setting("quantize_base", None, str, "store the frozen transformer's linear weights in int8 (torchao, weight-only; "
                                        "needs --mixed-precision bf16); the LoRA stays fp32", identity=True,
            choices=tuple(BASE_QUANTIZATIONS)),
    Setting("gradient_checkpointing", False, None, "recompute the transformer blocks in the backward pass"),
    Setting("fsdp", False, None, "shard the transformer across the launched processes with torch's FSDP2, one unit "
                                 "per block (README 'Many GPUs')"),
    Setting("drop_t5", False, None, "no T5 text encoder (its embeddings are zeros)", identity=True),
    Setting("max_sequence_length", 256, positive_int, "T5 tokens", identity=True),
    Setting("eval_every", 50, positive_int, "evaluate every N updates"),
    Setting("eval_seeds", 8, positive_int, "seeds 0..N-1 per held-out prompt"),
    Setting("eval_steps", 20, positive_int, "sampler steps at evaluation"),
    Setting("checkpoint_every", 50, positive_int, "write a checkpoint every N updates"),
    Setting("keep_last", 3, positive_int, "checkpoints kept"),
    Setting("comfyui", False, None, "also write lora/lora_comfyui.safetensors (with the alpha tensors ComfyUI reads)"),
    Setting("seed", 0, seed_value, identity=True),
    Setting("output", None, str, "run folder (default runs/sd3/METHOD-REWARD[-tiny])"),
    Setting("weight_decay", 1e-2, flag=False),
    Setting("grad_clip", 1.0, flag=False),
    Setting("adam_betas", (0.9, 0.999), flag=False),
)
DEFAULTS = {s.name: s.default for s in SETTINGS}
IDENTITY = tuple(["tiny"] + [s.name for s in SETTINGS if s.identity])
"""Keys that must match the saved config when resuming (the rest may change, e.g. more --train-steps)."""

# --tiny: a random 16x16 SD3 on one CPU thread; a plumbing rehearsal, not a recipe (random rewards have no scale,
# so beta is 1; CFG 1 because the lean adjoint through CFG 5 blows up on the random transformer, see notebook 08).
TINY = {"train_steps": 4, "batch_size": 2, "grad_accum": 1, "solver_steps": 4, "guidance_scale": 1.0, "rank": 4,
        "height": 16, "width": 16, "max_sequence_length": 32, "eval_every": 2, "eval_seeds": 2, "eval_steps": 4,
        "checkpoint_every": 2, "keep_last": 2, "mixed_precision": "no", "lr": 1e-3, "beta": 1.0,
        "eval_prompts_limit": 2}
TINY_OPTIONS = {"ac-flow": {"warmup": 1}, "adjoint-matching": {"n_early": 1}}


def add_arguments(parser) -> None:
    """The job's flags, from :data:`SETTINGS` (defaults are resolved later, so a flag left out is None)."""
    for s in (s for s in SETTINGS if s.flag):
        if s.parse is None:
            parser.add_argument(s.option, action="store_true", help=s.help)
        else:
            required = s.name in ("method", "reward", "prompts")
            default = "" if required or s.default is None else f" (default {s.default})"
            parser.add_argument(s.option, type=s.parse, default=None, required=required, choices=s.choices,
                                help=s.help + default)


def read_prompts(path, flag: str = "--prompts") -> list[str]:
    """One prompt per line of a UTF-8 file; blank lines and # lines skipped (checked: ``jobs.validate``)."""
    from flowlite.jobs.validate import read_prompt_file

    return read_prompt_file(path, flag)


def resolve_config(args: dict) -> dict:
    """Flags given on the command line win, then ``--tiny``'s sizes, then the method's recipe, then the model's, then
    the defaults.
    Values are checked where they enter (the command line's types, or the method's constructor)."""
    method, reward = args.get("method"), args.get("reward")
    if method not in METHODS:
        raise FlowliteError(f"unknown --method {method!r}; accepted: {', '.join(METHODS)}")
    if reward not in (*IMAGE_REWARDS, *OPTIONAL):
        raise FlowliteError(f"unknown --reward {reward!r}; accepted: {', '.join((*IMAGE_REWARDS, *OPTIONAL))}")
    tiny = bool(args.get("tiny"))
    if args.get("beta") is not None and not takes_beta(method):
        raise FlowliteError(f"--beta does not apply to --method {method}: it has no KL term")
    if not tiny and not args.get("pretrained"):
        raise FlowliteError("--pretrained is required (a hub id such as stabilityai/stable-diffusion-3-medium-"
                            "diffusers or a local folder), or pass --tiny for the random CPU model")
    recipe = RECIPES[method]
    if recipe["beta"] and reward not in recipe["beta"] and args.get("beta") is None:
        raise FlowliteError(f"--method {method} has no recipe beta for --reward {reward}: pass --beta")
    if tiny and reward in OPTIONAL:
        raise FlowliteError(f"--reward {reward} has no tiny random version; with --tiny use one of "
                            f"{', '.join(IMAGE_REWARDS)}")
    model = args.get("model") or infer_model(None if tiny else args.get("pretrained"))
    config = dict(DEFAULTS, **MODELS[model].recipe)  # the model's recipe, then the method's
    config.update(lr=recipe["lr"], adam_betas=recipe.get("adam_betas", DEFAULTS["adam_betas"]),
                  beta=recipe["beta"].get(reward) if recipe["beta"] else None, eval_prompts_limit=None, model=model)
    if tiny:
        config.update({k: v for k, v in TINY.items() if not (k == "beta" and config["beta"] is None)})
    config.update({k: v for k, v in args.items() if v is not None and v is not False})
    config["tiny"] = tiny
    if config.get("quantize_base") and config["mixed_precision"] != "bf16":
        raise FlowliteError(f"--quantize-base {config['quantize_base']} computes in bf16: add --mixed-precision bf16 "
                            f"(got {config['mixed_precision']!r})")
    config["method_options"] = {**recipe["options"], **(TINY_OPTIONS.get(method, {}) if tiny else {})}
    config["recipe_source"] = recipe["source"]
    config["adam_betas"] = list(config["adam_betas"])
    config["model_source"] = MODELS[model].source
    config["output"] = str(config.get("output") or f"runs/{model}/{method}-{reward}{'-tiny' if tiny else ''}")
    return config


OUTPUTS = ("checkpoints", "metrics.csv", CONFIG_FILE, LORA_DIR, "eval", TINY_BASE_DIR, "summary.json", "tensorboard",
           "samples", "wandb")
"""What a run writes in its folder (what --overwrite removes)."""


def check_resume(config: dict, resume: str | None, overwrite: bool = False) -> None:
    """Before anything is written (holding the folder's lock): --resume latest needs a checkpoint and the same
    identity; a fresh run must not mix with a run already in the folder (``flowlite.jobs.run_folder``)."""
    from flowlite.jobs.run_folder import open_run_folder

    if resume not in (None, "latest"):
        raise FlowliteError(f"--resume accepts only 'latest', got {resume!r}")
    open_run_folder(config["output"], config, IDENTITY, resume is not None, overwrite, config["train_steps"], OUTPUTS,
                    flag="--output", resume_flag="--resume latest", saved_defaults={"model": "sd3", "quantize_base": None})


def reproduce_command(config: dict) -> str:
    """The command that repeats this run with every resolved value spelled out (per process; the world size is
    recorded beside it), so a change of defaults cannot change it."""
    parts = ["python -m flowlite sd3"] + (["--tiny"] if config["tiny"] else [])
    for s in (s for s in SETTINGS if s.flag):
        value = config.get(s.name)
        if s.parse is None:
            parts += [s.option] if value else []
        elif value is not None:
            parts.append(f"{s.option} {shlex.quote(str(value))}")
    return " ".join(parts)
