"""Fitting a base velocity to a Gaussian mixture by flow matching: how the shipped ``data/bases/*.safetensors`` were
made (theory §11.2)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from flowlite.losses import flow_matching_loss
from flowlite.toy.gmm import GaussianMixture
from flowlite.toy.nets import MLPVelocity
from flowlite.train import TrainResult, train


def train_base(mixture: GaussianMixture, train_steps: int = 4000, batch_size: int = 2048, max_lr: float = 2e-3,
               net: MLPVelocity | None = None, seed: int = 0, run_dir: str | Path | None = None,
               progress: bool = True, **train_kwargs) -> tuple[MLPVelocity, TrainResult]:
    """Fit an MLP velocity to a mixture by flow matching (Adam, one-cycle schedule to ``max_lr``).

    Defaults follow theory §11.2: 4 layers of width 256, SiLU, sinusoidal time features, batch 2048.
    """
    torch.manual_seed(seed)
    net = net or MLPVelocity(mixture.dim, width=256, depth=4)
    opt = torch.optim.Adam(net.parameters(), lr=max_lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=max_lr, total_steps=max(train_steps, 1))
    data = mixture.to(torch.get_default_dtype())

    def loss_fn(step: int) -> Tensor:
        return flow_matching_loss(net, data.sample(batch_size))

    result = train(net, loss_fn, opt, train_steps, scheduler=sched, run_dir=run_dir, progress=progress,
                   desc="base", **train_kwargs)
    return net, result
