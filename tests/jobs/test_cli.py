"""The command line: help lists the jobs; bad input gives one clear line, never a traceback."""

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from flowlite.jobs.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_help_lists_the_jobs_as_a_module():
    out = subprocess.run([sys.executable, "-m", "flowlite", "--help"], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0
    assert "train-base" in out.stdout and "targets" in out.stdout and "finetune" in out.stdout


def test_unknown_problem_is_one_line_naming_the_accepted_values(run):
    out = run("targets", "--problem", "nope")
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown problem 'nope'" in lines[0] and "reweight" in lines[0]


def test_bad_beta_is_one_line(run):
    for bad in ("nan", "-1", "abc", "inf"):
        out = run("targets", "--beta", bad)
        assert out.returncode == 2, bad
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and "beta" in lines[0] and "Traceback" not in out.stderr


def test_malformed_json_problem_is_one_line(run, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    out = run("targets", "--problem", str(bad))
    assert out.returncode == 2 and "not valid JSON" in out.stderr and "Traceback" not in out.stderr
    missing = tmp_path / "missing.json"
    missing.write_text(json.dumps({"base": {"weights": [1.0], "means": [[0, 0]], "covs": [[[1, 0], [0, 1]]]}}))
    out = run("targets", "--problem", str(missing))
    assert out.returncode == 2 and "reward" in out.stderr and "Traceback" not in out.stderr
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"base": {"weights": [1.0], "means": [[0, 0]], "covs": [[[1, 0], [0, 1]]]},
                                 "reward": {"type": "cubic"}, "beta": 1}))
    out = run("targets", "--problem", str(wrong))
    assert out.returncode == 2 and "accepted: quadratic, linear" in out.stderr


def test_targets_writes_a_figure_and_a_table(run, tmp_path):
    out = run("targets", "--problem", "weak", "--base", "exact", "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "weak.png").stat().st_size > 10_000
    table = (tmp_path / "weak.md").read_text()
    assert "base_to_target_mode_error" in table


def test_finetune_writes_samples_metrics_figure_and_checkpoint_and_resumes(run, tmp_path):
    args = ["finetune", "--problem", "weak", "--method", "adjoint-matching", "--batch-size", "32",
            "--solver-steps", "10", "--out", str(tmp_path), "--quiet"]
    out = run(*args, "--train-steps", "4")
    assert out.returncode == 0, out.stderr
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert {"mode_error", "kl_to_tilt", "mean_reward", "base", "cpu_seconds", "train_steps"} <= set(metrics)
    assert (tmp_path / "samples.png").is_file() and (tmp_path / "samples.safetensors").is_file()
    assert (tmp_path / "checkpoints" / "step_0000004").is_dir()
    assert json.loads((tmp_path / "config.json").read_text())["method"] == "adjoint-matching"
    out = run(*args, "--train-steps", "6", "--resume")
    assert out.returncode == 0, out.stderr
    rows = (tmp_path / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 6  # header + steps 1..6, the first four from the first run


def test_finetune_rejects_unknown_method_in_one_line(run):
    out = run("finetune", "--method", "magic")
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "magic" in lines[0] and "adjoint-matching" in lines[0]
