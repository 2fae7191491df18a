"""The yardstick: one Adjoint Matching iteration written flat, with the fastest exact velocity we can write in a few
lines (isotropic components, closed form) and a plain MLP of the same size as flowlite's residual. Nothing from
flowlite but the problem's numbers and the exponential-integrator coefficients (three floats per step).

Same maths as ``AdjointMatching``: memoryless SDE with the exponential integrator, lean adjoint with one VJP of
the base per step, regression of Δv onto -η_t a_t on every inner grid time (η_t = (1 - t)/t).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from flowlite.schedules import exponential_integrator_coefficients


def isotropic_mixture_velocity(mixture):
    """v(x, t) of a mixture whose covariances are λ_k I: S_k = ((1-t)² + t²λ_k) I, all elementwise."""
    covs = mixture.covs.float()
    lam = covs[:, 0, 0]
    assert torch.allclose(covs, lam[:, None, None] * torch.eye(covs.shape[-1])), "isotropic covariances only"
    mu, logw, d = mixture.means.float(), mixture.weights.float().log(), covs.shape[-1]

    def v(x, t):
        t = t.reshape(-1, 1)
        s = (1 - t) ** 2 + t**2 * lam  # (n, K)
        diff = x[:, None, :] - t[..., None] * mu  # (n, K, d)
        w = torch.softmax(logw - 0.5 * d * s.log() - (diff * diff).sum(-1) / (2 * s), dim=-1)
        return (w[..., None] * (mu + ((t * lam - (1 - t)) / s)[..., None] * diff)).sum(1)

    return v


class PlainResidual(nn.Module):
    """[x, sin/cos(2π f t)] -> (depth - 1) × (Linear, SiLU) -> Linear(2), zero output layer."""

    def __init__(self, width: int, depth: int, time_dim: int = 16, max_frequency: float = 4.0):
        super().__init__()
        self.freqs = 2 * math.pi * torch.exp(torch.linspace(0.0, math.log(max_frequency), time_dim // 2))
        layers, fan_in = [], 2 + time_dim
        for _ in range(depth - 1):
            layers += [nn.Linear(fan_in, width), nn.SiLU()]
            fan_in = width
        self.net = nn.Sequential(*layers, nn.Linear(fan_in, 2))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, x, t):
        angles = t.reshape(-1, 1) * self.freqs
        return self.net(torch.cat([x, angles.sin(), angles.cos()], -1))


def minimal_am_iteration(problem, batch: int = 256, steps: int = 50, width: int = 128, depth: int = 4,
                         lr: float = 3e-3):
    """A closure running one Adjoint Matching iteration (sample, adjoint, regress, AdamW step)."""
    v_base, net = isotropic_mixture_velocity(problem.base), PlainResidual(width, depth)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.0)
    times = torch.linspace(0, 1, steps + 1, dtype=torch.float64).tolist()
    coef = [exponential_integrator_coefficients(t, u) for t, u in zip(times[:-1], times[1:])]
    t_rows = [torch.full((batch,), t) for t in times]
    t_inner = torch.cat(t_rows[1:steps])
    eta = ((1 - t_inner) / t_inner)[:, None]

    def iteration():
        xs = [torch.randn(batch, 2)]
        with torch.no_grad():
            for k, (a, b, s) in enumerate(coef):
                x = xs[-1]
                xs.append(a * x + b * (v_base(x, t_rows[k]) + net(x, t_rows[k])) + s * torch.randn_like(x))
        x1 = xs[-1].requires_grad_(True)
        (g,) = torch.autograd.grad(problem.reward(x1).sum(), x1)
        adj = [-problem.beta * g]
        for k in range(steps - 1, 0, -1):  # a_0 is never regressed on
            xk = xs[k].requires_grad_(True)
            (vjp,) = torch.autograd.grad(v_base(xk, t_rows[k]), xk, adj[-1])
            adj.append(coef[k][0] * adj[-1] + coef[k][1] * vjp)
        target = -eta * torch.cat(adj[:0:-1])
        loss = ((net(torch.cat(xs[1:steps]).detach(), t_inner) - target) ** 2).sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    return iteration
