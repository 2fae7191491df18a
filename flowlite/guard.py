"""The NaN guard of the one training loop: nothing non-finite reaches the optimizer or a checkpoint.

A finite loss does not make a finite step: a reward whose gradient is NaN at one sample (ReFL, DRaFT), or an
overflow in the backward pass, gives a finite loss and NaN gradients, and AdamW then writes NaN parameters; Adjoint
Matching uses only ∇r, so a NaN reward value never reaches its loss. The loop therefore checks, at every step,

* the loss and every scalar the method logs (the mean reward among them) before the backward pass,
* every gradient after the backward pass, DistributedDataParallel's average, unscaling and clipping, before
  ``optimizer.step()`` (with accelerate's fp16 gradient scaler on a GPU an overflow is expected now and then, and the
  scaler skips that step instead; the parameters are still checked),
* every trainable parameter after the step, before the next step and before any checkpoint is written,

and stops with :class:`~flowlite.errors.NonFiniteLossError` naming what failed, the step and the last good checkpoint.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable

import torch

from flowlite.errors import NonFiniteLossError


def first_non_finite(named: Iterable[tuple[str, torch.Tensor | None]]) -> str | None:
    """The name of the first tensor holding a NaN or an infinity (None entries are skipped), or None."""
    named = [(name, t) for name, t in named if t is not None]
    if not named:
        return None
    finite = torch.stack([torch.isfinite(t.detach()).all() for _, t in named])
    if bool(finite.all()):
        return None
    return named[int((~finite).nonzero()[0])][0]


def stop(what: str, step: int, last_checkpoint: Path | None) -> NonFiniteLossError:
    """The error the loop raises: what became non-finite, at which (1-based) step, and where to resume from."""
    where = last_checkpoint or "none written yet"
    return NonFiniteLossError(f"{what} at step {step}; training stopped before the optimizer step. "
                              f"Last good checkpoint: {where} (resume from it with a lower learning rate, or check "
                              "the reward)")


def check_scalars(values: dict, step: int, last_checkpoint: Path | None) -> None:
    """Stop on a non-finite loss or logged scalar (a method's ``reward`` log is the mean reward of its batch)."""
    for key, value in values.items():
        value = float(value)
        if not math.isfinite(value):
            raise stop(f"{key} is {value}", step, last_checkpoint)


def check_gradients(named_params: list[tuple[str, torch.nn.Parameter]], step: int,
                    last_checkpoint: Path | None) -> None:
    """Stop when any gradient holds a NaN or an infinity (called after clipping and averaging)."""
    bad = first_non_finite((name, p.grad) for name, p in named_params)
    if bad is not None:
        raise stop(f"the gradient of {bad} is not finite", step, last_checkpoint)


def check_parameters(named_params: list[tuple[str, torch.nn.Parameter]], step: int,
                     last_checkpoint: Path | None) -> None:
    """Stop when any trained parameter holds a NaN or an infinity (after the optimizer step, before a checkpoint)."""
    bad = first_non_finite(named_params)
    if bad is not None:
        raise stop(f"parameter {bad} is not finite after the optimizer step", step, last_checkpoint)


def named_parameters(module: torch.nn.Module, params: list[torch.nn.Parameter]) -> list[tuple[str, torch.nn.Parameter]]:
    """The optimizer's parameters with their names in ``module`` (``param<i>`` for one it does not hold)."""
    names = {id(p): n for n, p in module.named_parameters()}
    return [(names.get(id(p), f"param{i}"), p) for i, p in enumerate(params)]
