"""ReFL and DRaFT maximise reward without a KL term: reward goes up, and the law moves *past* the exact tilt."""

import pytest
import torch

from flowlite.finetune import finetune
from flowlite.methods import METHODS, DRaFT, ReFL
from flowlite.toy.metrics import histogram_kl, mode_mass_error, reward_stats
from flowlite.toy.problems import load_problem


@pytest.mark.parametrize("cls,kwargs", [(ReFL, {}), (DRaFT, {"k": 1}), (DRaFT, {"k": "all"})])
def test_reward_backprop_raises_reward_and_ends_farther_from_the_tilt(cls, kwargs):
    torch.manual_seed(0)
    problem = load_problem("reweight")
    method = cls(problem.flow("exact"), problem.reward, batch_size=256, solver_steps=20, **kwargs)
    gen = torch.Generator().manual_seed(1)
    before = method.sample(4000, solver_steps=20, generator=gen)
    finetune(method, 60, lr=3e-3, progress=False)
    after = method.sample(4000, solver_steps=20, generator=gen)
    target = problem.target
    assert reward_stats(problem.reward, after).mean > reward_stats(problem.reward, target.sample(4000)).mean + 0.2
    assert mode_mass_error(after, target) > mode_mass_error(before, target) + 0.05
    assert histogram_kl(after, target) > 10 * histogram_kl(before, target)


def test_methods_registry_and_argument_checks():
    problem = load_problem("weak")
    assert METHODS["refl"] is ReFL and METHODS["draft"] is DRaFT
    with pytest.raises(ValueError, match="k must be"):
        DRaFT(problem.flow("exact"), problem.reward, solver_steps=10, k=11)
    with pytest.raises(ValueError, match="late_fraction"):
        ReFL(problem.flow("exact"), problem.reward, late_fraction=(0.9, 0.5))


def test_fine_tuned_model_starts_exactly_at_the_base():
    problem = load_problem("weak")
    flow = problem.flow("exact")
    x, t = torch.randn(64, 2), torch.rand(64)
    assert torch.equal(flow.velocity(x, t), flow.base_velocity(x, t))
    assert all(p.requires_grad for p in flow.trainable_parameters())
    assert not any(p.requires_grad for p in flow.base.parameters())
