"""Fine-tuning methods, one file each, all driven by ``flowlite.train.train`` through ``finetune`` (theory §2).

``METHODS`` maps each method's ``name`` to its class. A method sets ``optimum`` (what it converges to) and
``default_training`` (``finetune`` options: learning rate, EMA, clipping, ``train_steps``).
"""

from __future__ import annotations

import inspect

from flowlite.errors import FlowliteError
from flowlite.methods.ac_flow import ACFlow
from flowlite.methods.adjoint_matching import AdjointMatching
from flowlite.methods.base import OPTIMA, Method
from flowlite.methods.non_memoryless_control import NonMemorylessControl
from flowlite.methods.reward_backprop import DRaFT, ReFL
from flowlite.methods.rwr import OnlineRewardWeightedRegression, RewardWeightedRegression
from flowlite.methods.vgg_flow import VGGFlow
from flowlite.methods.vgg_flow_pmp import VGGFlowPMP

METHODS: dict[str, type[Method]] = {cls.name: cls for cls in (
    AdjointMatching,
    NonMemorylessControl,
    VGGFlow,
    VGGFlowPMP,
    ACFlow,
    RewardWeightedRegression,
    OnlineRewardWeightedRegression,
    ReFL,
    DRaFT,
)}
"""The only list of methods: the command line's choices, the image job's methods, the bench and the recipes derive
from it. Adding a method: one file in this folder, one line here, its tests."""


def build_method(name: str, model, reward, beta: float, **options) -> tuple[Method, dict]:
    """Instantiate a registered method; returns (method, its default training options).

    ``beta`` is passed to methods that take it (the KL-regularised ones); reward-backprop baselines have no KL.
    """
    if name not in METHODS:
        raise FlowliteError(f"unknown method {name!r}; accepted: {', '.join(METHODS)}")
    cls = METHODS[name]
    if "beta" in inspect.signature(cls.__init__).parameters:
        options["beta"] = beta
    try:
        method = cls(model, reward, **options)
    except (TypeError, ValueError) as err:
        raise FlowliteError(f"bad option for method {name!r}: {err}") from None
    return method, dict(cls.default_training)


def takes_beta(name: str) -> bool:
    """Whether a registered method has the KL strength β (the reward-backprop baselines and AC-Flow do not)."""
    return "beta" in inspect.signature(METHODS[name].__init__).parameters


__all__ = ["Method", "AdjointMatching", "NonMemorylessControl", "ACFlow", "RewardWeightedRegression",
           "OnlineRewardWeightedRegression", "ReFL", "DRaFT", "VGGFlow", "VGGFlowPMP", "METHODS", "OPTIMA", "build_method",
           "takes_beta"]
