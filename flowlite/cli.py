"""The command-line jobs. Bad input prints one line, ``error: …``, naming the argument and the accepted values."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from flowlite.errors import FlowliteError, check_beta


def _beta(text: str) -> float:
    try:
        return check_beta(text)
    except FlowliteError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _setup_torch(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def cmd_train_base(args) -> int:
    import torch

    from flowlite.flow_matching import train_base
    from flowlite.metrics import histogram_kl, mode_mass_error
    from flowlite.problems import load_problem
    from flowlite.solvers import solve_ode

    problem = load_problem(args.problem)
    out = Path(args.out) if args.out else problem.checkpoint_path
    print(f"fitting the base MLP of {problem.name!r} (mixture {problem.base_name!r}) for {args.steps} steps")
    net, result = train_base(problem.base, steps=args.steps, batch_size=args.batch_size, seed=args.seed,
                             progress=not args.quiet)
    with torch.no_grad():
        x = solve_ode(net, torch.randn(args.eval_samples, problem.base.dim,
                                       generator=torch.Generator().manual_seed(args.seed + 1)),
                      steps=50, method="heun", store=False).final
    metrics = {"mode_error": mode_mass_error(x, problem.base), "kl": histogram_kl(x, problem.base)}
    out.parent.mkdir(parents=True, exist_ok=True)
    net.save(out, {"mixture": json.dumps(problem.base.to_dict()), "steps": args.steps, "seed": args.seed,
                   "retrain": f"python -m flowlite train-base --problem {problem.name} --steps {args.steps} "
                              f"--seed {args.seed}"})
    print(f"final loss {result.history[-1]['loss']:.4f} in {result.seconds:.0f} s; against the mixture "
          f"(Heun, 50 steps, {args.eval_samples} samples): mode error {metrics['mode_error']:.4f}, "
          f"KL {metrics['kl']:.4f}")
    print(f"saved {out}")
    return 0


def cmd_targets(args) -> int:
    from flowlite.demo import plot_targets
    from flowlite.problems import list_problems

    names = list_problems() if args.problem == "all" else [args.problem]
    for name in names:
        plot_targets(name, beta=args.beta, out_dir=Path(args.out), base=args.base, seed=args.seed)
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line naming the argument (DESIGN §6)."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see: {self.prog} --help)\n")


def cmd_finetune(args) -> int:
    from flowlite.finetune import finetune_problem

    method_options = {"batch_size": args.batch_size, "steps": args.solver_steps}
    if args.schedule is not None:
        if args.method != "adjoint-matching":
            raise FlowliteError("--schedule applies to --method adjoint-matching only")
        method_options["schedule"] = args.schedule
    train_options = {k: v for k, v in {"lr": args.lr}.items() if v is not None}
    out = args.out or f"runs/finetune/{Path(args.problem).stem}-{args.method}"
    metrics = finetune_problem(args.problem, args.method, beta=args.beta, steps=args.steps, base=args.base,
                               out=out, seed=args.seed, eval_every=args.eval_every, resume=args.resume,
                               progress=not args.quiet, method_options=method_options,
                               train_options=train_options)
    base = metrics["base"]
    print(f"{metrics['method']} on {metrics['problem']} (β={metrics['beta']:g}), {metrics['steps']} steps, "
          f"{metrics['cpu_seconds']:.0f} CPU s")
    print(f"  vs exact tilt: mode error {base['mode_error']:.3f} -> {metrics['mode_error']:.3f}, "
          f"KL {base['kl']:.3f} -> {metrics['kl']:.3f}; mean reward {base['mean_reward']:.3f} -> "
          f"{metrics['mean_reward']:.3f} (tilt: {metrics['target_mean_reward']:.3f})")
    print(f"  wrote {out}/ (metrics.json, samples.png, samples.safetensors, metrics.csv, checkpoints/)")
    return 0


def _positive_float(text: str) -> float:
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def cmd_bench(args) -> int:
    from flowlite.bench import run_bench

    split = lambda names: [n for text in names for n in text.split(",") if n] if names else None  # noqa: E731
    result = run_bench(split(args.problems), split(args.methods), budget_seconds=args.budget_seconds,
                       iterations=args.iterations, seeds=args.seeds, out=args.out, base=args.base,
                       batch_size=args.batch_size, solver_steps=args.solver_steps, eval_samples=args.eval_samples,
                       own_optimum_n=args.own_optimum_samples, jobs=args.jobs, progress=not args.quiet)
    out = Path(args.out)
    print(f"table: {out / 'summary.md'}  (numbers: {out / 'summary.json'})")
    print(f"figures: {out / 'samples.png'}, " + ", ".join(str(out / f"curves_{p}.png")
                                                       for p in result["config"]["problems"]))
    return 0


def cmd_sd3(args) -> int:
    from flowlite.errors import NonFiniteLossError
    from flowlite.sd3_job import check_resume, dry_run, read_prompts, resolve_config, run_sd3

    flags = {k: v for k, v in vars(args).items() if k not in ("func", "command", "threads", "resume", "dry_run")}
    config = resolve_config(flags)
    read_prompts(config["prompts"])
    read_prompts(config["eval_prompts"], "--eval-prompts")
    if args.dry_run:
        dry_run(config)
        return 0
    check_resume(config, args.resume)
    try:
        summary = run_sd3(config, resume=args.resume)
    except NonFiniteLossError as err:  # the last good checkpoint is kept; --resume latest with a lower --lr
        print(f"error: {err}", file=sys.stderr)
        return 1
    if not args.quiet and summary["rank"] == 0:
        print(f"{config['method']} on {config['reward']}: {summary['steps']} steps in {summary['seconds']:.1f} s, "
              f"last loss {summary['last'].get('loss', float('nan')):.4g}; wrote {config['output']}/ (lora/, "
              "config.json, metrics.csv, eval/, checkpoints/)")
    return 0


def cmd_sd3_sample(args) -> int:
    from flowlite.sd3_sample import run_sample

    for path in run_sample(args.lora, args.prompt, args.seed, output=args.output, checkpoint=args.checkpoint,
                           steps=args.steps, guidance_scale=args.guidance_scale):
        print(f"wrote {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from flowlite.problems import list_problems

    problems = ", ".join(list_problems())
    parser = _Parser(prog="python -m flowlite",
                                     description="flowlite: reward fine-tuning of flow matching models "
                                                 "through optimal control.")
    parser.add_argument("--threads", type=_positive_int, default=1, help="torch threads (default 1)")
    sub = parser.add_subparsers(dest="command", metavar="JOB", parser_class=_Parser)

    p = sub.add_parser("train-base", help="fit the base MLP of a problem's mixture (data/bases/*.safetensors)")
    p.add_argument("--problem", default="reweight", help=f"problem name ({problems}) or JSON path")
    p.add_argument("--steps", type=_positive_int, default=8000)
    p.add_argument("--batch-size", type=_positive_int, default=2048)
    p.add_argument("--eval-samples", type=_positive_int, default=4000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="weights file (default: the problem's shipped checkpoint)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train_base)

    p = sub.add_parser("targets", help="plot a problem's base and exact tilted target, with samples")
    p.add_argument("--problem", default="all", help=f"problem name ({problems}), a JSON path, or all")
    p.add_argument("--beta", type=_beta, default=None, help="override the problem's beta (finite, >= 0)")
    p.add_argument("--base", default="mlp", choices=["mlp", "exact"], help="which base model to sample")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/targets", help="output folder (default runs/targets)")
    p.set_defaults(func=cmd_targets)

    from flowlite.methods import METHODS

    p = sub.add_parser("finetune", help="fine-tune a problem's base with a method; metrics against the exact tilt")
    p.add_argument("--problem", default="reweight", help=f"problem name ({problems}) or JSON path")
    p.add_argument("--method", default="adjoint-matching", choices=list(METHODS), metavar="METHOD",
                   help=f"one of: {', '.join(METHODS)}")
    p.add_argument("--beta", type=_beta, default=None, help="override the problem's beta (finite, >= 0)")
    p.add_argument("--steps", type=_positive_int, default=None, help="optimisation steps (default: per method)")
    p.add_argument("--batch-size", type=_positive_int, default=256)
    p.add_argument("--solver-steps", type=_positive_int, default=50, help="time steps K of the sampler")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: per method)")
    p.add_argument("--schedule", choices=["memoryless", "constant", "ode"], default=None,
                   help="adjoint-matching's noise schedule (default memoryless)")
    p.add_argument("--base", default="exact", choices=["exact", "mlp"])
    p.add_argument("--eval-every", type=int, default=0, help="log metrics against the tilt every N steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="run folder (default runs/finetune/<problem>-<method>)")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's newest checkpoint")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("bench", help="every method on the same problems and budget, measured against the exact tilt")
    p.add_argument("--problems", nargs="+", default=["reweight"], metavar="PROBLEM",
                   help=f"problem names ({problems}) or JSON paths (default reweight)")
    p.add_argument("--methods", nargs="+", default=None, metavar="METHOD",
                   help=f"default: all registered ({', '.join(METHODS)})")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--budget-seconds", type=_positive_float, default=None,
                        help="CPU seconds of training per run (iterations calibrated per method)")
    budget.add_argument("--iterations", type=_positive_int, default=None, help="iterations per run, every method")
    p.add_argument("--seeds", nargs="+", type=int, default=[0], help="seeds; the table shows mean ± std over them")
    p.add_argument("--base", default="exact", choices=["exact", "mlp"])
    p.add_argument("--batch-size", type=_positive_int, default=256)
    p.add_argument("--solver-steps", type=_positive_int, default=50, help="time steps K of the training sampler")
    p.add_argument("--eval-samples", type=_positive_int, default=4000)
    p.add_argument("--own-optimum-samples", type=int, default=1000,
                   help="particles of VGG-Flow's deterministic-control reference where it has no closed form "
                        "(about a CPU minute per thousand; 0 skips it)")
    p.add_argument("--jobs", type=_positive_int, default=1, help="runs at once, one process and thread each")
    p.add_argument("--out", default="runs/bench", help="output folder (default runs/bench)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_bench)

    from flowlite.sd3_job import METHOD_NAMES, RECIPES, REWARD_NAMES

    recipes = "; ".join(f"{name}: lr {r['lr']:g}" for name, r in RECIPES.items())
    p = sub.add_parser("sd3", help="fine-tune SD3 with LoRA on an image reward (one CPU with --tiny, one GPU, or "
                                   "many with accelerate launch)",
                       description="Defaults per method follow the papers' recipes (README, flowlite/sd3_job.py "
                                   f"RECIPES): {recipes}. Flags left out take the recipe's value.")
    p.add_argument("--method", required=True, help=f"one of: {', '.join(METHOD_NAMES)}")
    p.add_argument("--reward", required=True, help=f"one of: {', '.join(REWARD_NAMES)}")
    p.add_argument("--prompts", required=True, help="training prompts, one per line (e.g. data/prompts/simple_animals.txt)")
    p.add_argument("--eval-prompts", default=None, help="held-out prompts (default data/prompts/eval_animals.txt)")
    p.add_argument("--pretrained", default=None, help="SD3 hub id or folder (not needed with --tiny)")
    p.add_argument("--reward-pretrained", default=None, help="reward weights: hub id or folder (default: the reward's)")
    p.add_argument("--reward-head", default=None, help="aesthetic only: the LAION MLP (.pth or .safetensors)")
    p.add_argument("--reward-vae", default=None, help="a tiny VAE decoder (AutoencoderTiny, e.g. madebyollin/taesd3) "
                                                     "for the training reward only, to save memory")
    p.add_argument("--tiny", action="store_true", help="a tiny random SD3 and reward, 16x16 images, for CPU")
    p.add_argument("--rank", type=_positive_int, default=None, help="LoRA rank (alpha = rank; default 8)")
    p.add_argument("--beta", type=_beta, default=None, help="KL strength, target p_base exp(beta r) (default: recipe)")
    p.add_argument("--lr", type=_positive_float, default=None, help="learning rate (default: recipe)")
    p.add_argument("--steps", type=_positive_int, default=None, help="optimizer updates (default 400)")
    p.add_argument("--batch-size", type=_positive_int, default=None, help="trajectories per micro-batch and process")
    p.add_argument("--grad-accum", type=_positive_int, default=None, help="micro-batches per update (default 8)")
    p.add_argument("--solver-steps", type=_positive_int, default=None, help="sampler steps in training (default 20)")
    p.add_argument("--guidance-scale", type=float, default=None, help="CFG scale (default 5; 1 with --tiny)")
    p.add_argument("--height", type=_positive_int, default=None)
    p.add_argument("--width", type=_positive_int, default=None)
    p.add_argument("--mixed-precision", choices=["no", "bf16", "fp16"], default=None,
                   help="transformer weights' dtype (default bf16); LoRA, VAE, reward, adjoints stay fp32")
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--drop-t5", action="store_true", help="no T5 text encoder (its embeddings are zeros)")
    p.add_argument("--max-sequence-length", type=_positive_int, default=None, help="T5 tokens (default 256)")
    p.add_argument("--eval-every", type=_positive_int, default=None, help="evaluate every N updates (default 50)")
    p.add_argument("--eval-seeds", type=_positive_int, default=None, help="seeds 0..N-1 per held-out prompt")
    p.add_argument("--eval-steps", type=_positive_int, default=None, help="sampler steps at evaluation")
    p.add_argument("--checkpoint-every", type=_positive_int, default=None, help="default 50")
    p.add_argument("--keep-last", type=_positive_int, default=None, help="checkpoints kept (default 3)")
    p.add_argument("--resume", default=None, metavar="latest", help="continue the run in --output from its newest checkpoint")
    p.add_argument("--dry-run", action="store_true", help="build, run two steps, print s/step and peak memory; write nothing")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--output", default=None, help="run folder (default runs/sd3/METHOD-REWARD[-tiny])")
    p.add_argument("--no-wandb", action="store_true", help="do not log to wandb even when it is installed")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_sd3)

    p = sub.add_parser("sd3-sample", help="images from a trained run's LoRA through StableDiffusion3Pipeline")
    p.add_argument("--lora", required=True, metavar="RUN_DIR", help="a run folder of `python -m flowlite sd3`")
    p.add_argument("--prompt", required=True, nargs="+", help="one or more prompts")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint", default=None, help="latest or a step number (default: the final LoRA)")
    p.add_argument("--steps", type=_positive_int, default=None, help="sampler steps (default: the run's eval steps)")
    p.add_argument("--guidance-scale", type=float, default=None, help="default: the run's")
    p.add_argument("--output", default=None, help="a .png file or a folder (default RUN_DIR/samples)")
    p.set_defaults(func=cmd_sd3_sample)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    _setup_torch(args.threads)
    try:
        return args.func(args)
    except FlowliteError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
