"""``finetune(method, train_steps, …)``: an optimiser over the method's parameter groups, then the one training loop."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch

from flowlite.ema import EMA
from flowlite.train import TrainResult, train

if TYPE_CHECKING:  # pragma: no cover
    from flowlite.methods.base import Method


def finetune(method: "Method", train_steps: int, lr: float = 1e-3, weight_decay: float = 0.0,
             grad_clip: float | None = 1.0, callback: Callable[[int], dict] | None = None,
             callback_every: int = 0, ema_decay: float | None = None, lr_schedule: str = "constant",
             **train_kwargs) -> TrainResult:
    """Adam(W) on ``method.parameter_groups()``, then ``train(method, method.loss, …)``.

    ``lr_schedule``: ``"constant"`` or ``"cosine"`` (decay to 0 over ``train_steps``: the regression targets of
    Adjoint Matching are heavy-tailed, and a decaying step averages their noise out, theory §11.1).
    With ``ema_decay`` the weights are averaged; callbacks see the average, and the model holds the averaged
    weights when this returns.
    """
    optimizer = torch.optim.AdamW(method.parameter_groups(), lr=lr, weight_decay=weight_decay)
    if lr_schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(train_steps, 1))
    elif lr_schedule == "constant":
        scheduler = None
    else:
        raise ValueError(f"unknown lr_schedule {lr_schedule!r}; accepted: constant, cosine")
    ema = EMA(method, ema_decay) if ema_decay else None
    result = train(method, method.loss, optimizer, train_steps, scheduler=scheduler, grad_clip=grad_clip,
                   callback=callback, callback_every=callback_every, desc=method.name, ema=ema, **train_kwargs)
    if ema is not None:
        ema.copy_to_model()
    return result
