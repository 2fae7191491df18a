"""``python -m flowlite targets``: each problem's base against its exact tilted target (part of ``make demo``).

For each problem: the base density, the exact KL-tilted target p* ∝ p_base exp(β r) (theory §9.2), samples of
the base model, and a table of per-mode masses and distances.
"""

from __future__ import annotations

from pathlib import Path

import torch
from matplotlib.figure import Figure

from flowlite.solvers import sample_ode
from flowlite.toy.metrics import histogram_kl, mode_mass_error, reward_stats
from flowlite.toy.plotting import default_extent, plot_density, plot_samples
from flowlite.toy.problems import load_problem


def plot_targets(problem_name: str, beta: float | None = None, out_dir: str | Path = "runs/targets",
                 base: str = "mlp", seed: int = 0, n: int = 4000) -> dict:
    """Write ``<problem>.png`` and ``<problem>.md`` under out_dir; return the numbers in the table."""
    problem = load_problem(problem_name, beta=beta)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if base == "mlp" and not problem.checkpoint_path.is_file():
        print(f"{problem.name}: no trained base MLP shipped for {problem.base_name!r}; sampling the exact base")
        base = "exact"
    flow = problem.flow(base)
    gen = torch.Generator().manual_seed(seed)
    x = sample_ode(flow.base_velocity, torch.randn(n, problem.base.dim, generator=gen))
    target = problem.target
    numbers = {
        "problem": problem.name,
        "beta": problem.beta,
        "base_weights": [round(w, 4) for w in problem.base.weights.tolist()],
        "target_weights": [round(w, 4) for w in target.weights.tolist()],
        "base_to_target_mode_error": 0.5 * (problem.base.weights - target.weights).abs().sum().item(),
        "samples_vs_base_mode_error": mode_mass_error(x, problem.base),
        "samples_vs_base_kl": histogram_kl(x, problem.base),
        "samples_vs_target_mode_error": mode_mass_error(x, target),
        "samples_vs_target_kl": histogram_kl(x, target),
        "base_mean_reward": reward_stats(problem.reward, x).mean,
        "target_mean_reward": reward_stats(problem.reward, target.sample(n, generator=gen)).mean,
    }
    extent = default_extent(problem.base, target)
    fig = Figure(figsize=(11, 3.8))
    axes = fig.subplots(1, 3)
    plot_density(axes[0], problem.base, extent)
    axes[0].set_title("base p_base")
    plot_density(axes[1], target, extent, cmap="Oranges")
    axes[1].set_title(f"exact tilt p_base·exp(βr), β={problem.beta:g}")
    plot_density(axes[2], target, extent, cmap="Oranges", alpha=0.6)
    plot_samples(axes[2], x[:2000], color="tab:blue")
    axes[2].set_title(f"{base} base samples over the tilt")
    fig.suptitle(f"{problem.name}: mass moves {numbers['base_to_target_mode_error']:.2f} between modes")
    fig.tight_layout()
    png = out_dir / f"{problem.name}.png"
    fig.savefig(png, dpi=110)
    rows = "\n".join(f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in numbers.items())
    md = out_dir / f"{problem.name}.md"
    md.write_text(f"# {problem.name}\n\n{problem.description}\n\n| quantity | value |\n|---|---|\n{rows}\n\n"
                  f"![{problem.name}]({png.name})\n")
    print(f"{problem.name}: base→target mode error {numbers['base_to_target_mode_error']:.3f}; "
          f"{base} base samples vs base: mode error {numbers['samples_vs_base_mode_error']:.4f}, "
          f"KL {numbers['samples_vs_base_kl']:.4f}")
    print(f"  figure: {png}\n  table:  {md}")
    return numbers
