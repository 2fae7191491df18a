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
                       jobs=args.jobs, progress=not args.quiet)
    out = Path(args.out)
    print(f"table: {out / 'summary.md'}  (numbers: {out / 'summary.json'})")
    print(f"figures: {out / 'samples.png'}, " + ", ".join(str(out / f"curves_{p}.png")
                                                       for p in result["config"]["problems"]))
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
    p.add_argument("--jobs", type=_positive_int, default=1, help="runs at once, one process and thread each")
    p.add_argument("--out", default="runs/bench", help="output folder (default runs/bench)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_bench)
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
