"""METHODS is the only list of methods: every other list derives from it, and every method states its optimum."""

import torch

from flowlite import METHODS, ToyFlow
from flowlite.jobs.bench import OWN_OPTIMUM_METHODS
from flowlite.jobs.cli import build_parser
from flowlite.methods import OPTIMA, takes_beta


def test_registry_keys_are_the_classes_names_and_every_optimum_is_known():
    assert all(cls.name == name and cls.optimum in OPTIMA for name, cls in METHODS.items())
    assert all("train_steps" in cls.default_training for cls in METHODS.values())


def test_the_command_line_and_the_bench_derive_their_lists_from_the_registry():
    finetune = next(a for a in build_parser()._subparsers._group_actions[0].choices["finetune"]._actions
                    if a.dest == "method")
    assert list(finetune.choices) == list(METHODS)
    assert set(OWN_OPTIMUM_METHODS) == {n for n, c in METHODS.items() if c.optimum == "deterministic-control"}
    assert set(OWN_OPTIMUM_METHODS) == {"vgg-flow", "vgg-flow-pmp"}


def test_kl_regularised_methods_take_beta_and_the_others_refuse_it():
    assert all(takes_beta(n) for n in ("adjoint-matching", "non-memoryless-control", "vgg-flow", "vgg-flow-pmp",
                                       "rwr", "orw"))
    assert not any(takes_beta(n) for n in ("ac-flow", "refl", "draft"))
    assert all(takes_beta(n) for n, cls in METHODS.items() if cls.optimum in ("kl-tilt", "deterministic-control"))


def test_toy_flow_supplies_a_critic_and_a_correction_that_starts_at_zero(reweight):
    flow = reweight.flow("exact")
    x, t = torch.randn(7, 2), torch.rand(7)
    assert flow.make_critic()(x, t).shape == (7,)
    correction = flow.make_value_correction()
    assert isinstance(flow, ToyFlow) and torch.equal(correction(x, t), torch.zeros(7, 2))
