"""The benchmark job: end to end on a tiny budget, a well-formed table and JSON, counts that follow from each
method's algorithm, and one-line refusals of bad input."""

import json
import math
import re

import pytest
import torch

from flowlite.jobs.bench import METRICS, run_one
from flowlite.jobs.bench_report import COLUMNS
from flowlite.rewards.counting import CountingReward
from flowlite.jobs.cli import main
from flowlite.methods import METHODS
from flowlite.toy.problems import load_problem

BATCH, ITERATIONS = 32, 2


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    code = main(["bench", "--problems", "reweight", "--iterations", str(ITERATIONS), "--seeds", "0", "1",
                 "--batch-size", str(BATCH), "--solver-steps", "8", "--eval-samples", "500", "--out", str(out),
                 "--own-optimum-samples", "0", "--quiet"])
    assert code == 0
    return out


def _table_rows(markdown: str) -> dict[str, list[str]]:
    rows = {}
    for line in markdown.splitlines():
        if line.startswith("| ") and not line.startswith("| method") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    return rows


def test_bench_writes_a_table_with_every_column_and_method_and_finite_numbers(bench_dir):
    md = (bench_dir / "summary.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| method"))
    for _, title, _ in COLUMNS:
        assert title in header, title
    rows = _table_rows(md)
    assert set(METHODS) <= set(rows), rows.keys()
    for name in METHODS:
        cells = rows[name]
        assert len(cells) == header.count("|") - 2
        for cell in cells:
            numbers = [float(x) for x in re.findall(r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?", cell)]
            assert numbers and all(math.isfinite(x) for x in numbers), (name, cell)
    assert "±" in md  # two seeds: spread shown
    assert (bench_dir / "samples.png").stat().st_size > 10_000
    assert (bench_dir / "curves_reweight.png").stat().st_size > 10_000


def test_bench_json_holds_every_run_with_finite_metrics_and_the_mean_over_seeds(bench_dir):
    data = json.loads((bench_dir / "summary.json").read_text())
    assert len(data["runs"]) == 2 * len(METHODS)
    for r in data["runs"]:
        for key in METRICS:
            assert math.isfinite(r[key]), (r["method"], key, r[key])
        assert r["iterations"] == ITERATIONS
    for row in data["summary"]:
        runs = [r for r in data["runs"] if r["method"] == row["method"]]
        for key in METRICS:
            assert row[key]["mean"] == pytest.approx(sum(r[key] for r in runs) / len(runs))
            assert math.isfinite(row[key]["std"])
    ref = data["references"]["reweight"]
    # the exact tilt sits at its own target, the base model does not (independent of any training)
    assert ref["tilt"]["mode_error"] < ref["base"]["mode_error"] and ref["tilt"]["kl_to_tilt"] < ref["base"]["kl_to_tilt"]


def test_reward_gradient_counts_follow_each_algorithm(bench_dir):
    """Adjoint Matching and ReFL take ∇r once per trajectory per iteration; DRaFT backpropagates r once per
    trajectory; reward-weighted regression and ORW weight samples by r without any gradient."""
    runs = {r["method"]: r for r in json.loads((bench_dir / "summary.json").read_text())["runs"] if r["seed"] == 0}
    for name in ("adjoint-matching", "non-memoryless-control", "refl", "draft"):
        assert runs[name]["reward_grad_evals"] == ITERATIONS * BATCH, (name, runs[name])
    for name in ("rwr", "orw", "ac-flow"):
        assert runs[name]["reward_grad_evals"] == 0, (name, runs[name])


def test_counting_reward_counts_scores_and_gradients_and_forwards_attributes():
    reward = load_problem("reweight").reward
    counted = CountingReward(reward)
    x = torch.randn(7, 2)
    with torch.no_grad():
        assert torch.equal(counted(x), reward(x))
    counted(x.requires_grad_(True)).sum().backward()
    assert (counted.evaluations, counted.gradient_evaluations) == (14, 7)
    assert torch.equal(counted.A, reward.A)


def test_a_cpu_budget_runs_at_least_one_iteration_and_reports_its_seconds():
    out = run_one("reweight", "refl", budget_seconds=0.5, batch_size=16, solver_steps=4, eval_samples=300,
                  curve_points=2, curve_samples=100, progress=False)
    r = out["record"]
    assert r["iterations"] >= 1 and r["cpu_seconds"] > 0 and math.isfinite(r["mean_reward"])
    assert out["samples"].shape == (300, 2) and out["curve"][0]["step"] == 0


def test_per_method_iteration_counts_are_reproducible():
    """``iterations`` as a {method: count} map (notebook 07's FAST mode): the count is used, and two runs with the
    same seed give the same samples — no CPU timing is involved."""
    kwargs = dict(iterations={"refl": 3, "rwr": 5}, batch_size=16, solver_steps=4, eval_samples=200, curve_points=2,
                  curve_samples=100, progress=False)
    first, second = (run_one("reweight", "refl", **kwargs) for _ in range(2))
    assert first["record"]["iterations"] == 3
    assert torch.equal(first["samples"], second["samples"])


@pytest.mark.parametrize("args, words", [
    (("--methods", "magic"), ("unknown method 'magic'", "adjoint-matching")),
    (("--problems", "nope"), ("unknown problem 'nope'", "reweight")),
    (("--methods", "refl,magic"), ("unknown method 'magic'",)),
    (("--budget-seconds", "5", "--iterations", "3"), ("--iterations",)),
    (("--budget-seconds", "nan"), ("--budget-seconds",)),
])
def test_bench_refuses_bad_input_in_one_line(run, args, words):
    out = run("bench", *args)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in out.stderr, out.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
