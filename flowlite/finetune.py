"""``finetune(method, …)``: build the optimiser for a method and hand it to the one training loop."""

from __future__ import annotations

from typing import Callable

import torch

from flowlite.methods.base import Method
from flowlite.train import TrainResult, train


def finetune(method: Method, steps: int, lr: float = 1e-3, weight_decay: float = 0.0,
             grad_clip: float | None = 1.0, callback: Callable[[int], dict] | None = None,
             callback_every: int = 0, **train_kwargs) -> TrainResult:
    """Adam(W) on ``method.parameter_groups()``, then ``train(method, method.loss, …)``."""
    optimizer = torch.optim.AdamW(method.parameter_groups(), lr=lr, weight_decay=weight_decay)
    return train(method, method.loss, optimizer, steps, grad_clip=grad_clip, callback=callback,
                 callback_every=callback_every, desc=method.name, **train_kwargs)
