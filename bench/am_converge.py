"""Adjoint Matching convergence, iteration for iteration: the flat yardstick loop of ``minimal_am.py`` trained with
Adam + an EMA of the weights, next to flowlite's ``AdjointMatching`` through ``finetune``, same seed, same width,
same evaluation (4000 Heun ODE samples of the averaged model from the bench's fixed noise, ``mode_mass_error``
against the closed-form tilt). Then the tails remedies on the flat loop, each an option whose fixed point is still
the tilt (theory §11.1):

* ``--continuations M --branch-time t_b``: Rao–Blackwell continuations. B/M trajectories run to t_b, each then
  branches into M independent continuations; at t ≤ t_b every regression row takes the lean adjoint averaged over its
  M continuations (the adjoint is linear in a(t_b) along the shared prefix, so this is the same average carried
  back): an estimate of E[a_t | X_t] with less variance, same regression rows, same fixed point.
* ``--batch-size`` with ``--lr``: larger batch with a matched step.
* ``--time-weight late|early``: regression rows at t ≤ 0.5 weighted 1/2 (``late``) or 2 (``early``) — a weight that
  depends on t only, so each time's minimiser, hence the fixed point, is unchanged.
* ``--state-weight c``: importance weighting of rows by the state alone, w(X_t) = 1 / (1 + c·H(X_t)), H the entropy
  of the base's posterior over its components at (X_t, t), normalised per time — down-weights the ridges between
  modes, where the heavy-tailed targets come from (theory §11.1); a weight of X_t only, so the conditional mean of
  the target given X_t, hence the fixed point, is unchanged.
* ``--offline``: a diagnosis, not a remedy: trajectories sampled with the exact v* (the fixed point) instead of the
  model, so the regression targets have a fixed law; what remains is the optimiser on heavy-tailed targets.
* ``--ema-warmup w``: EMA decay min(d, (1+i)/(w+i)): the average spans ≈ (w+i)/(w-1) iterations (w = 10: i/9).

Prints one markdown row per run: CPU s per iteration (training only), total CPU s, first CPU s at ≤ 2× floor, median
of the last five evaluations (and its ratio to the floor), median of the last five "fraction of the base's per-mode gap
left" (+: under-tilted, −: over-tilted), mode error every ``--eval-every`` iterations. Asserts nothing.

    OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python bench/am_converge.py --problem reweight --iterations 150 \
        --runs flat:constant flowlite:constant flowlite:cosine
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from minimal_am import PlainResidual, isotropic_mixture_velocity  # noqa: E402

from flowlite.finetune import finetune  # noqa: E402
from flowlite.jobs.bench import EVAL_STEPS, eval_noise  # noqa: E402
from flowlite.methods import AdjointMatching  # noqa: E402
from flowlite.schedules import exponential_integrator_coefficients  # noqa: E402
from flowlite.solvers import sample_ode  # noqa: E402
from flowlite.toy.metrics import mode_mass_error, mode_weights, noise_floor  # noqa: E402
from flowlite.toy.nets import MLPVelocity  # noqa: E402
from flowlite.toy.problems import load_problem  # noqa: E402


def evaluate(velocity, problem, x0) -> tuple[float, float]:
    """Mode error against the tilt, and the fraction of the base's per-mode gap left along the tilt's direction
    (1 at the base, 0 at the tilt, > 0: under-tilted)."""
    x = sample_ode(lambda x, t, c=None: velocity(x, t), x0, steps=EVAL_STEPS)
    w, w_tilt = mode_weights(x, problem.target), problem.target.weights.float()
    gap = mode_weights(problem.base.sample(20000, generator=torch.Generator().manual_seed(0)), problem.target) - w_tilt
    return mode_mass_error(x, problem.target), float((w - w_tilt) @ gap / (gap @ gap))


def lr_at(i: int, n: int, lr: float, schedule: str) -> float:
    return lr if schedule == "constant" else 0.5 * lr * (1 + torch.cos(torch.tensor(torch.pi * i / n)).item())


def flat_run(problem, x0, iterations: int, width: int, lr: float, schedule: str, ema_decay: float, batch: int,
             steps: int, eval_every: int, continuations: int = 1, branch_time: float = 0.5,
             time_weight: str = "none", state_weight: float = 0.0,
             ema_warmup: float = 10.0, beta2: float = 0.999, offline: bool = False,
             sgd: bool = False) -> list[tuple[int, float, float]]:
    """The flat loop with Adam, the EMA min(decay, (1+i)/(10+i)), and the remedies; returns (iteration, CPU s, err)."""
    v_base, net = isotropic_mixture_velocity(problem.base), PlainResidual(width, 4)
    v_star = isotropic_mixture_velocity(problem.target)
    shadow = [p.detach().clone() for p in net.parameters()]
    opt = (torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9) if sgd
           else torch.optim.Adam(net.parameters(), lr=lr, betas=(0.9, beta2)))
    times = torch.linspace(0, 1, steps + 1, dtype=torch.float64).tolist()
    coef = [exponential_integrator_coefficients(t, u) for t, u in zip(times[:-1], times[1:])]
    t_rows = [torch.full((batch,), t) for t in times]
    t_inner = torch.cat(t_rows[1:steps])
    eta = ((1 - t_inner) / t_inner)[:, None]
    kb = round(branch_time * steps) if continuations > 1 else 0
    w_time = torch.ones(steps - 1)
    if time_weight != "none":
        early = torch.tensor(times[1:steps]) <= 0.5
        w_time[early] = 0.5 if time_weight == "late" else 2.0
    w_time = (w_time / w_time.mean()).repeat_interleave(batch)
    curve, cpu = [], 0.0

    def ema_velocity(x, t):
        backup = [p.detach().clone() for p in net.parameters()]
        with torch.no_grad():
            for p, s in zip(net.parameters(), shadow):
                p.copy_(s)
            out = v_base(x, t) + net(x, t)
            for p, b in zip(net.parameters(), backup):
                p.copy_(b)
        return out

    for i in range(iterations + 1):
        if i % eval_every == 0 or i == iterations:
            curve.append((i, cpu, *evaluate(ema_velocity, problem, x0)))
        if i == iterations:
            break
        start = time.process_time()
        xs = [torch.randn(batch // continuations, 2)]
        with torch.no_grad():
            for k, (a, b, s) in enumerate(coef):
                x = xs[-1]
                if k == kb and continuations > 1:
                    xs = [y.repeat_interleave(continuations, 0) for y in xs]
                    x = xs[-1]
                tk = t_rows[k][: x.shape[0]]
                v = v_star(x, tk) if offline else v_base(x, tk) + net(x, tk)
                xs.append(a * x + b * v + s * torch.randn_like(x))
        x1 = xs[-1].requires_grad_(True)
        (g,) = torch.autograd.grad(problem.reward(x1).sum(), x1)
        adj = [-problem.beta * g]
        for k in range(steps - 1, 0, -1):
            xk = xs[k].requires_grad_(True)
            (vjp,) = torch.autograd.grad(v_base(xk, t_rows[k]), xk, adj[-1])
            a_k = coef[k][0] * adj[-1] + coef[k][1] * vjp
            if k == kb and continuations > 1:  # Rao–Blackwell: average over the continuations of each prefix
                a_k = a_k.reshape(-1, continuations, 2).mean(1).repeat_interleave(continuations, 0)
            adj.append(a_k)
        target = -eta * torch.cat(adj[:0:-1])
        x_reg = torch.cat(xs[1:steps]).detach()
        per_row = ((net(x_reg, t_inner) - target) ** 2).sum(-1) * w_time
        if state_weight > 0:
            with torch.no_grad():
                resp = base_responsibilities(problem, x_reg, t_inner)
                w = 1 / (1 + state_weight * -(resp * resp.clamp_min(1e-12).log()).sum(-1))
                w = w.reshape(steps - 1, batch)
                w = (w / w.mean(1, keepdim=True)).reshape(-1)
            per_row = per_row * w
        loss = per_row.mean()
        for group in opt.param_groups:
            group["lr"] = lr_at(i, iterations, lr, schedule)
        opt.zero_grad()
        loss.backward()
        opt.step()
        d = min(ema_decay, (1 + i) / (ema_warmup + i)) if ema_decay > 0 else 0.0
        with torch.no_grad():
            for s_, p in zip(shadow, net.parameters()):
                s_.lerp_(p.detach(), 1 - d)
        cpu += time.process_time() - start
    return curve


def base_responsibilities(problem, x, t):
    """Posterior responsibilities of the base's components at (x, t), isotropic mixture (closed form)."""
    base = problem.base
    lam, mu, logw = base.covs[:, 0, 0].float(), base.means.float(), base.weights.float().log()
    t = t.reshape(-1, 1)
    s = (1 - t) ** 2 + t**2 * lam
    diff = x.detach()[:, None, :] - t[..., None] * mu
    return torch.softmax(logw - s.log() - (diff * diff).sum(-1) / (2 * s), dim=-1)


def flowlite_run(problem, x0, iterations: int, width: int, lr: float, schedule: str, ema_decay: float, batch: int,
                 steps: int, eval_every: int, **options) -> list[tuple[int, float, float]]:
    residual = MLPVelocity(2, width=width, depth=4, time_dim=16, max_frequency=4.0, zero_init=True)
    method = AdjointMatching(problem.flow(residual=residual), problem.reward, problem.beta, batch_size=batch,
                             solver_steps=steps, **options)
    curve, clock = [], {"start": time.process_time(), "eval": 0.0}

    def callback(step: int) -> dict:
        start = time.process_time()
        cpu = start - clock["start"] - clock["eval"]
        curve.append((step, cpu, *evaluate(lambda x, t: method.model.velocity(x, t, None), problem, x0)))
        clock["eval"] += time.process_time() - start
        return {}

    callback(0)
    finetune(method, iterations, lr=lr, lr_schedule=schedule, ema_decay=ema_decay or None, grad_clip=None,
             callback=callback, callback_every=eval_every, progress=False)
    if curve[-1][0] != iterations:  # the model holds the averaged weights now
        curve.append((iterations, curve[-1][1], *evaluate(lambda x, t: method.model.velocity(x, t, None), problem, x0)))
    return curve


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--problem", default="reweight")
    p.add_argument("--beta", type=float)
    p.add_argument("--iterations", type=int, default=150)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--ema-decay", type=float, default=0.998)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--eval-every", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--continuations", type=int, default=1)
    p.add_argument("--branch-time", type=float, default=0.5)
    p.add_argument("--time-weight", choices=("none", "late", "early"), default="none")
    p.add_argument("--state-weight", type=float, default=0.0)
    p.add_argument("--beta2", type=float, default=0.999, help="flat runs: Adam's second-moment decay")
    p.add_argument("--sgd", action="store_true", help="flat runs: SGD with momentum 0.9 instead of Adam")
    p.add_argument("--offline", action="store_true", help="flat runs: trajectories of the exact v*, not the model")
    p.add_argument("--ema-warmup", type=float, default=10.0, help="flat runs: decay min(d, (1+i)/(w+i))")
    p.add_argument("--time-subset", choices=("all", "recipe"), default="all", help="flowlite runs only")
    p.add_argument("--runs", nargs="+", default=["flat:constant", "flowlite:constant", "flowlite:cosine"])
    args = p.parse_args()
    torch.set_num_threads(1)
    problem = load_problem(args.problem)
    if args.beta is not None:
        problem = problem.with_beta(args.beta)
    x0 = eval_noise(problem, 4000)
    floor = noise_floor(mode_mass_error, problem.target, n=4000).mean
    exact = evaluate(lambda x, t: problem.target.velocity(x.double(), t.double()).float(), problem, x0)[0]
    base_err = evaluate(lambda x, t: problem.base.velocity(x.double(), t.double()).float(), problem, x0)[0]
    remedy = (f"continuations {args.continuations} at t_b {args.branch_time}, time weight {args.time_weight}, "
              f"state weight {args.state_weight}, EMA warm-up {args.ema_warmup}, Adam β2 {args.beta2}, offline {args.offline}, SGD {args.sgd}, time subset {args.time_subset}")
    print(f"# {args.problem} β={problem.beta}: floor {floor:.4f}, exact v* on the eval noise {exact:.4f}, base "
          f"{base_err:.4f}; width {args.width}, B={args.batch_size}, K={args.steps}, lr {args.lr}, EMA "
          f"{args.ema_decay}, seed {args.seed}; {remedy}; {time.strftime('%Y-%m-%d %H:%M')}, load {open('/proc/loadavg').read().split()[:3]}",
          flush=True)
    for run in args.runs:
        kind, schedule = run.split(":")
        torch.manual_seed(args.seed)
        common = dict(iterations=args.iterations, width=args.width, lr=args.lr, schedule=schedule,
                      ema_decay=args.ema_decay, batch=args.batch_size, steps=args.steps, eval_every=args.eval_every)
        if kind == "flat":
            curve = flat_run(problem, x0, continuations=args.continuations, branch_time=args.branch_time,
                             time_weight=args.time_weight, state_weight=args.state_weight,
                             ema_warmup=args.ema_warmup, beta2=args.beta2,
                             offline=args.offline, sgd=args.sgd, **common)
        else:
            curve = flowlite_run(problem, x0, time_subset=args.time_subset, **common)
        first = next((c for i, c, e, _ in curve if e <= 2 * floor), None)
        last5 = statistics.median(e for _, _, e, _ in curve[-5:])
        left5 = statistics.median(f for _, _, _, f in curve[-5:])
        per_it = curve[-1][1] / max(curve[-1][0], 1)
        errs = " ".join(f"{e:.3f}" for _, _, e, _ in curve)
        print(f"| {run} | {per_it:.3f} | {curve[-1][1]:.0f} | {'never' if first is None else f'{first:.1f}'} "
              f"| {last5:.4f} | {last5 / floor:.1f}× | {left5:+.2f} | {errs} |", flush=True)


if __name__ == "__main__":
    main()
