"""The 2-D toolkit against independent references: grid integration, Monte Carlo, autograd."""

import math

import pytest
import torch

from flowlite.toy.gmm import GaussianMixture
from flowlite.toy.problems import list_problems, load_problem
from flowlite.toy.rewards import LinearReward, QuadraticReward

torch.set_default_dtype(torch.float32)


def _grid(extent=(-9.0, 9.0), n=721):
    xs = torch.linspace(*extent, n, dtype=torch.float64)
    gx, gy = torch.meshgrid(xs, xs, indexing="ij")
    return torch.stack([gx.reshape(-1), gy.reshape(-1)], -1), (xs[1] - xs[0]) ** 2


@pytest.mark.parametrize("name", list_problems())
def test_closed_form_tilt_equals_grid_integration_of_base_times_exp_beta_r(name):
    problem = load_problem(name)
    base = problem.base.to(torch.float64)
    target = problem.target.to(torch.float64)
    pts, cell = _grid()
    log_r = problem.beta * problem.reward.double()(pts)
    # component k of the tilt is ∝ π_k N_k(x) exp(β r(x)); integrate each on the grid
    comp = torch.exp(base.component_log_probs(pts) + log_r[:, None])  # (n, K)
    mass = comp.sum(0) * cell
    weights = mass / mass.sum()
    assert torch.allclose(weights, target.weights, atol=1e-6), (weights, target.weights)
    for k in range(base.n_components):
        w = comp[:, k] / comp[:, k].sum()
        mean = (w[:, None] * pts).sum(0)
        diff = pts - mean
        cov = (w[:, None, None] * diff[:, :, None] * diff[:, None, :]).sum(0)
        assert torch.allclose(mean, target.means[k], atol=1e-5)
        assert torch.allclose(cov, target.covs[k], atol=1e-5)


def test_linear_and_quadratic_tilts_match_the_density_ratio_pointwise():
    base = GaussianMixture([0.3, 0.7], [[-1.0, 0.5], [2.0, -1.0]], [[[0.5, 0.2], [0.2, 0.3]], [[0.4, 0.0], [0.0, 0.9]]],
                           dtype=torch.float64)
    pts = torch.randn(50, 2, dtype=torch.float64) * 2
    for reward, beta in [(QuadraticReward([[0.7, 0.1], [0.1, 0.2]], [0.5, 0.5]).double(), 1.3),
                         (QuadraticReward([[1.0, 0.0], [0.0, 0.0]], [0.5, 0.5]).double(), 2.0),  # singular A
                         (LinearReward([0.4, -0.8]).double(), 0.7)]:
        tilt = base.tilt(reward, beta)
        log_ratio = tilt.log_prob(pts) - base.log_prob(pts) - beta * reward(pts)
        # log p* - log p_base - β r is the constant -log Z everywhere
        assert log_ratio.std() < 1e-9


@pytest.mark.parametrize("t", [0.1, 0.5, 0.85])
def test_exact_velocity_equals_monte_carlo_estimate_of_conditional_expectation(t):
    """v(x, t) = E[x1 - x0 | x_t = x] = (E[x1 | x_t = x] - x)/(1 - t), with E[x1 | x_t] estimated by
    self-normalised Monte Carlo over x1 ~ p_base weighted by the path kernel N(x; t x1, (1 - t)² I)."""
    problem = load_problem("reweight")
    base = problem.base.to(torch.float64)
    gen = torch.Generator().manual_seed(1)
    x1 = base.sample(400_000, generator=gen)
    # query points drawn from the path itself, so the kernel sees data around them
    queries = t * base.sample(6, generator=gen) + (1 - t) * torch.randn(6, 2, generator=gen, dtype=torch.float64)
    logk = -0.5 * ((queries[:, None, :] - t * x1[None]) ** 2).sum(-1) / (1 - t) ** 2
    w = torch.softmax(logk, dim=1)
    ess = 1 / (w**2).sum(1)
    assert (ess > 300).all(), ess
    mc = ((w @ x1) - queries) / (1 - t)
    exact = base.velocity(queries, t)
    assert torch.allclose(mc, exact, atol=0.05), (mc, exact)


def test_exact_velocity_matches_regression_on_path_samples():
    """Flow-matching regression from samples: the exact field has the lowest conditional-FM loss, and a
    perturbed field loses by exactly the perturbation's mean square (the loss decomposition of FM)."""
    base = load_problem("weak").base.to(torch.float64)
    gen = torch.Generator().manual_seed(2)
    n = 200_000
    x1 = base.sample(n, generator=gen)
    x0 = torch.randn(n, 2, generator=gen, dtype=torch.float64)
    t = torch.rand(n, generator=gen, dtype=torch.float64) * 0.98 + 0.01
    xt = t[:, None] * x1 + (1 - t[:, None]) * x0
    v = base.velocity(xt, t)
    loss_exact = ((v - (x1 - x0)) ** 2).sum(-1).mean()
    delta = 0.3 * torch.tensor([1.0, -0.5], dtype=torch.float64)
    loss_shift = ((v + delta - (x1 - x0)) ** 2).sum(-1).mean()
    assert loss_shift - loss_exact == pytest.approx((delta**2).sum().item(), rel=0.05)


def test_score_matches_autograd_of_log_density():
    base = load_problem("weak").base.to(torch.float64)
    x = torch.randn(20, 2, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(base.log_prob(x).sum(), x)
    assert torch.allclose(base.score(x.detach()), grad, atol=1e-10)


@pytest.mark.parametrize("t", [0.2, 0.6, 0.95])
def test_path_score_velocity_and_posterior_agree(t):
    base = load_problem("reweight").base.to(torch.float64)
    x = torch.randn(30, 2, dtype=torch.float64) * 2
    xg = x.clone().requires_grad_(True)
    (score_autograd,) = torch.autograd.grad(base.marginal(t).log_prob(xg).sum(), xg)
    assert torch.allclose(base.path_score(x, t), score_autograd, atol=1e-9)
    v = base.velocity(x, t)
    assert torch.allclose(v, (x + (1 - t) * score_autograd) / t, atol=1e-8)
    w, means, covs = base.posterior(x, t)
    posterior_mean = (w[..., None] * means).sum(1)
    assert torch.allclose(x + (1 - t) * v, posterior_mean, atol=1e-8)  # x̂1 is E[x1 | x_t]
    assert (torch.linalg.eigvalsh(covs) > 0).all()


def test_velocity_at_the_ends_of_time():
    base = load_problem("reweight").base.to(torch.float64)
    x = torch.randn(10, 2, dtype=torch.float64)
    # at t = 1, S_k = Σ_k and the gain is Σ_k: every component gives μ_k + (x - μ_k) = x (theory §6.10's sanity check)
    assert torch.allclose(base.velocity(x, 1.0), x, atol=1e-10)
    # at t = 0, x_0 carries no information about x1: v(x, 0) = E[x1] - x
    mean_x1 = (base.weights[:, None] * base.means).sum(0)
    assert torch.allclose(base.velocity(x, 0.0), mean_x1 - x, atol=1e-10)


def test_sampling_matches_weights_means_and_covariances():
    base = load_problem("weak").base.to(torch.float64)
    x = base.sample(200_000, generator=torch.Generator().manual_seed(3))
    resp = base.responsibilities(x).mean(0)
    assert torch.allclose(resp, base.weights, atol=0.01)
    mean = (base.weights[:, None] * base.means).sum(0)
    assert torch.allclose(x.mean(0), mean, atol=0.02)


def test_bad_mixture_inputs_name_the_problem():
    with pytest.raises(ValueError, match="weights"):
        GaussianMixture([0.5], [[0.0, 0.0], [1.0, 1.0]], [[[1.0, 0], [0, 1.0]]] * 2)
    with pytest.raises(ValueError, match="positive definite"):
        GaussianMixture([1.0], [[0.0, 0.0]], [[[1.0, 0], [0, -1.0]]])
    assert math.isclose(GaussianMixture([2.0, 2.0], [[0.0], [1.0]], [[[1.0]], [[1.0]]]).weights.sum().item(), 1.0)
