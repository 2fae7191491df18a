"""Peak extra memory of one training iteration against the number of solver steps K, for Adjoint Matching,
VGG-Flow and DRaFT through all steps (batch 1024, exact base). Each measurement runs in a fresh process and reads
the growth of its peak RSS over one loss + backward. Prints a markdown table; asserts nothing.

    OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python bench/memory.py [--steps 20 50 100 200]

Adjoint Matching regresses on a fixed 20 grid times (10 late + 10 early, the paper's recipe) so only the stored
trajectory, (K+1)·B·2 floats (1.6 MiB at K = 200), grows with K; VGG-Flow uses its default transitions per
trajectory; DRaFT-all keeps the autograd graph of every step.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

KINDS = ("adjoint-matching", "vgg-flow", "draft")


def child(kind: str, steps: int, batch: int) -> None:
    from flowlite.methods import build_method
    from flowlite.toy.problems import load_problem

    torch.set_num_threads(1)
    problem = load_problem("reweight")
    torch.manual_seed(0)
    options = {"adjoint-matching": {"time_subset": "recipe", "late_fraction": 10 / steps, "n_early": 10},
               "draft": {"k": "all"}}.get(kind, {})
    method, _ = build_method(kind, problem.flow("exact"), problem.reward, problem.beta, batch_size=batch,
                             solver_steps=steps, **options)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    loss, _ = method.loss(10**6)
    loss.backward()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"peak_extra_mib": (after - before) / 1024}))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", nargs="+", type=int, default=[20, 50, 100, 200])
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--child", nargs=2, metavar=("KIND", "STEPS"))
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), args.batch)
        return
    print(f"# peak extra memory of one iteration (MiB of RSS), batch {args.batch}, exact base, reweight, "
          f"{time.strftime('%Y-%m-%d')}, torch {torch.__version__}")
    print("| K | " + " | ".join(KINDS) + " |\n|---" * 1 + "|---" * len(KINDS) + "|")
    table = {}
    for steps in args.steps:
        row = []
        for kind in KINDS:
            out = subprocess.run([sys.executable, __file__, "--child", kind, str(steps), "--batch", str(args.batch)],
                                 capture_output=True, text=True, check=True)
            row.append(json.loads(out.stdout.strip().splitlines()[-1])["peak_extra_mib"])
        table[steps] = row
        print(f"| {steps} | " + " | ".join(f"{v:.0f}" for v in row) + " |", flush=True)
    lo, hi = min(table), max(table)
    for i, kind in enumerate(KINDS):
        print(f"{kind}: K = {hi} / K = {lo} peak ratio {table[hi][i] / max(table[lo][i], 1e-9):.2f}")


if __name__ == "__main__":
    main()
