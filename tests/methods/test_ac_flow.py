"""AC-Flow (reconstructed), its critic, and reward-weighted regression against exact 2-D references."""

import pytest
import torch

from flowlite.config import fast
from flowlite.finetune import finetune
from flowlite.methods import ACFlow, OnlineRewardWeightedRegression, RewardWeightedRegression
from flowlite.methods.ac_flow import advantage_weights
from flowlite.toy.metrics import histogram_kl, mode_mass_error, reward_stats
from flowlite.toy.problems import load_problem
from flowlite.solvers import sample_ode
from flowlite.toy.exact_critic import exact_critic



def _ode_samples(model, n=4000, seed=1, base=False):
    x0 = torch.randn(n, 2, generator=torch.Generator().manual_seed(seed))
    field = model.base_velocity if base else model.velocity
    with torch.no_grad():
        return sample_ode(field, x0)


@pytest.mark.parametrize("name", ["reweight", "weak"])
def test_exact_critic_equals_monte_carlo_conditional_expectation(name):
    problem = load_problem(name)
    base = problem.base.to(torch.float64)
    reward = problem.reward
    gen = torch.Generator().manual_seed(0)
    x1 = base.sample(400_000, generator=gen)
    r1 = reward(x1.float()).double()
    for t in (0.2, 0.5, 0.8):
        queries = t * base.sample(5, generator=gen) + (1 - t) * torch.randn(5, 2, generator=gen, dtype=torch.float64)
        logk = -0.5 * ((queries[:, None, :] - t * x1[None]) ** 2).sum(-1) / (1 - t) ** 2
        mc = torch.softmax(logk, dim=1) @ r1
        exact = exact_critic(base, reward, queries, t)
        assert torch.allclose(mc, exact, atol=0.02), (t, mc, exact)


def test_offline_rwr_lands_on_the_exact_tilt(reweight):
    torch.manual_seed(0)
    method = RewardWeightedRegression(reweight.flow("exact"), reweight.reward, reweight.beta, batch_size=1024,
                                      n_samples=50_000)
    base_error = mode_mass_error(_ode_samples(method.model, base=True), reweight.target)
    finetune(method, fast(3000, 300), lr=1e-3, grad_clip=None, lr_schedule="cosine", progress=False)
    errors = [mode_mass_error(_ode_samples(method.model, seed=s), reweight.target) for s in (1, 2, 3, 4)]
    error = sum(errors) / len(errors)
    if fast(False, True):
        assert error < 0.5 * base_error, (base_error, error)
    else:
        assert error <= 0.03, errors


def test_learned_critic_approaches_the_exact_conditional_expectation(reweight):
    torch.manual_seed(0)
    method = ACFlow(reweight.flow("exact"), reweight.reward, temperature=1 / reweight.beta, shaping="none", warmup=10**9,
                    batch_size=256, solver_steps=50, n_times=16)
    finetune(method, fast(300, 120), lr=1e-3, progress=False)
    gen = torch.Generator().manual_seed(5)
    for t in (0.3, 0.6, 0.9):
        x = reweight.base.marginal(t).sample(2000, generator=gen)
        with torch.no_grad():
            learned = method.critic(x, t)
        exact = exact_critic(reweight.base, reweight.reward, x, t)
        rel_rmse = ((learned - exact).pow(2).mean().sqrt() / exact.std()).item()
        assert rel_rmse < fast(0.25, 0.35), (t, rel_rmse)


def test_clipped_advantages_bound_the_weights():
    a = torch.randn(1000) * 50
    clip = 2.0
    w = advantage_weights(a.clamp(-clip, clip), "exp", temperature=1.0)
    assert w.max() <= torch.exp(torch.tensor(2 * clip)) + 1e-4
    assert w.mean().item() == pytest.approx(1.0, rel=1e-5)
    assert advantage_weights(torch.tensor([-3.0, 0.0]), "relu").tolist() == [0.0, 1.0]


def test_warmup_trains_only_the_critic(reweight):
    torch.manual_seed(0)
    method = ACFlow(reweight.flow("exact"), reweight.reward, temperature=1 / reweight.beta, warmup=5, batch_size=64, solver_steps=20)
    actor = [p.detach().clone() for p in method.model.trainable_parameters()]
    critic = [p.detach().clone() for p in method.critic.parameters()]
    finetune(method, 5, progress=False, **{"lr": 1e-3})
    assert all(torch.equal(a, p) for a, p in zip(actor, method.model.trainable_parameters()))
    assert any(not torch.equal(c, p) for c, p in zip(critic, method.critic.parameters()))
    finetune(method, 1, progress=False, lr=1e-3)  # a fresh loop restarts its step count: still warm-up
    method.warmup = 0
    finetune(method, 2, progress=False, lr=1e-3)
    assert any(not torch.equal(a, p) for a, p in zip(actor, method.model.trainable_parameters()))


def _ac_run(problem, alpha, iterations):
    torch.manual_seed(0)
    method = ACFlow(problem.flow("exact"), problem.reward, temperature=1 / problem.beta, alpha=alpha, warmup=10,
                    batch_size=256, solver_steps=30)
    finetune(method, iterations, lr=1e-3, progress=False)
    x = _ode_samples(method.model)
    return reward_stats(problem.reward, x).mean, histogram_kl(x, problem.base)


def test_ac_flow_raises_reward_with_distance_to_base_ordered_by_the_w2_weight(reweight):
    base_reward = reward_stats(reweight.reward, _ode_samples(reweight.flow("exact"), base=True)).mean
    runs = {alpha: _ac_run(reweight, alpha, fast(120, 60)) for alpha in (0.3, 1.0, 3.0)}
    rewards = {a: r for a, (r, _) in runs.items()}
    distance = {a: d for a, (_, d) in runs.items()}
    assert all(r > base_reward + 0.02 for r in rewards.values()), (base_reward, rewards)
    assert distance[0.3] > distance[1.0] > distance[3.0], distance


def test_huge_w2_weight_keeps_the_actor_at_the_reference(reweight):
    torch.manual_seed(0)
    method = OnlineRewardWeightedRegression(reweight.flow("exact"), reweight.reward, reweight.beta, alpha=1e4,
                                            batch_size=128, solver_steps=20)
    finetune(method, 20, lr=1e-3, progress=False)
    ac = ACFlow(reweight.flow("exact"), reweight.reward, temperature=1 / reweight.beta, alpha=1e4, warmup=0, batch_size=128, solver_steps=20)
    finetune(ac, 20, lr=1e-3, progress=False)
    x, t = torch.randn(1000, 2) * 2, torch.rand(1000)
    for m in (method, ac):
        with torch.no_grad():
            gap = (m.model.velocity(x, t) - m.model.base_velocity(x, t)).norm(dim=1).mean()
        assert gap < 0.05, gap
