"""Solvers against independent references: the exact mixture, torchdiffeq, each other, autograd."""

import math

import pytest
import torch

from flowlite.toy.flow import ExactMixtureVelocity
from flowlite.paths import memoryless_sigma
from flowlite.toy.problems import load_problem
from flowlite.schedules import exponential_integrator_coefficients
from flowlite.solvers import (sample_ode, solve_memoryless_sde, solve_ode, solve_ode_adaptive,
                              solve_sde_euler_maruyama, uniform_grid)
from tests.helpers import averaged_metrics


@pytest.fixture(scope="module")
def reweight():
    problem = load_problem("reweight")
    return problem, ExactMixtureVelocity(problem.base)


def _sampler(fn):
    def sample(n, gen):
        with torch.no_grad():
            return fn(torch.randn(n, 2, generator=gen), gen).final
    return sample


@pytest.mark.parametrize("kind", ["heun-ode", "memoryless-sde"])
def test_samples_at_t1_match_the_base_mixture_within_twice_the_noise_floor(reweight, kind):
    problem, v = reweight
    if kind == "heun-ode":
        sample = _sampler(lambda x0, g: solve_ode(v, x0, steps=20, method="heun", store=False))
    else:
        sample = _sampler(lambda x0, g: solve_memoryless_sde(v, x0, steps=100, generator=g))
    m = averaged_metrics(sample, problem.base)
    assert m["mode_error"] <= 2 * m["mode_floor"], m
    assert m["kl"] <= 2 * m["kl_floor"], m


def test_euler_maruyama_with_zero_noise_reproduces_the_euler_ode(reweight):
    _, v = reweight
    x0 = torch.randn(500, 2)
    ode = solve_ode(v, x0, steps=30)
    sde = solve_sde_euler_maruyama(v, x0, sigma=lambda t: 0.0, steps=30)
    assert torch.equal(ode.states, sde.states)


def test_exponential_integrator_with_zero_scale_is_the_euler_ode(reweight):
    _, v = reweight
    x0 = torch.randn(500, 2)
    ode = solve_ode(v, x0, steps=30)
    sde = solve_memoryless_sde(v, x0, steps=30, scale=0.0)
    assert torch.allclose(ode.states, sde.states, atol=1e-6)


def test_exponential_integrator_coefficients_solve_the_linear_sde_exactly():
    """With v frozen, x_u = α x_t + β v + s z must match the closed-form solution of
    dX = [(1 + p) v - p X / t] dt + sqrt(2p(1 - t)/t) dB, computed here by quadrature."""
    for p in (0.25, 1.0, 4.0):
        t, u = 0.3, 0.45
        alpha, beta, s = exponential_integrator_coefficients(t, u, math.sqrt(p))
        assert alpha == pytest.approx((t / u) ** p)
        r = torch.linspace(t, u, 200_001, dtype=torch.float64)
        phi = (r / u) ** p  # transition factor from r to u
        beta_quad = torch.trapezoid((1 + p) * phi, r).item()
        var_quad = torch.trapezoid(phi**2 * 2 * p * (1 - r) / r, r).item()
        assert beta == pytest.approx(beta_quad, rel=1e-6)
        assert s**2 == pytest.approx(var_quad, rel=1e-6)
    alpha0, _, _ = exponential_integrator_coefficients(0.0, 0.02, 1.0)
    assert alpha0 == 0.0  # the first step forgets x0: memoryless


def test_fixed_step_odes_converge_to_torchdiffeq_adaptive_solution(reweight):
    _, v = reweight
    x0 = torch.randn(300, 2, dtype=torch.float64)
    v64 = lambda x, t, c=None: v(x, t)  # noqa: E731
    reference = solve_ode_adaptive(v64, x0, rtol=1e-9, atol=1e-9).final
    err_euler = (solve_ode(v64, x0, steps=200, store=False).final - reference).norm(dim=1).mean()
    err_heun = (solve_ode(v64, x0, steps=200, method="heun", store=False).final - reference).norm(dim=1).mean()
    err_heun_coarse = (solve_ode(v64, x0, steps=50, method="heun", store=False).final - reference).norm(dim=1).mean()
    assert err_heun < err_euler
    assert err_heun < 1e-3
    assert err_heun_coarse > err_heun  # convergence with the step size


def test_gradients_flow_through_the_solvers(reweight):
    """No hidden no_grad: d(sum X1)/d x0 by autograd equals a central finite difference."""
    _, v = reweight
    x0 = torch.randn(4, 2, dtype=torch.float64, requires_grad=True)
    v64 = lambda x, t, c=None: v(x, t)  # noqa: E731
    noises = torch.randn(20, 4, 2, dtype=torch.float64)
    for solve in (lambda x: solve_ode(v64, x, steps=20, method="heun").final,
                  lambda x: solve_memoryless_sde(v64, x, grid=uniform_grid(20, 0.05), noises=noises).final):
        (grad,) = torch.autograd.grad(solve(x0).sum(), x0)
        eps = 1e-6
        e = torch.zeros_like(x0)
        e[0, 1] = eps
        fd = (solve(x0.detach() + e).sum() - solve(x0.detach() - e).sum()) / (2 * eps)
        assert grad[0, 1].item() == pytest.approx(fd.item(), rel=1e-5)


def test_euler_maruyama_memoryless_sde_also_keeps_the_marginals(reweight):
    problem, v = reweight
    sigma = lambda t: float(memoryless_sigma(t, offset=0.01))  # noqa: E731
    sample = _sampler(lambda x0, g: solve_sde_euler_maruyama(v, x0, sigma, steps=100, generator=g))
    m = averaged_metrics(sample, problem.base, batches=2)
    assert m["kl"] <= 3 * m["kl_floor"], m


def test_trajectory_between_interpolates_the_euler_path():
    """``Trajectory.between``: u = 0 and u = 1 give the grid states; u = ½ equals an Euler half step."""
    velocity = lambda x, t, c=None: -x + torch.as_tensor(t).reshape(-1, 1)  # noqa: E731
    traj = solve_ode(velocity, torch.randn(5, 2), steps=4, method="euler")
    idx = torch.tensor([0, 2])
    lo, t_lo = traj.between(idx, torch.zeros(2))
    hi, t_hi = traj.between(idx, torch.ones(2))
    torch.testing.assert_close((lo, t_lo), traj.at(idx))
    torch.testing.assert_close((hi, t_hi), traj.at(idx + 1))
    mid, t_mid = traj.between(idx, torch.full((2,), 0.5))
    x, t = traj.at(idx)
    torch.testing.assert_close(mid, x + 0.125 * velocity(x, t))
    torch.testing.assert_close(t_mid, t + 0.125)


def test_bad_time_grids_and_ode_methods_are_refused():
    with pytest.raises(ValueError, match="increasing"):
        solve_ode(lambda x, t, c: x, torch.zeros(2, 2), grid=torch.tensor([0.0, 0.5, 0.4]))
    with pytest.raises(ValueError, match="accepted"):
        solve_ode(lambda x, t, c: x, torch.zeros(2, 2), method="rk99")


def test_sample_ode_is_the_heun_solve_without_a_graph():
    velocity = ExactMixtureVelocity(load_problem("reweight").base)
    weight = torch.tensor(1.5, requires_grad=True)
    x0 = torch.randn(64, 2)
    field = lambda x, t, c: weight * velocity(x, t)  # noqa: E731
    x = sample_ode(field, x0, steps=10)
    assert not x.requires_grad
    with torch.no_grad():
        reference = solve_ode(field, x0, steps=10, method="heun", store=False).final
    assert torch.equal(x, reference)
