"""VGG-Flow pieces against exact references: the HJB residual of the exact value gradient (spec §8.4 LQ case),
the stop-gradients, and the deterministic-control reference."""

import math

import torch

from flowlite.flows import ExactMixtureVelocity
from flowlite.methods.vgg_flow import VGGFlow
from flowlite.problems import load_problem
from flowlite.reference import deterministic_control_samples, gaussian_deterministic_optimum
from flowlite.value import hjb_residual


def _exact_value_gradient(a, m, beta):
    """∇V for the standard Gaussian base and r = -a/2‖x - m‖²: with Φ(t) = 1/sqrt((1-t)² + t²) and
    G(t) = ∫_t^1 Φ² = π/4 - arctan(2t - 1), ∇V(x, t) = aΦ(Φx - m)/(1 + βaG)."""
    def g(x, t):
        t = t.reshape(-1, 1)
        phi = 1 / torch.sqrt((1 - t) ** 2 + t**2)
        gram = math.pi / 4 - torch.atan(2 * t - 1)
        return a * phi * (phi * x - m) / (1 + beta * a * gram)
    return g


def test_hjb_residual_of_the_exact_value_gradient_vanishes_as_the_step_shrinks():
    problem = load_problem("gaussian")
    a, m, beta = 1.0, problem.reward.m.double(), problem.beta
    g_fn = _exact_value_gradient(a, m, beta)
    v_base = ExactMixtureVelocity(problem.base)
    base = lambda x, t, c=None: v_base(x, t)  # noqa: E731
    x = torch.randn(200, 2, dtype=torch.float64)
    t = torch.rand(200, dtype=torch.float64) * 0.8 + 0.1
    g = g_fn(x, t)
    scale = g.pow(2).sum(-1).mean().sqrt().item()
    errors = []
    for eps in (1e-1, 1e-2, 1e-3):
        r = hjb_residual(g_fn, base, x, t, g, beta, eps, eps)
        errors.append(r.pow(2).sum(-1).mean().sqrt().item() / scale)
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 1e-5, errors
    # a wrong value gradient has a clearly non-zero residual
    wrong = lambda x_, t_: 1.3 * g_fn(x_, t_)  # noqa: E731
    r = hjb_residual(wrong, base, x, t, wrong(x, t), beta, 1e-3, 1e-3)
    assert r.pow(2).sum(-1).mean().sqrt().item() / scale > 0.05


def test_matching_moves_only_theta_and_value_losses_move_only_phi():
    problem = load_problem("reweight")
    torch.manual_seed(0)
    method = VGGFlow(problem.flow("exact"), problem.reward, problem.beta, batch_size=32, steps=10)
    with torch.no_grad():  # make both networks non-trivial so every gradient path is live
        for p in list(method.model.trainable_parameters()) + list(method.value_gradient.correction.parameters()):
            p.add_(0.01 * torch.randn_like(p))
    theta = list(method.model.trainable_parameters())
    phi = list(method.value_gradient.correction.parameters())
    parts, _ = method.losses(0)

    def grads(loss, params):
        out = torch.autograd.grad(loss, params, allow_unused=True, retain_graph=True)
        return [0.0 if g is None else g.abs().max().item() for g in out]

    assert max(grads(parts["match"], phi)) == 0.0 and max(grads(parts["match"], theta)) > 0
    for name in ("consistency", "boundary"):
        assert max(grads(parts[name], theta)) == 0.0 and max(grads(parts[name], phi)) > 0, name
    # first-order only: no graph of a gradient is ever built, so the losses have no double-backward nodes
    assert all(p.grad is None for p in theta + phi)


def test_open_loop_reference_matches_the_gaussian_closed_form():
    problem = load_problem("gaussian")
    mean, cov = gaussian_deterministic_optimum(problem.base, problem.reward, problem.beta)
    assert abs(mean[0].item() - 0.880) < 1e-3 and abs(cov[0, 0].item() - 0.314) < 1e-3  # spec §8.4 numbers
    torch.manual_seed(0)
    v = ExactMixtureVelocity(problem.base)
    x1 = deterministic_control_samples(v, problem.reward, problem.beta, torch.randn(1000, 2), steps=40,
                                       iterations=200)
    assert abs(x1[:, 0].mean().item() - mean[0].item()) < 0.05
    assert abs(x1.var(0).mean().item() - cov[0, 0].item()) < 0.05
