"""Fine-tuning methods, one file each, all driven by ``flowlite.train.train`` through ``finetune``.

``METHODS`` maps the command-line name of each method to its class; a new method registers here, and sets
``default_training`` (learning rate, EMA, clipping, steps) for the command line.
"""

from __future__ import annotations

import inspect

from flowlite.errors import FlowliteError
from flowlite.methods.ac_flow import ACFlow
from flowlite.methods.adjoint_matching import AdjointMatching, NonMemorylessControl, VGGFlowPMP
from flowlite.methods.base import Method
from flowlite.methods.reward_backprop import DRaFT, ReFL
from flowlite.methods.rwr import OnlineRewardWeightedRegression, RewardWeightedRegression
from flowlite.methods.vgg_flow import VGGFlow

METHODS: dict[str, type[Method]] = {
    "adjoint-matching": AdjointMatching,
    "non-memoryless-control": NonMemorylessControl,
    "vgg-flow": VGGFlow,
    "vgg-flow-pmp": VGGFlowPMP,
    "ac-flow": ACFlow,
    "rwr": RewardWeightedRegression,
    "orw": OnlineRewardWeightedRegression,
    "refl": ReFL,
    "draft": DRaFT,
}


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


__all__ = ["Method", "AdjointMatching", "NonMemorylessControl", "ACFlow", "RewardWeightedRegression",
           "OnlineRewardWeightedRegression", "ReFL", "DRaFT", "VGGFlow", "VGGFlowPMP", "METHODS", "build_method"]
