"""Iterations/s and reward-gradient evaluations/s of every registered method at batch 256 and 1024 and K = 20/50/100
solver steps, against a minimal hand-written loop of the same maths where one makes sense (Adjoint Matching, ReFL,
DRaFT-1, offline RWR; `minimal_am.py`'s closed-form isotropic velocity and a plain MLP of the residual's size), so
flowlite's overhead is a ratio. CPU time, one torch thread; prints a markdown table.

    OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python bench/throughput.py [--batches 256 1024] [--steps 20 50 100]
"""

from __future__ import annotations

import argparse
import time

import torch

from adjoint_matching import per_iteration
from minimal_am import PlainResidual, isotropic_mixture_velocity, minimal_am_iteration
from flowlite.rewards.counting import CountingReward
from flowlite.finetune import finetune
from flowlite.methods import METHODS, build_method
from flowlite.toy.problems import load_problem


def minimal_refl(problem, batch: int, steps: int):
    """ReFL written out: Euler ODE without grad to a random late step, one step with grad, -r(x̂1)."""
    v_base, net = isotropic_mixture_velocity(problem.base), PlainResidual(128, 4)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=0.0)
    h = 1.0 / steps

    def iteration():
        k = int(torch.randint(int(0.75 * steps), steps, ()))
        x = torch.randn(batch, 2)
        with torch.no_grad():
            for i in range(k):
                t = torch.full((batch,), i * h)
                x = x + h * (v_base(x, t) + net(x, t))
        t = torch.full((batch,), k * h)
        x1 = x + (1 - k * h) * (v_base(x, t) + net(x, t))
        loss = -problem.reward(x1).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()

    return iteration


def minimal_draft(problem, batch: int, steps: int):
    """DRaFT-1 written out: Euler ODE without grad, the last step with grad, -r(x1)."""
    v_base, net = isotropic_mixture_velocity(problem.base), PlainResidual(128, 4)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=0.0)
    h = 1.0 / steps

    def iteration():
        x = torch.randn(batch, 2)
        with torch.no_grad():
            for i in range(steps - 1):
                t = torch.full((batch,), i * h)
                x = x + h * (v_base(x, t) + net(x, t))
        t = torch.full((batch,), 1 - h)
        loss = -problem.reward(x + h * (v_base(x, t) + net(x, t))).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()

    return iteration


def minimal_rwr(problem, batch: int, steps: int, n_samples: int = 20000):
    """Offline RWR written out: fixed weighted base samples, one weighted flow-matching step per iteration."""
    v_base, net = isotropic_mixture_velocity(problem.base), PlainResidual(128, 4)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.0)
    data = problem.base.sample(n_samples).float()
    weights = torch.softmax(problem.beta * problem.reward(data), 0) * n_samples

    def iteration():
        idx = torch.randint(0, n_samples, (batch,))
        x1, w = data[idx], weights[idx]
        x0, t = torch.randn(batch, 2), torch.rand(batch)
        xt = t[:, None] * x1 + (1 - t[:, None]) * x0
        loss = (w * ((v_base(xt, t) + net(xt, t) - (x1 - x0)) ** 2).sum(-1)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    return iteration


MINIMAL = {"adjoint-matching": minimal_am_iteration, "refl": minimal_refl, "draft": minimal_draft,
           "rwr": minimal_rwr}


def repeats_for(seconds_per_iteration: float, target: float = 2.0) -> int:
    """Enough iterations for about ``target`` CPU seconds of timing (at least 2, at most 200)."""
    return max(2, min(200, int(target / max(seconds_per_iteration, 1e-4))))


def flowlite_seconds(problem, name: str, batch: int, steps: int) -> tuple[float, float, int]:
    """CPU seconds per iteration of ``finetune(method, n)`` — the real loop with the method's default training
    (optimiser, schedule, EMA, clipping, logging) — and ∇r evaluations per iteration, counted. AC-Flow is timed
    past its critic-only warm-up."""
    torch.manual_seed(0)
    reward = CountingReward(problem.reward)
    extra = {"warmup": 0} if name == "ac-flow" else {}
    method, options = build_method(name, problem.flow("exact"), reward, problem.beta, batch_size=batch,
                                   solver_steps=steps, **extra)
    options.pop("train_steps", None)
    clock = time.process_time()
    finetune(method, 1, progress=False, **options)  # warm-up
    n = repeats_for(time.process_time() - clock)
    before = reward.gradient_evaluations
    clock = time.process_time()
    finetune(method, n, progress=False, **options)
    secs = (time.process_time() - clock) / n
    return secs, (reward.gradient_evaluations - before) / n, n


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", nargs="+", type=int, default=[256, 1024])
    parser.add_argument("--steps", nargs="+", type=int, default=[20, 50, 100])
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    problem = load_problem("reweight")
    print(f"# throughput, {time.strftime('%Y-%m-%d')}, torch {torch.__version__}, 1 thread, exact base, reweight")
    print("| method | batch | K | it/s | ∇r evals/s | minimal loop it/s | flowlite / minimal (time) |")
    print("|---|---|---|---|---|---|---|")
    for name in args.methods:
        for batch in args.batches:
            for steps in args.steps:
                secs, grads, n = flowlite_seconds(problem, name, batch, steps)
                minimal = "—"
                ratio = "—"
                if name in MINIMAL:
                    torch.manual_seed(0)
                    m = per_iteration(MINIMAL[name](problem, batch, steps), n)
                    minimal, ratio = f"{1 / m:.2f}", f"{secs / m:.2f}"
                print(f"| {name} | {batch} | {steps} | {1 / secs:.2f} | {grads / secs:.0f} | {minimal} | {ratio} |",
                      flush=True)


if __name__ == "__main__":
    main()
