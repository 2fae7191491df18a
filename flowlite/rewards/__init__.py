"""Rewards: callables ``reward(x, cond=None) -> (B,)``, differentiable in x (theory §1.4). This room holds the seam
and the image rewards; it imports no model package (the 2-D rewards live in ``flowlite.toy.rewards``, rewards on
latents in each model package). Image rewards load transformers only when built."""

from flowlite.rewards.base import Reward, reward_gradient

__all__ = ["Reward", "reward_gradient"]
