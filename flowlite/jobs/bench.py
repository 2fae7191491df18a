"""The main job: every registered method on the same exact 2-D problems, from the same base, under the same budget,
measured against the exact KL tilt p* ∝ p_base exp(β r) (theory §9) — ``python -m flowlite bench``, ``make demo``
and notebook 07.

For each problem × method × seed, :func:`run_one` builds the method from the registry (``build_method``), trains it
with its own ``default_training`` through ``finetune`` (the one loop), and scores Heun-ODE samples from one fixed set
of starting noises per problem (common random numbers, so methods differ by their model, not by the draw):

* mean reward; per-mode mass error against the tilt; KL(tilt ‖ model) and KL(base ‖ model) by smoothed histograms
  (distance to the tilt and to the base, theory §10); energy distance to exact tilt samples;
* CPU seconds of training (one torch thread; set-up included, evaluation excluded) and wall seconds;
* reward-gradient evaluations: samples at which ∇r was taken (``rewards.counting.CountingReward``);
* for ``vgg-flow`` and ``vgg-flow-pmp``: energy distance to their own target, the deterministic-control optimum
  (``flowlite.toy.reference``; closed form for a single Gaussian, else per-particle optimal controls on the first
  ``own_optimum_n`` evaluation noises), which is not the tilt (theory §2, §6.10).

A budget is either ``iterations`` (the same count for every method), ``budget_seconds`` (CPU seconds of training per
run; the iteration count is calibrated on a copy of the method, so learning-rate schedules still end on time), or
neither (each method's default step count). :func:`run_bench` writes ``summary.md``, ``summary.json``,
``samples.png`` (samples over the exact target, per method and problem) and ``curves_<problem>.png`` (reward and
distance to the tilt over CPU time).
"""

from __future__ import annotations

import copy
import json
import math
import time
from pathlib import Path

import torch
from torch import Tensor

from flowlite.errors import FlowliteError
from flowlite.finetune import finetune
from flowlite.jobs.bench_report import aggregate, json_ready, plot_curves, plot_samples_grid, summary_markdown
from flowlite.jobs.validate import check_output
from flowlite.methods import METHODS, build_method
from flowlite.rewards.counting import CountingReward
from flowlite.solvers import sample_ode
from flowlite.toy.metrics import energy_distance, histogram_kl, mode_mass_error, noise_floor, score
from flowlite.toy.problems import load_problem
from flowlite.toy.reference import deterministic_control_samples, gaussian_deterministic_optimum

EVAL_SEED = 12345
EVAL_STEPS = 25  # Heun with K >= 20 is indistinguishable from exact samples (theory §10)
CURVE_SAMPLES = 1000
METRICS = ("mean_reward", "mode_error", "kl_to_tilt", "kl_to_base", "energy_to_tilt", "cpu_seconds",
           "wall_seconds", "iterations", "reward_grad_evals")
"""Per-run numbers in ``summary.json`` (plus ``energy_to_own_optimum`` for ``OWN_OPTIMUM_METHODS``)."""


def check_names(problems, methods) -> tuple[list[str], list[str]]:
    """Validate problem and method names before anything runs; one clear error naming the accepted values."""

    methods = list(METHODS) if not methods else list(methods)
    for name in methods:
        if name not in METHODS:
            raise FlowliteError(f"unknown method {name!r}; accepted: {', '.join(METHODS)}")
    problems = list(problems) or ["reweight"]
    for name in problems:
        load_problem(name)  # raises FlowliteError naming the shipped problems
    return problems, methods


def eval_noise(problem, n: int) -> Tensor:
    """The fixed starting noises every model of a problem is evaluated from."""
    return torch.randn(n, problem.base.dim, generator=torch.Generator().manual_seed(EVAL_SEED))


def exact_tilt_samples(problem, n: int, draw: int = 1) -> Tensor:
    """Exact samples of the tilt; ``draw`` 1 is what energy distances compare with, 2 an independent draw."""
    return problem.target.sample(n, generator=torch.Generator().manual_seed(EVAL_SEED + draw))


OWN_OPTIMUM_METHODS = tuple(name for name, cls in METHODS.items() if cls.optimum == "deterministic-control")
"""Methods whose target is the deterministic-control optimum rather than the tilt (derived from the registry)."""


def own_optimum_samples(problem, x0: Tensor, base: str = "exact") -> Tensor:
    """Samples of VGG-Flow's target, the deterministic-control optimum (theory §6.10): the closed form for a single
    isotropic Gaussian with A = aI, else per-particle optimal open-loop controls (``reference``)."""

    try:
        mean, cov = gaussian_deterministic_optimum(problem.base, problem.reward, problem.beta)
        return (mean + x0.to(cov.dtype) @ torch.linalg.cholesky(cov).T).to(x0.dtype)
    except (ValueError, AttributeError):
        return deterministic_control_samples(problem.base_velocity_module(base), problem.reward, problem.beta, x0)


def ode_samples(velocity, x0: Tensor) -> Tensor:
    """Evaluation samples of the bench: the one evaluation sampler, Heun with ``EVAL_STEPS`` steps."""
    return sample_ode(velocity, x0, steps=EVAL_STEPS)


def score_against(samples: Tensor, problem, tilt_samples: Tensor) -> dict:
    """The one scorer with every number the bench reports: against the tilt, the base, and exact tilt samples."""
    return score(samples, problem.target, problem.reward, base=problem.base, tilt_samples=tilt_samples)


def _training_steps(method, options: dict, budget_seconds: float | None, iterations: int | None,
                    setup_seconds: float) -> int:
    """Iterations for this run: fixed, the method's default, or as many as fit in the CPU budget (timed on a copy,
    one warm-up iteration then one)."""
    if iterations is not None:
        return int(iterations)
    if budget_seconds is None:
        return int(options.get("train_steps", 200))
    trial = copy.deepcopy(method)
    train_options = {k: v for k, v in options.items() if k != "train_steps"}
    finetune(trial, 1, progress=False, **train_options)
    clock = time.process_time()
    finetune(trial, 1, progress=False, **train_options)
    per_iteration = max(time.process_time() - clock, 1e-6)
    return max(1, int((budget_seconds - setup_seconds) / per_iteration))


def run_one(problem_name: str, method_name: str, seed: int = 0, budget_seconds: float | None = None,
            iterations: int | dict[str, int] | None = None, base: str = "exact", batch_size: int = 256,
            solver_steps: int = 50, eval_samples: int = 4000, curve_points: int = 10,
            curve_samples: int = CURVE_SAMPLES, progress: bool = True, method_options: dict | None = None) -> dict:
    """Train one method on one problem and score it. Returns the numbers (``METRICS``), the training curve
    (CPU seconds → reward, mode error, KL to tilt on ``curve_samples`` samples) and the final samples.
    ``method_options`` go to the method's constructor (e.g. Adjoint Matching's ``weighting``)."""

    torch.set_num_threads(1)
    problem = load_problem(problem_name)
    x0 = eval_noise(problem, eval_samples)
    tilt_samples = exact_tilt_samples(problem, eval_samples)
    torch.manual_seed(seed)
    cpu, wall = time.process_time(), time.perf_counter()
    reward = CountingReward(problem.reward)
    method, options = build_method(method_name, problem.flow(base), reward, problem.beta,
                                   batch_size=batch_size, solver_steps=solver_steps, **(method_options or {}))
    setup_cpu, setup_wall = time.process_time() - cpu, time.perf_counter() - wall
    if isinstance(iterations, dict):  # per-method counts: a reproducible stand-in for a CPU budget (notebook 07, FAST)
        iterations = iterations.get(method_name)
    steps = _training_steps(method, options, budget_seconds, iterations, setup_cpu)  # not timed: bench overhead
    options.pop("train_steps", None)
    reward.evaluations = reward.gradient_evaluations = 0
    clock = {"cpu": time.process_time(), "wall": time.perf_counter(), "eval_cpu": 0.0, "eval_wall": 0.0}
    curve: list[dict] = []

    def training_seconds(cpu_now: float) -> float:
        return setup_cpu + cpu_now - clock["cpu"] - clock["eval_cpu"]

    def evaluate(step: int) -> dict:
        start_cpu, start_wall = time.process_time(), time.perf_counter()
        x = ode_samples(method.model.velocity, x0[:curve_samples])
        curve.append({"step": step, "cpu_seconds": training_seconds(start_cpu),
                      "mean_reward": float(problem.reward(x).mean()),
                      "mode_error": mode_mass_error(x, problem.target),
                      "kl_to_tilt": histogram_kl(x, problem.target)})
        clock["eval_cpu"] += time.process_time() - start_cpu
        clock["eval_wall"] += time.perf_counter() - start_wall
        return {}

    evaluate(0)
    result = finetune(method, steps, callback=evaluate, callback_every=max(1, steps // max(curve_points, 1)),
                      progress=progress, **options)
    cpu_seconds = training_seconds(time.process_time())
    wall_seconds = setup_wall + time.perf_counter() - clock["wall"] - clock["eval_wall"]
    samples = ode_samples(method.model.velocity, x0)
    record = {"problem": problem.name, "method": method_name, "seed": seed, **score_against(samples, problem, tilt_samples),
              "cpu_seconds": cpu_seconds, "wall_seconds": wall_seconds, "iterations": result.step,
              "reward_grad_evals": reward.gradient_evaluations, "reward_evals": reward.evaluations}
    return {"record": record, "curve": curve, "samples": samples}


def _run_one_kwargs(kwargs: dict) -> dict:
    return run_one(**kwargs)


def _has_closed_form_own_optimum(problem_name: str) -> bool:

    problem = load_problem(problem_name)
    try:
        gaussian_deterministic_optimum(problem.base, problem.reward, problem.beta)
        return True
    except (ValueError, AttributeError):
        return False


def _own_optimum_job(problem_name: str, base: str, n: int) -> Tensor:

    torch.set_num_threads(1)
    problem = load_problem(problem_name)
    return own_optimum_samples(problem, eval_noise(problem, n), base)


def problem_references(problem_name: str, base: str, eval_samples: int) -> dict:
    """The rows every table of a problem is read against: the base model and exact tilt samples, with the metrics'
    noise floors at this sample size."""

    problem = load_problem(problem_name)
    x0 = eval_noise(problem, eval_samples)
    tilt_samples = exact_tilt_samples(problem, eval_samples)
    flow = problem.flow(base)
    base_samples = ode_samples(flow.base_velocity, x0)
    second_tilt = exact_tilt_samples(problem, eval_samples, draw=2)
    refs = {"beta": problem.beta, "description": problem.description,
            "base": score_against(base_samples, problem, tilt_samples),
            "tilt": score_against(second_tilt, problem, tilt_samples),
            "noise_floor": {"mode_error": noise_floor(mode_mass_error, problem.target, eval_samples, 5).mean,
                            "kl": noise_floor(histogram_kl, problem.target, eval_samples, 5).mean},
            "samples": {"base": base_samples, "tilt": second_tilt}}
    return refs


def run_bench(problems=("reweight",), methods=None, budget_seconds: float | None = None,
              iterations: int | dict[str, int] | None = None, seeds=(0,), out: str | Path = "runs/bench",
              base: str = "exact",
              batch_size: int = 256, solver_steps: int = 50, eval_samples: int = 4000, curve_points: int = 10,
              curve_samples: int = CURVE_SAMPLES, own_optimum_n: int = 1000, jobs: int = 1,
              progress: bool = True, log=print) -> dict:
    """Run every (problem, method, seed), write summary.md, summary.json and the figures under ``out``.

    Returns ``{"config", "references", "records", "summary", "results"}``; ``results`` keeps each run's curve and
    final samples (tensors) for notebooks. ``jobs > 1`` runs that many runs at once in separate processes (one
    torch thread each). ``own_optimum_n``: particles of VGG-Flow's deterministic-control reference where it has no
    closed form (the per-particle optimisation costs about a CPU minute per thousand; 0 skips it).
    ``iterations`` may map method names to counts (methods left out use their default): unlike a CPU budget, whose
    iteration counts depend on the machine's speed and load, it makes a run reproducible."""
    problems, methods = check_names(problems, methods)
    if budget_seconds is not None and iterations is not None:
        raise FlowliteError("give --budget-seconds or --iterations, not both")
    if budget_seconds is not None and not (math.isfinite(budget_seconds) and budget_seconds > 0):
        raise FlowliteError(f"budget_seconds must be a finite number > 0, got {budget_seconds!r}")
    names = {p: load_problem(p).name for p in problems}  # a JSON path's results are keyed by the problem's name
    out = check_output(out, "--out")
    out.mkdir(parents=True, exist_ok=True)
    config = {"problems": list(names.values()), "methods": methods, "budget_seconds": budget_seconds,
              "iterations": iterations,
              "seeds": list(seeds), "base": base, "batch_size": batch_size, "solver_steps": solver_steps,
              "eval_samples": eval_samples, "eval_steps": EVAL_STEPS, "curve_samples": curve_samples, "torch": torch.__version__,
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    references = {names[p]: {"source": p, **problem_references(p, base, eval_samples)} for p in problems}
    wants_own = any(m in OWN_OPTIMUM_METHODS for m in methods)
    own_jobs = {names[p]: (p, base, eval_samples if _has_closed_form_own_optimum(p) else
                           min(own_optimum_n, eval_samples))
                for p in problems if wants_own and (own_optimum_n > 0 or _has_closed_form_own_optimum(p))}
    jobs_list = [dict(problem_name=p, method_name=m, seed=s, budget_seconds=budget_seconds, iterations=iterations,
                      base=base, batch_size=batch_size, solver_steps=solver_steps, eval_samples=eval_samples,
                      curve_points=curve_points, curve_samples=curve_samples, progress=progress and jobs == 1)
                 for p in problems for m in methods for s in seeds]
    results = []

    def report(res):
        r = res["record"]
        results.append(res)
        log(f"[{len(results)}/{len(jobs_list)}] {r['problem']} {r['method']} seed {r['seed']}: "
            f"{r['iterations']} it in {r['cpu_seconds']:.1f} CPU s; reward {r['mean_reward']:+.3f} "
            f"(tilt {references[r['problem']]['tilt']['mean_reward']:+.3f}), mode error {r['mode_error']:.3f}, "
            f"KL to tilt {r['kl_to_tilt']:.3f}, KL to base {r['kl_to_base']:.3f}, "
            f"{r['reward_grad_evals']} ∇r evaluations")

    if jobs > 1:
        from concurrent.futures import ProcessPoolExecutor
        from multiprocessing import get_context

        with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
            own_futures = {p: pool.submit(_own_optimum_job, *args) for p, args in own_jobs.items()}
            for res in pool.map(_run_one_kwargs, jobs_list):
                report(res)
            own = {p: f.result() for p, f in own_futures.items()}
    else:
        own = {p: _own_optimum_job(*args) for p, args in own_jobs.items()}
        for kwargs in jobs_list:
            report(run_one(**kwargs))
    for p, own_samples in own.items():
        n = own_samples.shape[0]
        ref = references[p]
        ref["own_optimum_samples"] = n
        for row in ("base", "tilt"):
            ref[row]["energy_to_own_optimum"] = energy_distance(ref["samples"][row][:n], own_samples)
        for res in results:
            if res["record"]["problem"] == p and res["record"]["method"] in OWN_OPTIMUM_METHODS:
                res["record"]["energy_to_own_optimum"] = energy_distance(res["samples"][:n], own_samples)
    records = [r["record"] for r in results]
    summary = aggregate(records)
    (out / "summary.md").write_text(summary_markdown(config, references, summary))
    (out / "summary.json").write_text(json.dumps(json_ready({"config": config, "references": references,
                                                              "runs": records, "summary": summary}), indent=1))
    plot_samples_grid(references, results, out / "samples.png")
    for name in names.values():
        plot_curves(name, references[name], results, out / f"curves_{name}.png", curve_samples)
    return {"config": config, "references": references, "records": records, "summary": summary,
            "results": results}
