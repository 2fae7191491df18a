"""Rewards: callables ``reward(x, cond=None) -> (B,)``, differentiable in x (DESIGN §2)."""

from flowlite.rewards.base import Reward, reward_gradient
from flowlite.rewards.toy import LinearReward, MixtureLogDensityReward, QuadraticReward, ToyReward, reward_from_dict

__all__ = [
    "Reward",
    "reward_gradient",
    "ToyReward",
    "QuadraticReward",
    "LinearReward",
    "MixtureLogDensityReward",
    "reward_from_dict",
]
