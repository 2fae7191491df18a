"""``python -m flowlite finetune``: fine-tune a 2-D problem's base with a registered method and measure the result
against the exact tilt (theory §9, §10)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from flowlite.finetune import finetune
from flowlite.jobs.run_folder import open_run_folder
from flowlite.jobs.run_lock import RunLock
from flowlite.jobs.validate import check_output
from flowlite.methods import build_method
from flowlite.solvers import sample_ode
from flowlite.toy.metrics import score
from flowlite.toy.problems import load_problem

IDENTITY = ("problem", "method", "beta", "base", "seed", "method_options", "train_options")
"""Settings a resume must keep (more --train-steps or another --eval-every may change)."""
OUTPUTS = ("checkpoints", "metrics.csv", "metrics.json", "config.json", "samples.png", "samples.safetensors",
           "tensorboard")
"""What a run writes in its folder (what --overwrite removes)."""


def finetune_problem(problem_name: str, method_name: str, beta: float | None = None, train_steps: int | None = None,
                     base: str = "exact", out: str | Path | None = None, seed: int = 0,
                     eval_samples: int = 4000, eval_every: int = 0, resume: bool = False,
                     progress: bool = True, method_options: dict | None = None,
                     train_options: dict | None = None, overwrite: bool = False) -> dict:
    """Fine-tune a problem's base with a registered method; write samples, metrics against the exact tilt,
    a figure, the training log and checkpoints under ``out`` (default ``runs/finetune/<problem>-<method>``).
    Returns the metrics dictionary. Everything is checked before anything is written; the folder is locked while the
    run lasts, and a resume must keep the run's ``IDENTITY`` settings (``flowlite.jobs.run_folder``)."""
    problem = load_problem(problem_name, beta=beta)
    torch.manual_seed(seed)
    method, defaults = build_method(method_name, problem.flow(base), problem.reward, problem.beta,
                                    **(method_options or {}))
    options = {**defaults, **(train_options or {})}
    default_steps = options.pop("train_steps", 200)
    train_steps = train_steps if train_steps is not None else default_steps
    out = check_output(out or f"runs/finetune/{problem.name}-{method_name}", "--out")
    config = {"problem": problem.name, "method": method_name, "beta": problem.beta, "train_steps": train_steps,
              "base": base, "seed": seed, "method_options": method_options or {}, "train_options": options}
    with RunLock(out, "--out"):
        open_run_folder(out, config, IDENTITY, resume, overwrite, train_steps, OUTPUTS)
        (out / "config.json").write_text(json.dumps(config, indent=1, default=str))
        return _run(problem, method, method_name, out, train_steps, seed, eval_samples, eval_every, resume,
                    progress, options)


def _run(problem, method, method_name: str, out: Path, train_steps: int, seed: int, eval_samples: int,
         eval_every: int, resume: bool, progress: bool, options: dict) -> dict:
    gen = torch.Generator().manual_seed(seed + 1)
    eval_x0 = torch.randn(eval_samples, problem.base.dim, generator=gen)

    def evaluate(step: int) -> dict:
        return score(sample_ode(method.model.velocity, eval_x0), problem.target, problem.reward)

    clock = time.process_time()
    result = finetune(method, train_steps, callback=evaluate if eval_every else None, callback_every=eval_every,
                      run_dir=out, checkpoint_every=max(train_steps // 4, 1), resume=resume, progress=progress,
                      **options)
    cpu_seconds = time.process_time() - clock
    samples = sample_ode(method.model.velocity, eval_x0)
    base_samples = sample_ode(method.model.base_velocity, eval_x0)
    metrics = {"problem": problem.name, "method": method_name, "beta": problem.beta, "train_steps": result.step,
               "wall_seconds": result.seconds, "cpu_seconds": cpu_seconds,
               **score(samples, problem.target, problem.reward),
               "base": score(base_samples, problem.target, problem.reward),
               "target_mean_reward": float(problem.reward(problem.target.sample(eval_samples, generator=gen)).mean())}
    save_file({"samples": samples.contiguous(), "base_samples": base_samples.contiguous()},
              str(out / "samples.safetensors"))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    _figure(problem, samples, base_samples, metrics, out / "samples.png")
    return metrics


def _figure(problem, samples, base_samples, metrics, path: Path) -> None:
    from matplotlib.figure import Figure  # a figure object of its own: the caller's backend is left alone

    from flowlite.toy.plotting import default_extent, plot_density, plot_samples

    extent = default_extent(problem.base, problem.target)
    fig = Figure(figsize=(8, 4))
    axes = fig.subplots(1, 2)
    for ax, x, title in ((axes[0], base_samples, "base model"),
                         (axes[1], samples, f"{metrics['method']}: mode error {metrics['mode_error']:.3f}")):
        plot_density(ax, problem.target, extent, cmap="Oranges")
        plot_samples(ax, x[:2000], color="tab:blue")
        ax.set_title(title)
    fig.suptitle(f"{problem.name}, β = {problem.beta:g}: samples over the exact tilt")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
