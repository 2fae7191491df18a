"""Adjoint Matching against issue-style targets: CPU seconds of training until the per-mode mass error first reaches
2× its noise floor, and the median of the last five evaluations at the end of a CPU budget, with the default
residual (4 × 256) and a 4 × 128 one, side by side in one run. Prints a markdown table; asserts nothing.

Problems: the shipped ``reweight`` and ``kill`` (40 CPU s, the demo budget), ``reweight`` at β = 3 (strong tilt,
120 CPU s), and ``ring8``, a problem the repository does not ship (8 modes on a circle, unequal weights, a quadratic
reward off-centre; 40 CPU s). Each run goes through ``flowlite.jobs.bench.run_one`` (the benchmark's own budget,
``default_training`` with its cosine schedule fitted to the budget, curves of 4000 Heun ODE samples from fixed noise).

    OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python bench/am_targets.py [--widths 256 128] [--points 20]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from pathlib import Path

import torch

import flowlite.toy.flow as toy_flow
from flowlite.jobs.bench import run_one
from flowlite.methods import AdjointMatching
from flowlite.toy.metrics import mode_mass_error, noise_floor
from flowlite.toy.nets import MLPVelocity
from flowlite.toy.problems import load_problem


def ring8() -> dict:
    angles = [2 * math.pi * k / 8 for k in range(8)]
    weights = [0.22, 0.04, 0.18, 0.08, 0.16, 0.1, 0.14, 0.08]
    return {"name": "ring8", "description": "8 modes on a circle of radius 3, not shipped (bench/am_targets.py)",
            "base": {"weights": weights, "means": [[3 * math.cos(a), 3 * math.sin(a)] for a in angles],
                     "covs": [[[0.2, 0.0], [0.0, 0.2]]] * 8},
            "reward": {"type": "quadratic", "A": [[0.3, 0.0], [0.0, 0.3]], "m": [1.5, 2.0], "c": 0.0}, "beta": 1.0}


def strong_reweight() -> dict:
    spec = json.loads((Path(__file__).resolve().parents[1] / "data/problems/reweight.json").read_text())
    return {**spec, "name": "reweight_beta3", "beta": 3.0}


def residual_of_width(width: int):
    return lambda dim=2: MLPVelocity(dim, width=width, depth=4, time_dim=16, max_frequency=4.0, zero_init=True)


def measure(problem: str, budget: float, width: int, points: int, seed: int, batch_size: int = 256,
            method_options: dict | None = None) -> dict:
    toy_flow.default_residual = residual_of_width(width)
    run = run_one(problem, "adjoint-matching", seed=seed, budget_seconds=budget, curve_points=points,
                  curve_samples=4000, progress=False, batch_size=batch_size, method_options=method_options)
    target = load_problem(problem).target
    floor = noise_floor(mode_mass_error, target, n=4000).mean
    curve = run["curve"]
    first = next((p["cpu_seconds"] for p in curve if p["mode_error"] <= 2 * floor), None)
    last5 = statistics.median(p["mode_error"] for p in curve[-5:])
    return {"floor": floor, "first": first, "last5": last5, "iterations": run["record"]["iterations"],
            "per_iteration": run["record"]["cpu_seconds"] / max(run["record"]["iterations"], 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--widths", type=int, nargs="+", default=[256, 128])
    parser.add_argument("--points", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="*", help="cases to run: reweight kill ring8 strong (default: all)")
    parser.add_argument("--lr-schedule", choices=("constant", "cosine"), help="override default_training's")
    parser.add_argument("--lr", type=float, help="override default_training's")
    parser.add_argument("--ema-decay", type=float, help="override default_training's (0: no EMA)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--weighting", choices=("velocity", "control"), default="velocity")
    parser.add_argument("--time-subset", choices=("all", "recipe"), default="all")
    args = parser.parse_args()
    torch.set_num_threads(1)
    training = dict(AdjointMatching.default_training)  # run_one trains with the registry's default_training
    for key, value in (("lr_schedule", args.lr_schedule), ("lr", args.lr), ("ema_decay", args.ema_decay)):
        if value is not None:
            training[key] = None if key == "ema_decay" and value == 0 else value
    AdjointMatching.default_training = training
    folder = Path(tempfile.mkdtemp(prefix="flowlite-am-targets-"))
    extra = {}
    for spec in (ring8(), strong_reweight()):
        extra[spec["name"]] = folder / f"{spec['name']}.json"
        extra[spec["name"]].write_text(json.dumps(spec))
    cases = [("reweight", "reweight", 40.0), ("kill", "kill", 40.0), ("ring8", str(extra["ring8"]), 40.0),
             ("reweight β=3", str(extra["reweight_beta3"]), 120.0)]
    keys = {"reweight": "reweight", "kill": "kill", "ring8": "ring8", "reweight β=3": "strong"}
    cases = [c for c in cases if not args.only or keys[c[0]] in args.only]
    training = {k: v for k, v in AdjointMatching.default_training.items() if k != "train_steps"}
    print(f"# Adjoint Matching to 2× floor, exact base, B = {args.batch_size}, K = 50, seed {args.seed}, {training}, "
          f"weighting {args.weighting}, times {args.time_subset}, "
          f"{time.strftime('%Y-%m-%d')}, torch {torch.__version__}, 1 thread")
    print("| problem | budget CPU s | residual | CPU s / it | iterations | floor | first ≤ 2× floor at CPU s "
          "| median of last 5 | ≤ 2× floor at the end |\n|---|---|---|---|---|---|---|---|---|")
    for label, problem, budget in cases:
        for width in args.widths:
            r = measure(problem, budget, width, args.points, args.seed, args.batch_size,
                        {"weighting": args.weighting, "time_subset": args.time_subset})
            first = f"{r['first']:.1f}" if r["first"] is not None else "never"
            print(f"| {label} | {budget:.0f} | 4 × {width} | {r['per_iteration']:.3f} | {r['iterations']} "
                  f"| {r['floor']:.4f} | {first} | {r['last5']:.4f} | {'yes' if r['last5'] <= 2 * r['floor'] else 'no'} |",
                  flush=True)


if __name__ == "__main__":
    main()
