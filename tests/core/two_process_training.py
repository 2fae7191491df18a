"""Launched by ``test_accelerate_processes.py`` under ``accelerate launch`` (two gloo processes on CPU): the one
training loop on a tiny flow-matching problem, each rank on its own batches, then the same run interrupted after 3
updates and resumed. Writes ``rank<r>.json`` into the folder given as the first argument."""

import json
import sys
from pathlib import Path

import torch

from flowlite.parallel import make_accelerator
from flowlite.toy.nets import MLPVelocity
from flowlite.train import train

STEPS, ACCUMULATE, BATCH, LR = 6, 2, 8, 0.05


def batch(step: int, micro: int, rank: int, size: int = BATCH) -> tuple[torch.Tensor, ...]:
    """Data, noise and times of one micro-batch: a function of (step, micro-batch, rank) only."""
    g = torch.Generator().manual_seed(10_000 * step + 100 * micro + rank)
    x1 = torch.randn(size, 2, generator=g, dtype=torch.float64) * 0.3 + torch.tensor([1.0, -0.5], dtype=torch.float64)
    return x1, torch.randn(size, 2, generator=g, dtype=torch.float64), torch.rand(size, 1, generator=g, dtype=torch.float64)


def flow_matching(net, x1, x0, t) -> torch.Tensor:
    """E ||v(x_t, t) - (x1 - x0)||², x_t = t x1 + (1 - t) x0 (theory §2)."""
    return (net(t * x1 + (1 - t) * x0, t.squeeze(1)) - (x1 - x0)).pow(2).sum(1).mean()


def model_and_optimizer():
    torch.manual_seed(0)
    net = MLPVelocity(2, width=16, depth=2).double()
    optimizer = torch.optim.Adam(net.parameters(), lr=LR)
    return net, optimizer, torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=LR, total_steps=STEPS)


def run(folder: Path, steps: int, resume: bool) -> tuple[torch.nn.Module, list]:
    net, optimizer, scheduler = model_and_optimizer()
    accelerator = make_accelerator(ACCUMULATE, run_dir=folder)
    rank, calls, local = accelerator.process_index, {"n": 0}, []

    def loss_fn(step: int):
        micro = calls["n"] % ACCUMULATE
        calls["n"] += 1
        loss = flow_matching(net, *batch(step, micro, rank))
        mean = accelerator.reduce(loss.detach().clone(), reduction="mean")
        local.append(float(loss.detach()))
        return loss + (mean - loss.detach()), {}  # the value is the rank mean, the gradient this rank's own

    train(net, loss_fn, optimizer, steps, scheduler=scheduler, run_dir=folder, checkpoint_every=3, resume=resume,
          grad_clip=1.0, accumulate=ACCUMULATE, progress=False, accelerator=accelerator, log_every=1)
    return net, local


def flat(net) -> list[float]:
    return torch.cat([p.detach().reshape(-1) for p in net.parameters()]).tolist()


if __name__ == "__main__":
    out = Path(sys.argv[1])
    whole, local = run(out / "whole", STEPS, resume=False)
    run(out / "resumed", 3, resume=False)
    resumed, _ = run(out / "resumed", STEPS, resume=True)
    rank = torch.distributed.get_rank()
    (out / f"rank{rank}.json").write_text(json.dumps({"whole": flat(whole), "resumed": flat(resumed), "local": local,
                                                      "world": torch.distributed.get_world_size()}))
