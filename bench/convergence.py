"""CPU seconds (training only, one thread) and reward-gradient evaluations until the per-mode mass error against the
exact tilt first reaches <= 0.03, per method, each with its registry ``default_training`` (steps, lr, schedule, EMA).
Runs through ``flowlite.jobs.bench.run_bench`` (so the numbers are the benchmark's own) with dense curves: every
1/``--points`` of training, 4000 Heun-25 ODE samples from fixed noises. Prints a markdown table; asserts nothing.

    OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python bench/convergence.py [--problem reweight] [--jobs 2]

A method whose target is not the tilt (ReFL, DRaFT, the non-memoryless control, VGG-Flow) is not expected to get
there; it is listed with its best value.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from flowlite.jobs.bench import run_bench
from flowlite.methods import METHODS


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--problem", default="reweight")
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--threshold", type=float, default=0.03)
    parser.add_argument("--points", type=int, default=30)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = tempfile.mkdtemp(prefix="flowlite-convergence-")
    bench = run_bench([args.problem], args.methods, seeds=[args.seed], out=out, curve_points=args.points,
                      curve_samples=4000, own_optimum_n=0, jobs=args.jobs, progress=False, log=lambda s: None)
    print(f"# time to per-mode mass error <= {args.threshold} on {args.problem!r}, exact base, batch 256, K = 50, "
          f"{time.strftime('%Y-%m-%d')}, torch {torch.__version__}, 1 thread per run, {args.jobs} runs at once")
    print("| method | default iterations | reached at iteration | CPU s | ∇r evaluations | best mode error (CPU s) "
          "| final mode error |\n|---|---|---|---|---|---|---|")
    for res in bench["results"]:
        r, curve = res["record"], res["curve"]
        hit = next((p for p in curve if p["mode_error"] <= args.threshold), None)
        best = min(curve, key=lambda p: p["mode_error"])
        grads_per_it = r["reward_grad_evals"] / max(r["iterations"], 1)
        reached = (f"{hit['step']} | {hit['cpu_seconds']:.1f} | {grads_per_it * hit['step']:.0f}" if hit else
                   "not reached | — | —")
        print(f"| {r['method']} | {r['iterations']} | {reached} | {best['mode_error']:.3f} ({best['cpu_seconds']:.0f}) "
              f"| {r['mode_error']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
