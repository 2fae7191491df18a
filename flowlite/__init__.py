"""flowlite: reward fine-tuning of flow matching models through optimal control.

Paper time everywhere: t = 0 is noise x0 ~ N(0, I), t = 1 is data, x_t = t x1 + (1 - t) x0. The maths, with every
convention, is in the repository's ``docs/theory.md``; docstrings cite it as "theory §N".

The public API below is what notebooks, the README and user scripts import (``from flowlite import AdjointMatching``).
Names load on first use, so ``import flowlite`` is cheap and never imports diffusers, transformers or peft; the SD3
names load diffusers when they are used.

Rooms: the core (this folder's modules), ``methods/`` (one file per method; core only), ``rewards/`` (the reward seam
and image rewards; no model package), ``toy/`` (the 2-D world), ``sd3/`` (Stable Diffusion 3 / 3.5), ``jobs/`` (the
command line). ``tests/test_layout.py`` holds the import rule.
"""

from __future__ import annotations

import importlib

from flowlite import quiet

quiet.install()  # library warnings the user cannot act on (flowlite/quiet.py)

__version__ = "0.1.0"

_PUBLIC = {
    # the 2-D world
    "GaussianMixture": "flowlite.toy.gmm", "ToyFlow": "flowlite.toy.flow",
    "ExactMixtureVelocity": "flowlite.toy.exact_velocity", "QuadraticReward": "flowlite.toy.rewards",
    "LinearReward": "flowlite.toy.rewards", "load_problem": "flowlite.toy.problems",
    "list_problems": "flowlite.toy.problems", "score": "flowlite.toy.metrics",
    # the core
    "FlowModel": "flowlite.flows", "Reward": "flowlite.rewards.base", "reward_gradient": "flowlite.rewards.base",
    "solve_ode": "flowlite.solvers", "solve_sde": "flowlite.solvers", "sample_ode": "flowlite.solvers",
    "uniform_grid": "flowlite.solvers", "Trajectory": "flowlite.solvers",
    "Memoryless": "flowlite.schedules", "EulerMaruyama": "flowlite.schedules",
    "lean_adjoint": "flowlite.adjoint", "train": "flowlite.train", "finetune": "flowlite.finetune",
    "FlowliteError": "flowlite.errors", "seed_everything": "flowlite.config",
    # methods
    "METHODS": "flowlite.methods", "build_method": "flowlite.methods", "Method": "flowlite.methods",
    "AdjointMatching": "flowlite.methods", "NonMemorylessControl": "flowlite.methods", "VGGFlow": "flowlite.methods",
    "VGGFlowPMP": "flowlite.methods", "ACFlow": "flowlite.methods", "RewardWeightedRegression": "flowlite.methods",
    "OnlineRewardWeightedRegression": "flowlite.methods", "ReFL": "flowlite.methods", "DRaFT": "flowlite.methods",
    # image models (load diffusers when used)
    "SD3Flow": "flowlite.sd3", "load_sd3": "flowlite.sd3", "PromptCache": "flowlite.sd3",
    "LatentReward": "flowlite.sd3", "image_reward": "flowlite.rewards.registry",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'flowlite' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
