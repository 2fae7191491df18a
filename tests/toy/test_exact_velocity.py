"""The float32 exact mixture velocity against the float64 closed form of ``GaussianMixture.velocity``."""

import pytest
import torch

from flowlite.toy.exact_velocity import ExactMixtureVelocity
from flowlite.toy.problems import list_problems, load_problem

TIMES = (0.0, 0.01, 0.5, 0.9, 0.99, 1.0)


def _mixtures():
    for name in list_problems():
        problem = load_problem(name)
        yield pytest.param(problem.base, id=f"{name}-base")
        yield pytest.param(problem.target, id=f"{name}-tilt")


def _points(mixture, t, n=2000, seed=0):
    """Samples of p_t, plus a 61 × 61 grid on [-5, 5]² (the plots' window and beyond)."""
    gen = torch.Generator().manual_seed(seed)
    on_path = mixture.marginal(t).sample(n, generator=gen)
    axis = torch.linspace(-5, 5, 61, dtype=on_path.dtype)
    grid = torch.cartesian_prod(axis, axis)
    return torch.cat([on_path, grid]).float()


def _relative(out, ref):
    """Largest error over the largest value of the field (or over 1 where the field is 0: N(0, I) at t = ½)."""
    return ((out.double() - ref).abs().max() / ref.abs().max().clamp_min(1.0)).item()


@pytest.mark.parametrize("mixture", _mixtures())
@pytest.mark.parametrize("t", TIMES)
def test_float32_velocity_equals_the_float64_reference(mixture, t):
    x = _points(mixture, t)
    out = ExactMixtureVelocity(mixture)(x, t)
    assert out.dtype == torch.float32
    ref = mixture.to(torch.float64).velocity(x.double(), t)
    assert _relative(out, ref) < 1e-5


@pytest.mark.parametrize("mixture", _mixtures())
def test_one_time_per_row_and_float64_inputs(mixture):
    gen = torch.Generator().manual_seed(1)
    x = 3 * torch.randn(4000, mixture.dim, generator=gen)
    t = torch.rand(4000, generator=gen)
    t[: len(TIMES)] = torch.tensor(TIMES)
    ref = mixture.to(torch.float64).velocity(x.double(), t.double())
    assert _relative(ExactMixtureVelocity(mixture)(x, t), ref) < 1e-5
    out64 = ExactMixtureVelocity(mixture)(x.double(), t.double())
    assert out64.dtype == torch.float64 and _relative(out64, ref) < 1e-12


def test_vector_jacobian_product_matches_the_reference():
    mixture = load_problem("weak").base  # full covariances: the rotation is not the identity
    x = torch.randn(256, 2, dtype=torch.float64, requires_grad=True)
    cot = torch.randn(256, 2, dtype=torch.float64)
    (ours,) = torch.autograd.grad(ExactMixtureVelocity(mixture)(x, 0.7), x, cot)
    (ref,) = torch.autograd.grad(mixture.to(torch.float64).velocity(x, 0.7), x, cot)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)


def test_holds_no_state_dict_entries():
    assert not ExactMixtureVelocity(load_problem("reweight").base).state_dict()
