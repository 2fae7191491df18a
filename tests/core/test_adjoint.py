"""The lean adjoint against autograd and torchdiffeq, and the fixed-point test of theory §3.3."""

import pytest
import torch

from flowlite.adjoint import adjoint_by_autograd, adjoint_by_torchdiffeq, lean_adjoint
from flowlite.toy.flow import ExactMixtureVelocity
from flowlite.toy.problems import load_problem
from flowlite.rewards.base import reward_gradient
from flowlite.schedules import EulerMaruyama, Memoryless
from flowlite.solvers import solve_sde


def _exact64(mixture):
    v = ExactMixtureVelocity(mixture)
    return lambda x, t, cond=None: v(x, t)


@pytest.mark.parametrize("schedule", [Memoryless(1.0), Memoryless(0.5), EulerMaruyama.constant(0.5),
                                      EulerMaruyama.memoryless(0.02)], ids=lambda s: s.name)
def test_lean_adjoint_equals_autograd_through_the_sampler_with_fixed_noise(schedule):
    problem = load_problem("reweight")
    reward = problem.reward.double()
    v_base = _exact64(problem.base)
    x0 = torch.randn(64, 2, dtype=torch.float64)
    traj = solve_sde(v_base, x0, schedule, steps=40)
    _, grad = reward_gradient(reward, traj.final)
    lean = lean_adjoint(v_base, traj, -problem.beta * grad, schedule, dtype=None)
    reference = adjoint_by_autograd(v_base, traj, reward, problem.beta, schedule)
    rel = ((lean - reference).norm(dim=(1, 2)) / reference.norm(dim=(1, 2))).max()
    assert rel < 1e-4, rel
    stopped = lean_adjoint(v_base, traj, -problem.beta * grad, schedule, dtype=None, down_to=7)
    assert torch.equal(stopped[7:], lean[7:]) and stopped[:7].isnan().all()  # the same recursion, cut at a_7


def test_lean_adjoint_of_the_ode_converges_to_torchdiffeq_continuous_adjoint():
    problem = load_problem("kill")
    reward = problem.reward.double()
    v_base = _exact64(problem.base)
    x0 = torch.randn(32, 2, dtype=torch.float64)
    reference = adjoint_by_torchdiffeq(v_base, x0, reward, problem.beta)
    ode = Memoryless(0.0)  # scale 0: the exponential integrator is Euler's method for the ODE
    errors = []
    for steps in (100, 400):
        traj = solve_sde(v_base, x0, ode, steps=steps)
        _, grad = reward_gradient(reward, traj.final)
        a0 = lean_adjoint(v_base, traj, -problem.beta * grad, ode, dtype=None)[0]
        errors.append(((a0 - reference).norm() / reference.norm()).item())
    assert errors[1] < 0.02
    assert errors[0] / errors[1] > 3  # first order in the step size


def _fixed_point_bias(schedule, times=(0.02, 0.04, 0.1), batch=8000, seeds=(0, 1)):
    """Relative bias of the regression target along (v* - v_base) when the model IS the exact optimum."""
    problem = load_problem("weak")
    v_base, v_star = ExactMixtureVelocity(problem.base), ExactMixtureVelocity(problem.target)
    steps = 50
    num = {t: 0.0 for t in times}
    den = {t: 0.0 for t in times}
    for seed in seeds:
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            traj = solve_sde(v_star, torch.randn(batch, 2, generator=gen), schedule, steps=steps, generator=gen)
        _, grad = reward_gradient(problem.reward, traj.final)
        adjoints = lean_adjoint(v_base, traj, -problem.beta * grad, schedule)
        for t in times:
            k = round(t * steps)
            x = traj.states[k]
            sigma, gain = schedule.sigma(t), schedule.control_gain(t)
            target = -(sigma**2 / gain) * adjoints[k]
            delta = v_star(x, t) - v_base(x, t)
            num[t] += ((target - delta) * delta).sum().item()
            den[t] += (delta * delta).sum().item()
    return {t: num[t] / den[t] for t in times}


def test_fixed_point_regression_targets_are_unbiased_for_the_exponential_integrator():
    bias = _fixed_point_bias(Memoryless(1.0))
    assert all(abs(b) < 0.15 for b in bias.values()), bias


@pytest.mark.parametrize("schedule", [EulerMaruyama.memoryless(0.02), EulerMaruyama.constant(0.5)],
                         ids=lambda s: s.name)
def test_fixed_point_regression_targets_are_biased_for_euler_maruyama_and_constant_sigma(schedule):
    exact = _fixed_point_bias(Memoryless(1.0), times=(0.02,))[0.02]
    bias = _fixed_point_bias(schedule, times=(0.02,))[0.02]
    assert bias < -0.3 and bias < exact - 0.2, (bias, exact)
