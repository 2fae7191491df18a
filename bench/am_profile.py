"""Where one Adjoint Matching iteration spends its time: `reweight`, exact base, B = 256, K = 50, one thread.

Prints the CPU seconds per iteration (time.process_time, optimiser step included), the top-10 Python functions by
cumulative time (cProfile) and the top-10 torch operators by self CPU time (torch.profiler). Asserts nothing.

    OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python bench/am_profile.py [--width 128 --depth 4] [--iterations 10]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import time

import torch

from flowlite.methods import AdjointMatching
from flowlite.toy.nets import MLPVelocity
from flowlite.toy.problems import load_problem


def make_iteration(width: int | None, depth: int, batch: int, steps: int):
    problem = load_problem("reweight")
    residual = None if width is None else MLPVelocity(2, width=width, depth=depth, time_dim=16, max_frequency=4.0,
                                                      zero_init=True)
    torch.manual_seed(0)
    method = AdjointMatching(problem.flow("exact", residual), problem.reward, problem.beta, batch_size=batch,
                             solver_steps=steps)
    opt = torch.optim.AdamW(method.parameter_groups(), lr=3e-3, weight_decay=0.0)

    def iteration():
        opt.zero_grad()
        loss, _ = method.loss(0)
        loss.backward()
        opt.step()

    return iteration


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--width", type=int, default=None, help="residual width (default: default_residual)")
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--iterations", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(1)
    iteration = make_iteration(args.width, args.depth, args.batch, args.steps)
    iteration()
    start = time.process_time()
    for _ in range(args.iterations):
        iteration()
    print(f"CPU s per iteration: {(time.process_time() - start) / args.iterations:.3f}")

    profiler = cProfile.Profile()
    profiler.runcall(lambda: [iteration() for _ in range(3)])
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(r"flowlite|torch/nn|autograd", 10)
    print(out.getvalue().split("ncalls", 1)[-1].join(("ncalls", "")) if "ncalls" in out.getvalue() else out.getvalue())

    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            iteration()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=10))


if __name__ == "__main__":
    main()
