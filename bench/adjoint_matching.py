"""Adjoint Matching on this machine: per-iteration cost against a minimal hand-written loop of the same maths,
time and reward-gradient evaluations to reach per-mode mass error <= 0.03, and peak memory versus the number of
solver steps K (against DRaFT through all steps). Prints figures; asserts nothing.

    OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python bench/adjoint_matching.py [--part all|speed|converge|memory]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

from flowlite.finetune import finetune
from flowlite.methods import AdjointMatching, DRaFT
from flowlite.toy.metrics import mode_mass_error
from flowlite.toy.problems import load_problem
from minimal_am import minimal_am_iteration


def per_iteration(fn, repeats: int) -> float:
    fn()  # warm-up
    start = time.process_time()
    for _ in range(repeats):
        fn()
    return (time.process_time() - start) / repeats


def speed(problem, repeats: int = 4):
    """flowlite's iteration (``finetune`` with AM's default training: AdamW, cosine, EMA, logging) against the
    minimal loop of ``minimal_am.py`` with a residual of the same size, timed in turn in one process."""
    print("## CPU seconds per iteration (1 thread), exact base, batch 256")
    print("| K | flowlite | minimal loop | ratio |\n|---|---|---|---|")
    options = {k: v for k, v in AdjointMatching.default_training.items() if k != "train_steps"}
    for steps in (50, 100):
        torch.manual_seed(0)
        method = AdjointMatching(problem.flow("exact"), problem.reward, problem.beta, batch_size=256,
                                 solver_steps=steps)
        width, depth = method.model.residual.config["width"], method.model.residual.config["depth"]
        minimal = minimal_am_iteration(problem, 256, steps, width, depth)
        ours, theirs = [], []
        block = 5
        for i in range(repeats + 1):  # alternate blocks, so both see the same load; the first pair warms up
            for fn, times in ((lambda: finetune(method, block, progress=False, **options), ours),
                              (lambda: [minimal() for _ in range(block)], theirs)):
                start = time.process_time()
                fn()
                if i:
                    times.append((time.process_time() - start) / block)
        a, b = sorted(ours)[repeats // 2], sorted(theirs)[repeats // 2]
        print(f"| {steps} | {a:.3f} | {b:.3f} | {a / b:.2f} |", flush=True)


def converge(problem, threshold: float = 0.03, max_iters: int = 600, every: int = 10):
    print(f"## reaching per-mode mass error <= {threshold} on {problem.name!r} (exact base, batch 256, K = 50)")
    torch.manual_seed(0)
    method = AdjointMatching(problem.flow("exact"), problem.reward, problem.beta, batch_size=256, solver_steps=50,
                             weighting="velocity")
    gen_x0 = torch.randn(4000, 2, generator=torch.Generator().manual_seed(1))
    state = {"hit": None}
    clock = time.process_time()

    def evaluate(step):
        from flowlite.solvers import sample_ode

        with torch.no_grad():
            x = sample_ode(method.model.velocity, gen_x0, steps=20)
        err = mode_mass_error(x, problem.target)
        if err <= threshold and state["hit"] is None:
            state["hit"] = (step, time.process_time() - clock)
        return {"mode_error": err}

    result = finetune(method, max_iters, lr=3e-3, grad_clip=None, ema_decay=0.998, callback=evaluate,
                      callback_every=every, progress=False)
    curve = [(r["step"], round(r["mode_error"], 3)) for r in result.history if "mode_error" in r]
    if state["hit"]:
        step, secs = state["hit"]
        print(f"reached at iteration {step}: {secs:.1f} CPU s (evaluation included), "
              f"{step * 256} reward-gradient evaluations")
    else:
        print(f"not reached in {max_iters} iterations")
    print("curve:", curve)


def memory_child(kind: str, steps: int) -> None:
    problem = load_problem("reweight")
    torch.manual_seed(0)
    flow = problem.flow("exact")
    if kind == "adjoint-matching":
        # a fixed number of regression times (10 late + 10 early), so only the stored trajectory grows with K
        method = AdjointMatching(flow, problem.reward, problem.beta, batch_size=1024, solver_steps=steps,
                                 time_subset="recipe", late_fraction=10 / steps, n_early=10)
    else:
        method = DRaFT(flow, problem.reward, k="all", batch_size=1024, solver_steps=steps)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    loss, _ = method.loss(0)
    loss.backward()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"peak_extra_mib": (after - before) / 1024}))


def memory():
    print("## peak extra memory of one iteration (MiB of RSS), batch 1024, exact base; "
          "Adjoint Matching regresses on 20 times")
    print("| K | adjoint-matching | draft-all |\n|---|---|---|")
    for steps in (20, 50, 100, 200):
        row = []
        for kind in ("adjoint-matching", "draft"):
            out = subprocess.run([sys.executable, __file__, "--memory-child", kind, str(steps)],
                                 capture_output=True, text=True, check=True)
            row.append(json.loads(out.stdout.strip().splitlines()[-1])["peak_extra_mib"])
        print(f"| {steps} | {row[0]:.0f} | {row[1]:.0f} |")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--part", default="all", choices=["all", "speed", "converge", "memory"])
    parser.add_argument("--problem", default="reweight")
    parser.add_argument("--memory-child", nargs=2, metavar=("KIND", "STEPS"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.memory_child:
        memory_child(args.memory_child[0], int(args.memory_child[1]))
        return
    problem = load_problem(args.problem)
    print(f"# Adjoint Matching bench, {time.strftime('%Y-%m-%d')}, torch {torch.__version__}, 1 thread")
    if args.part in ("all", "speed"):
        speed(problem)
    if args.part in ("all", "memory"):
        memory()
    if args.part in ("all", "converge"):
        converge(problem)


if __name__ == "__main__":
    main()
