"""The command line, ``python -m flowlite JOB``. Bad input prints one line, ``error: …``, naming the argument and the
accepted values; every list of choices (methods, rewards, problems) comes from its registry."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from flowlite.errors import FlowliteError, NonFiniteLossError
from flowlite.jobs.arguments import (Parser, beta_value, guidance_value, non_negative_int, positive_float, positive_int,
                                     seed_value)
from flowlite.jobs.validate import check_output, checkpoint_choice
from flowlite.quiet import hide_library_progress_bars


def cmd_train_base(args) -> int:
    import torch

    from flowlite.solvers import sample_ode
    from flowlite.toy.base_training import train_base
    from flowlite.toy.metrics import histogram_kl, mode_mass_error
    from flowlite.toy.problems import load_problem

    problem = load_problem(args.problem, exact_target=False)  # the base alone is fitted
    out = check_output(args.out or problem.checkpoint_path, "--out", kind="file")
    print(f"fitting the base MLP of {problem.name!r} (mixture {problem.base_name!r}) for {args.train_steps} steps")
    net, result = train_base(problem.base, train_steps=args.train_steps, batch_size=args.batch_size, seed=args.seed,
                             progress=not args.quiet)
    x0 = torch.randn(args.eval_samples, problem.base.dim, generator=torch.Generator().manual_seed(args.seed + 1))
    x = sample_ode(net, x0)
    metrics = {"mode_error": mode_mass_error(x, problem.base), "kl": histogram_kl(x, problem.base)}
    out.parent.mkdir(parents=True, exist_ok=True)
    net.save(out, {"mixture": json.dumps(problem.base.to_dict()), "train_steps": args.train_steps, "seed": args.seed,
                   "retrain": f"python -m flowlite train-base --problem {problem.name} --train-steps "
                              f"{args.train_steps} --seed {args.seed}"})
    print(f"final loss {result.history[-1]['loss']:.4f} in {result.seconds:.0f} s; against the mixture "
          f"(Heun, 50 steps, {args.eval_samples} samples): mode error {metrics['mode_error']:.4f}, "
          f"KL {metrics['kl']:.4f}")
    print(f"saved {out}")
    return 0


def cmd_targets(args) -> int:
    from flowlite.jobs.targets import plot_targets
    from flowlite.toy.problems import list_problems, load_problem

    names = list_problems() if args.problem == "all" else [args.problem]
    for name in names:  # every problem is checked before the first figure is written
        load_problem(name, beta=args.beta)
    check_output(args.out, "--out")
    for name in names:
        plot_targets(name, beta=args.beta, out_dir=Path(args.out), base=args.base, seed=args.seed)
    return 0


def cmd_finetune(args) -> int:
    from flowlite.jobs.finetune_problem import finetune_problem
    from flowlite.methods import takes_beta

    if args.beta is not None and not takes_beta(args.method):
        raise FlowliteError(f"--beta does not apply to --method {args.method}: it has no KL term")
    method_options = {"batch_size": args.batch_size, "solver_steps": args.solver_steps}
    if args.schedule is not None:
        if args.method != "adjoint-matching":
            raise FlowliteError("--schedule applies to --method adjoint-matching only")
        method_options["schedule"] = args.schedule
    train_options = {k: v for k, v in {"lr": args.lr}.items() if v is not None}
    out = args.out or f"runs/finetune/{Path(args.problem).stem}-{args.method}"
    metrics = finetune_problem(args.problem, args.method, beta=args.beta, train_steps=args.train_steps,
                               base=args.base, out=out, seed=args.seed, eval_every=args.eval_every,
                               resume=args.resume, progress=not args.quiet, method_options=method_options,
                               train_options=train_options, overwrite=args.overwrite)
    base = metrics["base"]
    print(f"{metrics['method']} on {metrics['problem']} (β={metrics['beta']:g}), {metrics['train_steps']} steps, "
          f"{metrics['cpu_seconds']:.0f} CPU s")
    print(f"  vs exact tilt: mode error {base['mode_error']:.3f} -> {metrics['mode_error']:.3f}, "
          f"KL {base['kl_to_tilt']:.3f} -> {metrics['kl_to_tilt']:.3f}; mean reward {base['mean_reward']:.3f} -> "
          f"{metrics['mean_reward']:.3f} (tilt: {metrics['target_mean_reward']:.3f})")
    print(f"  wrote {out}/ (metrics.json, samples.png, samples.safetensors, metrics.csv, checkpoints/)")
    return 0


def cmd_bench(args) -> int:
    from flowlite.jobs.bench import run_bench

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
    from flowlite.jobs.image_job import dry_run
    from flowlite.jobs.image_run import run_image_job
    from flowlite.jobs.image_settings import read_prompts, resolve_config

    skip = ("func", "command", "threads", "resume", "dry_run", "overwrite")
    if args.quiet:
        hide_library_progress_bars()
    config = resolve_config({k: v for k, v in vars(args).items() if k not in skip})
    read_prompts(config["prompts"])
    read_prompts(config["eval_prompts"], "--eval-prompts")
    if args.dry_run:
        dry_run(config)
        return 0
    summary = run_image_job(config, resume=args.resume, overwrite=args.overwrite)
    if not args.quiet and summary["rank"] == 0:
        print(f"{config['method']} on {config['reward']}: {summary['train_steps']} steps in "
              f"{summary['seconds']:.1f} s, last loss {summary['last'].get('loss', float('nan')):.4g}; wrote "
              f"{config['output']}/ (lora/, config.json, metrics.csv, eval/, checkpoints/)")
    return 0


def cmd_sd3_sample(args) -> int:
    from flowlite.jobs.image_sample import run_sample
    from flowlite.text import check_prompt_length

    if args.quiet:
        hide_library_progress_bars()
    for i, prompt in enumerate(args.prompt, 1):
        check_prompt_length(prompt, f"--prompt {i}")
    if args.output:
        check_output(args.output, "--output", kind="file" if args.output.endswith(".png") else "folder")
    for path in run_sample(args.lora, args.prompt, args.seed, output=args.output, checkpoint=args.checkpoint,
                           solver_steps=args.solver_steps, guidance_scale=args.guidance_scale):
        print(f"wrote {path}")
    return 0


def build_parser() -> Parser:
    from flowlite.jobs.image_settings import add_arguments
    from flowlite.methods import METHODS
    from flowlite.sd3.recipes import RECIPES
    from flowlite.toy.problems import list_problems

    problems = ", ".join(list_problems())
    parser = Parser(prog="python -m flowlite",
                    description="flowlite: reward fine-tuning of flow matching models through optimal control.")
    parser.add_argument("--threads", type=positive_int, default=1, help="torch threads (default 1)")
    sub = parser.add_subparsers(dest="command", metavar="JOB", parser_class=Parser)

    p = sub.add_parser("train-base", help="fit the base MLP of a problem's mixture (data/bases/*.safetensors)")
    p.add_argument("--problem", default="reweight", help=f"problem name ({problems}) or JSON path")
    p.add_argument("--train-steps", type=positive_int, default=8000, help="optimisation steps (default 8000)")
    p.add_argument("--batch-size", type=positive_int, default=2048)
    p.add_argument("--eval-samples", type=positive_int, default=4000)
    p.add_argument("--seed", type=seed_value, default=0)
    p.add_argument("--out", default=None, help="weights file (default: the problem's shipped checkpoint)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train_base)

    p = sub.add_parser("targets", help="plot a problem's base and exact tilted target, with samples")
    p.add_argument("--problem", default="all", help=f"problem name ({problems}), a JSON path, or all")
    p.add_argument("--beta", type=beta_value, default=None, help="override the problem's beta (finite, >= 0)")
    p.add_argument("--base", default="mlp", choices=["mlp", "exact"], help="which base model to sample")
    p.add_argument("--seed", type=seed_value, default=0)
    p.add_argument("--out", default="runs/targets", help="output folder (default runs/targets)")
    p.set_defaults(func=cmd_targets)

    p = sub.add_parser("finetune", help="fine-tune a problem's base with a method; metrics against the exact tilt")
    p.add_argument("--problem", default="reweight", help=f"problem name ({problems}) or JSON path")
    p.add_argument("--method", default="adjoint-matching", choices=list(METHODS), metavar="METHOD",
                   help=f"one of: {', '.join(METHODS)}")
    p.add_argument("--beta", type=beta_value, default=None, help="override the problem's beta (finite, >= 0)")
    p.add_argument("--train-steps", type=positive_int, default=None, help="optimisation steps (default: per method)")
    p.add_argument("--batch-size", type=positive_int, default=256)
    p.add_argument("--solver-steps", type=positive_int, default=50, help="time steps K of the sampler")
    p.add_argument("--lr", type=positive_float, default=None, help="learning rate (default: per method)")
    p.add_argument("--schedule", choices=["memoryless", "constant", "ode"], default=None,
                   help="adjoint-matching's noise schedule (default memoryless)")
    p.add_argument("--base", default="exact", choices=["exact", "mlp"])
    p.add_argument("--eval-every", type=non_negative_int, default=0,
                   help="log metrics against the tilt every N steps (0: never)")
    p.add_argument("--seed", type=seed_value, default=0)
    p.add_argument("--out", default=None, help="run folder (default runs/finetune/<problem>-<method>)")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's newest checkpoint that loads "
                                                         "(the run's settings must be kept)")
    p.add_argument("--overwrite", action="store_true", help="replace the run already in --out")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("bench", help="every method on the same problems and budget, measured against the exact tilt")
    p.add_argument("--problems", nargs="+", default=["reweight"], metavar="PROBLEM",
                   help=f"problem names ({problems}) or JSON paths (default reweight)")
    p.add_argument("--methods", nargs="+", default=None, metavar="METHOD",
                   help=f"default: all registered ({', '.join(METHODS)})")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--budget-seconds", type=positive_float, default=None,
                        help="CPU seconds of training per run (iterations calibrated per method)")
    budget.add_argument("--iterations", type=positive_int, default=None, help="iterations per run, every method")
    p.add_argument("--seeds", nargs="+", type=seed_value, default=[0], help="seeds; the table shows mean ± std over them")
    p.add_argument("--base", default="exact", choices=["exact", "mlp"])
    p.add_argument("--batch-size", type=positive_int, default=256)
    p.add_argument("--solver-steps", type=positive_int, default=50, help="time steps K of the training sampler")
    p.add_argument("--eval-samples", type=positive_int, default=4000)
    p.add_argument("--own-optimum-samples", type=non_negative_int, default=1000,
                   help="particles of VGG-Flow's deterministic-control reference where it has no closed form "
                        "(about a CPU minute per thousand; 0 skips it)")
    p.add_argument("--jobs", type=positive_int, default=1, help="runs at once, one process and thread each")
    p.add_argument("--out", default="runs/bench", help="output folder (default runs/bench)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_bench)

    recipes = "; ".join(f"{name}: lr {r['lr']:g}" for name, r in RECIPES.items())
    p = sub.add_parser("sd3", help="fine-tune SD3 with LoRA on an image reward (one CPU with --tiny, one GPU, or "
                                   "many with accelerate launch)",
                       description="Defaults per method follow the papers' recipes (README, flowlite/sd3/recipes.py): "
                                   f"{recipes}. Flags left out take the recipe's value.")
    add_arguments(p)
    p.add_argument("--tiny", action="store_true", help="a tiny random model (of --model's family) and reward, 16x16 "
                   "images, for CPU")
    p.add_argument("--resume", default=None, metavar="latest", help="continue the run in --output from its newest "
                                                                    "checkpoint that loads")
    p.add_argument("--overwrite", action="store_true", help="replace the run already in --output")
    p.add_argument("--dry-run", action="store_true", help="build, run two steps, print s/step and peak memory; "
                                                          "write nothing")
    p.add_argument("--no-wandb", action="store_true", help="do not log to wandb even when it is installed")
    p.add_argument("--quiet", action="store_true", help="no progress bars (the libraries' loading bars too)")
    p.set_defaults(func=cmd_sd3)

    p = sub.add_parser("sd3-sample", help="images from a trained run's LoRA through StableDiffusion3Pipeline")
    p.add_argument("--lora", required=True, metavar="RUN_DIR", help="a run folder of `python -m flowlite sd3`")
    p.add_argument("--prompt", required=True, nargs="+", help="one or more prompts")
    p.add_argument("--seed", type=seed_value, default=0)
    p.add_argument("--checkpoint", type=checkpoint_choice, default=None,
                   help="latest or a step number (default: the final LoRA)")
    p.add_argument("--solver-steps", type=positive_int, default=None,
                   help="sampler steps (default: the run's eval steps)")
    p.add_argument("--guidance-scale", type=guidance_value, default=None, help="default: the run's (0 to 100)")
    p.add_argument("--output", default=None, help="a .png file or a folder (default RUN_DIR/samples)")
    p.add_argument("--quiet", action="store_true", help="no progress bars (the libraries' loading bars too)")
    p.set_defaults(func=cmd_sd3_sample)

    from flowlite.jobs.plan import add_plan_parser
    add_plan_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    import torch

    torch.set_num_threads(args.threads)
    try:
        return args.func(args)
    except FlowliteError as err:  # bad input: nothing was written
        print(f"error: {err}", file=sys.stderr)
        return 2
    except NonFiniteLossError as err:  # the last good checkpoint is kept; resume from it with a lower --lr
        print(f"error: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # the disk filled up, a permission changed: one line, the checkpoints written are intact
        where = f" ({err.filename})" if getattr(err, "filename", None) else ""
        print(f"error: {err.strerror or err}{where}; the newest complete checkpoint is intact (--resume)",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
