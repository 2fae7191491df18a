"""VGG-Flow on this machine, next to Adjoint Matching and VGG-Flow-PMP on the same problem and budget: seconds per
iteration, network evaluations per transition (counted with forward hooks, not estimated), and CPU seconds until
each method's samples are within 10 % of *its own* closed-form target on ``gaussian`` (theory §6.10: VGG-Flow and
VGG-Flow-PMP → mean 0.880, variance 0.314; Adjoint Matching → the KL tilt, 0.667 / 0.667). Prints; asserts nothing.

    OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python bench/vgg_flow.py [--iterations 400] [--batch 256] [--steps 20]
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

import torch

from flowlite.finetune import finetune
from flowlite.methods import build_method
from flowlite.toy.problems import load_problem
from flowlite.toy.reference import gaussian_deterministic_optimum
from flowlite.solvers import sample_ode

METHODS = ("vgg-flow", "vgg-flow-pmp", "adjoint-matching")


def count_evaluations(method) -> Counter:
    """Forward calls of the base, the residual (v_θ = v_base + residual) and the value correction ν_φ, in one
    iteration, keyed by module and by rows evaluated."""
    counts: Counter = Counter()
    modules = {"base": method.model.base, "residual": method.model.residual}
    if hasattr(method, "value_gradient"):
        modules["nu"] = method.value_gradient.correction
    handles = [m.register_forward_hook(lambda mod, args, out, name=name: counts.update(
        {f"{name} calls": 1, f"{name} rows": args[0].shape[0]})) for name, m in modules.items()]
    loss, _ = method.loss(0)
    loss.backward()
    for h in handles:
        h.remove()
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=400)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    problem = load_problem("gaussian")
    vgg_mean, vgg_cov = gaussian_deterministic_optimum(problem.base, problem.reward, problem.beta)
    targets = {"vgg": (vgg_mean[0].item(), vgg_cov[0, 0].item()),
               "tilt": (problem.target.means[0, 0].item(), problem.target.covs[0, 0, 0].item())}
    x0 = torch.randn(4000, 2, generator=torch.Generator().manual_seed(1))
    print(f"gaussian problem, batch {args.batch}, K = {args.steps}, {args.iterations} iterations, 1 thread")
    for name in METHODS:
        torch.manual_seed(0)
        method, defaults = build_method(name, problem.flow("exact"), problem.reward, problem.beta,
                                        batch_size=args.batch, solver_steps=args.steps)
        defaults.pop("train_steps")
        counts = count_evaluations(method)
        target = targets["tilt" if name == "adjoint-matching" else "vgg"]
        reached, clock, in_checks = [None], time.process_time(), [0.0]

        def check(step: int) -> dict:
            start = time.process_time()
            with torch.no_grad():
                x = sample_ode(method.model.velocity, x0)
            error = max(abs(x[:, 0].mean().item() / target[0] - 1), abs(x.var(0).mean().item() / target[1] - 1))
            if error < 0.1 and reached[0] is None:
                reached[0] = step
            in_checks[0] += time.process_time() - start
            return {"target_error": error}

        result = finetune(method, args.iterations, callback=check, callback_every=10, progress=False, **defaults)
        cpu = time.process_time() - clock - in_checks[0]  # training only: the evaluations are not the method's cost
        rows = args.batch * (len(method.transition_indices()) if hasattr(method, "transition_indices")
                             else len(method.time_indices()))
        evaluations = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()) if k.endswith("calls"))
        print(f"\n{name}: {cpu / args.iterations * 1e3:.0f} CPU-ms/iteration; "
              f"final error vs its target {result.column('target_error')[-1]:.3f}")
        reached_at = f"iteration {reached[0]}, ≈ {cpu * reached[0] / args.iterations:.0f} CPU-s" if reached[0] else "not reached"
        print(f"  within 10 % of its own target at {reached_at}")
        print(f"  network forward calls per iteration: {evaluations}")
        print(f"  rows through the networks per regression row: " + ", ".join(
            f"{k.split()[0]} {v / rows:.1f}" for k, v in sorted(counts.items()) if k.endswith("rows")))


if __name__ == "__main__":
    main()
