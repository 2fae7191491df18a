"""Image rewards by name: the one list the jobs and the command line derive their choices from."""

from __future__ import annotations

from pathlib import Path

from flowlite.errors import FlowliteError
from flowlite.rewards.base import Reward
from flowlite.rewards.extras import optional_reward
from flowlite.rewards.image import AestheticReward, CLIPScore, PickScore

OPTIONAL = ("hpsv2", "imagereward")
IMAGE_REWARDS = {"aesthetic": AestheticReward, "pickscore": PickScore, "clipscore": CLIPScore}


def image_reward(name: str, pretrained: str | Path | None = None, tiny: bool = False, seed: int = 0, **kw) -> Reward:
    """Build an image reward by name: ``aesthetic``, ``pickscore`` or ``clipscore`` from ``pretrained`` (hub id
    or folder; the class default when None) or, with ``tiny=True``, random weights. ``hpsv2`` (``pretrained`` = its
    checkpoint) and ``imagereward`` are optional extras (``rewards/extras.py``): a clear error says how to install
    them when they are missing."""
    key = name.lower().replace("-", "").replace("_", "")
    if key in OPTIONAL:
        if tiny:
            raise FlowliteError(f"{name} has no tiny random version; tiny rewards: {', '.join(IMAGE_REWARDS)}")
        return optional_reward(key, pretrained, **kw)
    if key not in IMAGE_REWARDS:
        raise FlowliteError(f"unknown reward {name!r}; accepted: {', '.join(IMAGE_REWARDS)} "
                            f"(optional extras: {', '.join(OPTIONAL)})")
    cls = IMAGE_REWARDS[key]
    if tiny:
        return cls.tiny(seed)
    return cls.from_pretrained(pretrained, **kw) if pretrained is not None else cls.from_pretrained(**kw)
