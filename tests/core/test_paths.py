"""Path identities: interpolation, x̂1, score <-> velocity, memoryless σ."""

import torch

from flowlite.paths import interpolate, memoryless_sigma, score_from_velocity, velocity_from_score, x_hat_1
from flowlite.toy.problems import load_problem


def test_score_and_velocity_round_trip_on_the_exact_mixture():
    base = load_problem("reweight").base.to(torch.float64)
    x = torch.randn(50, 2, dtype=torch.float64)
    t = torch.rand(50, dtype=torch.float64) * 0.9 + 0.05
    v = base.velocity(x, t)
    s = score_from_velocity(x, t, v)
    assert torch.allclose(s, base.path_score(x, t), atol=1e-9)
    assert torch.allclose(velocity_from_score(x, t, s), v, atol=1e-9)
    # x̂1 with the exact velocity is the posterior mean E[x1 | x_t]
    w, means, _ = base.posterior(x, t)
    assert torch.allclose(x_hat_1(x, t, v), (w[..., None] * means).sum(1), atol=1e-9)


def test_interpolation_endpoints_and_memoryless_sigma():
    x0, x1 = torch.randn(5, 2), torch.randn(5, 2)
    assert torch.equal(interpolate(x0, x1, 0.0), x0) and torch.equal(interpolate(x0, x1, 1.0), x1)
    t = torch.tensor([0.25, 0.5])
    assert torch.allclose(memoryless_sigma(t), torch.sqrt(2 * (1 - t) / t))
    assert torch.isfinite(memoryless_sigma(torch.tensor(0.0), offset=0.02))
