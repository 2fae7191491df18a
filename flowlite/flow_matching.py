"""Conditional flow matching on the linear path, and fitting a base model to a mixture (spec §1.1).

Loss: E_{t ~ U[0,1], x0 ~ N(0,I), x1 ~ data} ‖v(t x1 + (1 - t) x0, t) - (x1 - x0)‖².
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from flowlite.gmm import GaussianMixture
from flowlite.nets import MLPVelocity
from flowlite.paths import conditional_velocity, interpolate
from flowlite.train import TrainResult, train


def flow_matching_loss(velocity: Callable, x1: Tensor, x0: Tensor | None = None, t: Tensor | None = None,
                       weights: Tensor | None = None, cond=None) -> Tensor:
    """Mean (optionally per-sample weighted) squared error of v(x_t, t) against x1 - x0."""
    x0 = torch.randn_like(x1) if x0 is None else x0
    t = torch.rand(x1.shape[0], dtype=x1.dtype, device=x1.device) if t is None else t
    err = (velocity(interpolate(x0, x1, t), t, cond) - conditional_velocity(x0, x1)) ** 2
    per_sample = err.reshape(err.shape[0], -1).sum(-1)
    return per_sample.mean() if weights is None else (weights * per_sample).sum() / weights.sum()


def train_base(mixture: GaussianMixture, steps: int = 4000, batch_size: int = 2048, max_lr: float = 2e-3,
               net: MLPVelocity | None = None, seed: int = 0, run_dir: str | Path | None = None,
               progress: bool = True, **train_kwargs) -> tuple[MLPVelocity, TrainResult]:
    """Fit an MLP velocity to a mixture by flow matching (Adam, one-cycle schedule to ``max_lr``).

    Defaults follow spec §10.5: 4 layers of width 256, SiLU, sinusoidal time features, batch 2048.
    """
    torch.manual_seed(seed)
    net = net or MLPVelocity(mixture.dim, width=256, depth=4)
    opt = torch.optim.Adam(net.parameters(), lr=max_lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=max_lr, total_steps=max(steps, 1))
    data = mixture.to(torch.get_default_dtype())

    def loss_fn(step: int) -> Tensor:
        return flow_matching_loss(net, data.sample(batch_size))

    result = train(net, loss_fn, opt, steps, scheduler=sched, run_dir=run_dir, progress=progress,
                   desc="base", **train_kwargs)
    return net, result
