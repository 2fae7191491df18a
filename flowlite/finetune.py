"""Fine-tuning entry points: ``finetune(method, …)`` (optimiser + the one training loop) and
``finetune_problem(…)``, the 2-D job behind ``python -m flowlite finetune``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import torch

from flowlite.ema import EMA
from flowlite.methods.base import Method
from flowlite.train import TrainResult, train


def finetune(method: Method, steps: int, lr: float = 1e-3, weight_decay: float = 0.0,
             grad_clip: float | None = 1.0, callback: Callable[[int], dict] | None = None,
             callback_every: int = 0, ema_decay: float | None = None, lr_schedule: str = "constant",
             **train_kwargs) -> TrainResult:
    """Adam(W) on ``method.parameter_groups()``, then ``train(method, method.loss, …)``.

    ``lr_schedule``: ``"constant"`` or ``"cosine"`` (decay to 0 over ``steps``: the regression targets of
    Adjoint Matching are heavy-tailed, and a decaying step averages their noise out, spec §10.3).
    With ``ema_decay`` the weights are averaged; callbacks see the average, and the model holds the averaged
    weights when this returns.
    """
    optimizer = torch.optim.AdamW(method.parameter_groups(), lr=lr, weight_decay=weight_decay)
    if lr_schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(steps, 1))
    elif lr_schedule == "constant":
        scheduler = None
    else:
        raise ValueError(f"unknown lr_schedule {lr_schedule!r}; accepted: constant, cosine")
    ema = EMA(method, ema_decay) if ema_decay else None
    result = train(method, method.loss, optimizer, steps, scheduler=scheduler, grad_clip=grad_clip,
                   callback=callback, callback_every=callback_every, desc=method.name, ema=ema, **train_kwargs)
    if ema is not None:
        ema.copy_to_model()
    return result


def finetune_problem(problem_name: str, method_name: str, beta: float | None = None, steps: int | None = None,
                     base: str = "exact", out: str | Path | None = None, seed: int = 0,
                     eval_samples: int = 4000, eval_every: int = 0, resume: bool = False,
                     progress: bool = True, method_options: dict | None = None,
                     train_options: dict | None = None) -> dict:
    """Fine-tune a problem's base with a registered method; write samples, metrics against the exact tilt,
    a figure, the training log and checkpoints under ``out`` (default ``runs/finetune/<problem>-<method>``).
    Returns the metrics dictionary."""
    from flowlite.methods import build_method
    from flowlite.metrics import target_metrics
    from flowlite.problems import load_problem

    problem = load_problem(problem_name, beta=beta)
    torch.manual_seed(seed)
    method, defaults = build_method(method_name, problem.flow(base), problem.reward, problem.beta,
                                    **(method_options or {}))
    options = {**defaults, **(train_options or {})}
    steps = steps if steps is not None else options.pop("steps", 200)
    options.pop("steps", None)
    out = Path(out or f"runs/finetune/{problem.name}-{method_name}")
    out.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed + 1)
    eval_x0 = torch.randn(eval_samples, problem.base.dim, generator=gen)

    def evaluate(step: int) -> dict:
        return target_metrics(_ode_samples(method, eval_x0), problem.target, problem.reward)

    config = {"problem": problem.name, "method": method_name, "beta": problem.beta, "steps": steps, "base": base,
              "seed": seed, "method_options": method_options or {}, "train_options": options}
    (out / "config.json").write_text(json.dumps(config, indent=1, default=str))
    clock = time.process_time()
    result = finetune(method, steps, callback=evaluate if eval_every else None, callback_every=eval_every,
                      run_dir=out, checkpoint_every=max(steps // 4, 1), resume=resume, progress=progress,
                      **options)
    cpu_seconds = time.process_time() - clock
    samples = _ode_samples(method, eval_x0)
    base_samples = _ode_samples(method, eval_x0, use_base=True)
    metrics = {"problem": problem.name, "method": method_name, "beta": problem.beta, "steps": result.step,
               "wall_seconds": result.seconds, "cpu_seconds": cpu_seconds,
               **target_metrics(samples, problem.target, problem.reward),
               "base": target_metrics(base_samples, problem.target, problem.reward),
               "target_mean_reward": float(problem.reward(problem.target.sample(eval_samples, generator=gen)).mean())}
    from safetensors.torch import save_file

    save_file({"samples": samples.contiguous(), "base_samples": base_samples.contiguous()},
              str(out / "samples.safetensors"))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    _figure(problem, samples, base_samples, metrics, out / "samples.png")
    return metrics


@torch.no_grad()
def _ode_samples(method: Method, x0: torch.Tensor, use_base: bool = False) -> torch.Tensor:
    from flowlite.solvers import solve_ode

    field = method.model.base_velocity if use_base else method.model.velocity
    return solve_ode(field, x0, steps=50, method="heun", cond=method.cond, store=False).final


def _figure(problem, samples, base_samples, metrics, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from flowlite.plotting import default_extent, plot_density, plot_samples

    extent = default_extent(problem.base, problem.target)
    fig, axes = plt.subplots(1, 2, figsize=(8, 4))
    for ax, x, title in ((axes[0], base_samples, "base model"),
                         (axes[1], samples, f"{metrics['method']}: mode error {metrics['mode_error']:.3f}")):
        plot_density(ax, problem.target, extent, cmap="Oranges")
        plot_samples(ax, x[:2000], color="tab:blue")
        ax.set_title(title)
    fig.suptitle(f"{problem.name}, β = {problem.beta:g}: samples over the exact tilt")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
