"""The bench's report: the method × problem table (mean ± std over seeds, with reference rows), ``summary.json`` and
the figures (samples over the exact tilt, curves over CPU time). Figures are drawn on their own ``Figure`` objects,
so writing them never changes the caller's matplotlib backend."""

from __future__ import annotations

from pathlib import Path

import torch
from matplotlib.figure import Figure
from torch import Tensor

from flowlite.toy.plotting import default_extent, plot_density, plot_samples
from flowlite.toy.problems import load_problem

def aggregate(records: list[dict]) -> list[dict]:
    """Mean and standard deviation over seeds of every number, per (problem, method), in run order."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault((r["problem"], r["method"]), []).append(r)
    rows = []
    for (problem, method), runs in groups.items():
        row = {"problem": problem, "method": method, "seeds": [r["seed"] for r in runs]}
        for key in [k for k in runs[0] if k not in ("problem", "method", "seed")]:
            vals = torch.tensor([float(r[key]) for r in runs], dtype=torch.float64)
            row[key] = {"mean": vals.mean().item(), "std": vals.std().item() if len(runs) > 1 else 0.0}
        rows.append(row)
    return rows


COLUMNS = (("mean_reward", "mean reward", "{:+.3f}"), ("mode_error", "mode error vs tilt", "{:.3f}"),
           ("kl_to_tilt", "KL to tilt", "{:.3f}"), ("kl_to_base", "KL to base", "{:.3f}"),
           ("cpu_seconds", "CPU s", "{:.1f}"), ("iterations", "iterations", "{:.0f}"),
           ("reward_grad_evals", "∇r evaluations", "{:.0f}"))


def _cell(value, fmt: str) -> str:
    if isinstance(value, dict):
        text = fmt.format(value["mean"])
        return text + (" ± " + fmt.format(value["std"]).lstrip("+") if value["std"] else "")
    return fmt.format(value) if value is not None else "—"


def summary_markdown(config: dict, references: dict, rows: list[dict]) -> str:
    """The method × problem table (± over seeds), one section per problem, with the reference rows."""
    budget = (f"{config['budget_seconds']:g} CPU s per run" if config["budget_seconds"] is not None else
              f"{config['iterations']} iterations per run" if config["iterations"] is not None else
              "each method's default iterations")
    lines = ["# flowlite bench: every method against the exact tilt", "",
             f"Budget: {budget}; seeds {config['seeds']}; {config['base']} base; batch {config['batch_size']}, "
             f"K = {config['solver_steps']}; evaluation: Heun ODE ({config['eval_steps']} steps) from {config['eval_samples']} fixed noises. "
             "Distances: per-mode mass error and KL(target ‖ model) by smoothed histograms (theory §10). "
             "CPU seconds are training only (one torch thread), set-up included, evaluation excluded.", ""]
    own = any("energy_to_own_optimum" in r for r in rows)
    head = [c[1] for c in COLUMNS] + (["energy dist. to own optimum"] if own else [])
    for problem, ref in references.items():
        floor = ref["noise_floor"]
        lines += [f"## {problem} (β = {ref['beta']:g})", "", ref["description"], "",
                  f"Noise floors at {config['eval_samples']} samples: mode error {floor['mode_error']:.3f}, "
                  f"KL {floor['kl']:.3f}.", "",
                  "| method | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
        refs = [("*base model*", ref["base"]), ("*exact tilt (fresh samples)*", ref["tilt"])]
        for label, values in refs + [(r["method"], r) for r in rows if r["problem"] == problem]:
            cells = [_cell(values.get(key), fmt) for key, _, fmt in COLUMNS]
            if own:
                cells.append(_cell(values.get("energy_to_own_optimum"), "{:.4f}"))
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    if own:
        lines += ["Energy distance to own optimum: to the deterministic-control optimum that VGG-Flow and VGG-Flow-PMP "
                  "aim at (theory §6.10), for those methods and the two reference rows.", ""]
    lines += ["Figures: `samples.png` (samples over the exact tilt), `curves_<problem>.png` (reward and distance to "
              "the tilt over CPU time).", ""]
    return "\n".join(lines)


def json_ready(obj):
    """The summary without tensors, ready for JSON."""
    if isinstance(obj, dict):
        return {k: json_ready(v) for k, v in obj.items() if not isinstance(v, Tensor)}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    return obj


def plot_samples_grid(references: dict, results: list[dict], path: Path) -> None:
    """Rows: problems; columns: base, each method (first seed): samples over the exact tilt's density."""
    methods = list(dict.fromkeys(r["record"]["method"] for r in results))
    fig = Figure(figsize=(2.6 * (len(methods) + 1), 2.7 * len(references)))
    axes = fig.subplots(len(references), len(methods) + 1, squeeze=False)
    for row, (name, ref) in zip(axes, references.items()):
        problem = load_problem(ref.get("source", name))  # a JSON path or a shipped problem's name
        extent = default_extent(problem.base, problem.target)
        panels = [("base model", ref["samples"]["base"], ref["base"])]
        for method in methods:
            first = next(r for r in results if r["record"]["problem"] == name and r["record"]["method"] == method)
            panels.append((method, first["samples"], first["record"]))
        for ax, (label, x, numbers) in zip(row, panels):
            plot_density(ax, problem.target, extent, cmap="Oranges")
            plot_samples(ax, x[:1500], color="tab:blue", size=1.5)
            ax.set_title(f"{name}: {label}\nmode err {numbers['mode_error']:.3f}, r {numbers['mean_reward']:+.2f}",
                         fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle("Samples (blue) over the exact tilt p_base·exp(βr) (orange)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def plot_curves(name: str, reference: dict, results: list[dict], path: Path, curve_samples: int) -> None:
    """Reward and KL to the tilt over CPU seconds, and reward against KL to the tilt (every seed, one colour a
    method); dashed lines: the exact tilt's values."""
    fig = Figure(figsize=(15, 4.2))
    axes = fig.subplots(1, 3)
    colours = {}
    for r in (r for r in results if r["record"]["problem"] == name):
        method, curve = r["record"]["method"], r["curve"]
        colour = colours.setdefault(method, f"C{len(colours) % 10}")
        label = method if r["record"]["seed"] == results[0]["record"]["seed"] else None
        secs = [p["cpu_seconds"] for p in curve]
        axes[0].plot(secs, [p["mean_reward"] for p in curve], color=colour, label=label)
        axes[1].plot(secs, [p["kl_to_tilt"] for p in curve], color=colour)
        axes[2].plot([p["kl_to_tilt"] for p in curve], [p["mean_reward"] for p in curve], color=colour, marker=".")
        axes[2].plot(curve[-1]["kl_to_tilt"], curve[-1]["mean_reward"], color=colour, marker="o", ms=8)
    tilt = reference["tilt"]
    axes[0].axhline(tilt["mean_reward"], color="k", ls="--", label="exact tilt")
    axes[2].axhline(tilt["mean_reward"], color="k", ls="--")
    axes[0].set(xlabel="CPU seconds (training)", ylabel="mean reward", title="reward over time")
    axes[1].set(xlabel="CPU seconds (training)", ylabel="KL(tilt ‖ model)", yscale="log",
                title="distance to the tilt over time")
    axes[2].set(xlabel="KL(tilt ‖ model)", ylabel="mean reward", xscale="log",
                title="reward vs distance to the tilt (● = end)")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{name}: curves on {curve_samples} ODE samples per point")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
