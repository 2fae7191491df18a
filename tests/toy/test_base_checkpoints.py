"""The shipped trained base MLPs reproduce their mixtures within twice the metrics' noise floor."""

import json

import pytest
import torch
from safetensors import safe_open

from flowlite.toy.problems import load_problem
from flowlite.solvers import solve_ode
from tests.helpers import averaged_metrics


@pytest.mark.parametrize("problem_name", ["reweight", "weak"])  # one per base mixture
def test_shipped_base_checkpoint_is_within_twice_the_noise_floor_of_its_mixture(problem_name):
    problem = load_problem(problem_name)
    flow = problem.flow("mlp")

    def sample(n, gen):
        with torch.no_grad():
            return solve_ode(flow.base_velocity, torch.randn(n, 2, generator=gen), steps=50, method="heun",
                             store=False).final

    m = averaged_metrics(sample, problem.base)
    assert m["mode_error"] <= 2 * m["mode_floor"], m
    assert m["kl"] <= 2 * m["kl_floor"], m


@pytest.mark.parametrize("problem_name", ["reweight", "kill", "weak"])
def test_checkpoint_records_its_mixture_and_the_command_that_retrains_it(problem_name):
    problem = load_problem(problem_name)
    with safe_open(str(problem.checkpoint_path), framework="pt") as f:
        meta = f.metadata()
    assert meta["retrain"].startswith("python -m flowlite train-base --problem")
    saved = json.loads(meta["mixture"])
    assert torch.allclose(torch.tensor(saved["means"]), problem.base.means)
