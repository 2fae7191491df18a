"""Exact targets of the deterministic-control objective that VGG-Flow (and any ODE-based value method) solves
(theory §6.1, §6.10):  min E[(1/2β) ∫‖v - v_base‖² dt - r(x_1)] along the ODE. Not the KL tilt.

* Single Gaussian base N(μ, s²I), quadratic reward with A = aI: the base flow map is T(x0) = μ + s x0, the
  controllability Gramian is G = πs/2, and each particle lands on the prox point
  x1 = (T(x0) + βGa m)/(1 + βGa): the law N((μ + βGa m)/(1 + βGa), s²/(1 + βGa)² I).
* Any base: optimise the open-loop control of each particle, u_k on the solver grid, for
  Σ_k h (1/2β)‖u_k‖² - r(x_K) with x_{k+1} = x_k + h (v_base(x_k, t_k) + u_k) (cheap in 2-D).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from flowlite.toy.gmm import GaussianMixture
from flowlite.paths import batch_time
from flowlite.toy.rewards import QuadraticReward


def gaussian_deterministic_optimum(base: GaussianMixture, reward: QuadraticReward, beta: float
                                   ) -> tuple[Tensor, Tensor]:
    """(mean, covariance) of the deterministic-control optimum for a one-component isotropic base and
    A = aI (theory §6.10). Raises ValueError otherwise."""
    s, a = _isotropic_quadratic(base, reward)
    s2 = s * s
    cov = base.covs[0]
    k = beta * (math.pi * s / 2) * a
    mean = (base.means[0] + k * reward.m.to(base.means.dtype)) / (1 + k)
    return mean, (s2 / (1 + k) ** 2) * torch.eye(base.dim, dtype=cov.dtype)


def _isotropic_quadratic(base: GaussianMixture, reward: QuadraticReward) -> tuple[float, float]:
    """(s, a) for a one-component base N(μ, s²I) and A = aI; ValueError otherwise."""
    if base.n_components != 1:
        raise ValueError("the closed form needs a single-Gaussian base")
    cov = base.covs[0]
    s2 = cov[0, 0].item()
    if not torch.allclose(cov, s2 * torch.eye(base.dim, dtype=cov.dtype)):
        raise ValueError("the closed form needs an isotropic base covariance s²I")
    if not isinstance(reward, QuadraticReward):
        raise ValueError(f"the closed form needs a quadratic reward, got {type(reward).__name__}")
    a = reward.A[0, 0].item()
    if not torch.allclose(reward.A, a * torch.eye(base.dim, dtype=reward.A.dtype)):
        raise ValueError("the closed form needs A = aI")
    return math.sqrt(s2), a


def gaussian_value_gradient(base: GaussianMixture, reward: QuadraticReward, beta: float):
    """The exact value gradient ∇V(x, t) of the deterministic control problem for a single Gaussian base
    N(μ, s²I) and r = -a/2‖x - m‖² (theory §6.10), as a function ``(x, t) -> (B, d)``:

        ∇V(x, t) = aΦ_t (T_t(x) - m) / (1 + βaG_t),   T_t(x) = μ + Φ_t (x - tμ),
        Φ_t = s / sqrt((1 - t)² + t²s²),   G_t = ∫_t^1 Φ_u² du = s[arctan s - arctan(((1 + s²)t - 1)/s)],

    where T_t is the base flow map from t to 1: the envelope theorem applied to the prox point of
    ``gaussian_deterministic_optimum`` started at time t. At t = 1 it is -∇r; the optimal control is -β∇V."""
    s, a = _isotropic_quadratic(base, reward)
    mu, m = base.means[0], reward.m.to(base.means.dtype)

    def value_gradient(x: Tensor, t: Tensor | float) -> Tensor:
        t = batch_time(t, x).reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype)
        phi = s / torch.sqrt((1 - t) ** 2 + (t * s) ** 2)
        gram = s * (math.atan(s) - torch.atan(((1 + s * s) * t - 1) / s))
        flow_map = mu.to(x) + phi * (x - t * mu.to(x))
        return a * phi * (flow_map - m.to(x)) / (1 + beta * a * gram)

    return value_gradient


def deterministic_control_samples(base_velocity, reward, beta: float, x0: Tensor, steps: int = 50,
                                  iterations: int = 300, lr: float = 0.05, cond=None) -> Tensor:
    """Endpoints of the per-particle optimal open-loop controls (Adam on the controls; the reference VGG-Flow
    should reach on any base). Euler grid of ``steps`` steps."""
    h = 1.0 / steps
    times = [k * h for k in range(steps)]
    controls = torch.zeros(steps, *x0.shape, dtype=x0.dtype, requires_grad=True)
    opt = torch.optim.Adam([controls], lr=lr)

    def rollout():
        x = x0
        for k, t in enumerate(times):
            x = x + h * (base_velocity(x, batch_time(t, x), cond) + controls[k])
        return x

    for _ in range(iterations):
        x1 = rollout()
        cost = (0.5 / beta) * h * controls.pow(2).reshape(steps, x0.shape[0], -1).sum((0, 2)) - reward(x1, cond)
        opt.zero_grad()
        cost.sum().backward()
        opt.step()
    with torch.no_grad():
        return rollout()
