"""Sharding the trained module with torch's FSDP2 (``torch.distributed.fsdp.fully_shard``) instead of wrapping it in
DistributedDataParallel, and the one place where the training loop must see whole tensors instead of this rank's shard
(theory §12.6).

:func:`shard` makes every submodule whose class is named in ``units`` one FSDP unit (an SD3 ``JointTransformerBlock``:
the units ``configs/fsdp.yaml`` names) and each unit's owner (the transformer: embedders, final norm and projection)
a root unit; a value network or critic (a module whose parameters all train) is a root of its own, so its gradients
are averaged too. Each rank then holds 1/G of every one of their parameters as a ``DTensor``; a unit's forward
all-gathers it and frees it after the pass, and the backward reduce-scatters the gradients as their mean over the
ranks, as DDP's all-reduce would. Frozen modules outside the roots (VAE, reward model) stay whole on every rank.

Three seams, found by rehearsing it (``tests/core/test_fsdp_rehearsal.py``, two CPU processes with gloo):

* the roots are the modules the methods call, resharded after every forward, not one root around the whole loss: a
  loss runs several forward and backward passes (the lean adjoint's VJPs with adapters off, then the regression), and
  a root whose forward spans them is resharded by the first backward while the next pass still needs it;
* ``fully_shard`` refuses a 0-d parameter (CLIP's ``logit_scale``): one more reason to leave the reward whole;
* the parameters are new objects after sharding, so the optimizer's groups, and any state it already holds (a resumed
  run), are moved onto them.

peft's switching of ``requires_grad`` when the adapters are disabled for the base passes works unchanged under FSDP2
(each parameter stays its own tensor, unlike FSDP1's flat parameters). Evaluation needs no change but to run on every
rank: each unit gathers itself in its own forward.

:func:`gathered`, on every rank together (it all-gathers; one rank alone would wait forever), makes the trainable
parameters and the optimizer's state whole, so the main process writes a checkpoint or a LoRA file with the same code
as an unsharded run (the frozen base is never gathered). Without sharding it is a no-op.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

import torch
from torch import nn


def _dtensor():
    from torch.distributed.tensor import DTensor

    return DTensor


def is_sharded(module: nn.Module) -> bool:
    """True when ``module`` (or a submodule) was sharded with ``fully_shard``."""
    from torch.distributed.fsdp import FSDPModule

    return any(isinstance(m, FSDPModule) for m in module.modules())


def _roots(module: nn.Module, units: Sequence[str]) -> tuple[list[nn.Module], list[nn.Module]]:
    """The units; then the roots: each unit's owner (its nearest ancestor that is not a ModuleList, e.g. the
    transformer), and, outside them, each top-most module whose parameters all train (a value network)."""
    named = dict(module.named_modules())
    units_found = [m for m in named.values() if type(m).__name__ in set(units)]
    if units and not units_found:
        raise ValueError(f"no submodule of class {', '.join(units)} to shard")
    roots: dict[str, nn.Module] = {}
    for name, m in named.items():
        if type(m).__name__ in set(units):
            path = name.rpartition(".")[0]
            while isinstance(named[path], (nn.ModuleList, nn.ModuleDict, nn.Sequential)):
                path = path.rpartition(".")[0]
            roots[path] = named[path]

    def covered(name: str) -> bool:
        return any(name == r or name.startswith(r + ".") or not r for r in roots)

    for name, m in named.items():
        params = list(m.parameters())
        if name and params and all(p.requires_grad for p in params) and not covered(name):
            roots[name] = m
    for name, p in module.named_parameters():
        if p.requires_grad and not covered(name.rpartition(".")[0]):
            raise ValueError(f"trainable parameter {name} sits beside frozen ones outside any shardable module")
    return units_found, list(roots.values())


def shard(module: nn.Module, units: Sequence[str], optimizer: torch.optim.Optimizer | None = None) -> nn.Module:
    """``fully_shard`` each submodule whose class name is in ``units``, then the roots (:func:`_roots`), each
    resharded after every forward (a method runs several forward and backward passes per loss: the lean adjoint's
    VJPs); the optimizer's parameters (and state) are moved onto the sharded parameters. Frozen modules outside the
    roots (VAE, reward) stay whole on every rank. Returns ``module`` (sharded in place)."""
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import distribute_tensor

    names = {id(p): n for n, p in module.named_parameters()}
    units_found, roots = _roots(module, units)
    for unit in units_found:
        fully_shard(unit)
    for root in roots:
        fully_shard(root, reshard_after_forward=True)
    if optimizer is not None:
        new = dict(module.named_parameters())
        for group in optimizer.param_groups:
            group["params"] = [new[names[id(p)]] for p in group["params"]]
        state = optimizer.state
        for old in list(state):
            p = new[names[id(old)]]
            state[p] = {k: distribute_tensor(v, p.device_mesh, p.placements)
                        if torch.is_tensor(v) and v.shape == p.shape and v.dim() else v
                        for k, v in state.pop(old).items()}
    return module


def _owner(module: nn.Module, name: str) -> tuple[nn.Module, str]:
    path, _, leaf = name.rpartition(".")
    return (module.get_submodule(path) if path else module), leaf


@contextmanager
def gathered(module: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> Iterator[None]:
    """Inside, ``module``'s trainable parameters and the optimizer's state tensors are whole on every rank (each
    all-gathered from its shards), so ``module.state_dict()``, ``optimizer.state_dict()`` and a LoRA file read them
    as an unsharded run would; the shards are put back on exit. Call it on every rank. A no-op without sharding."""
    DTensor = _dtensor()
    swapped: list[tuple[nn.Module, str, nn.Parameter]] = []
    states: list[tuple[dict, str, object]] = []
    if is_sharded(module):
        for name, p in list(module.named_parameters()):
            if p.requires_grad and isinstance(p, DTensor):
                owner, leaf = _owner(module, name)
                swapped.append((owner, leaf, p))
                owner._parameters[leaf] = nn.Parameter(p.detach().full_tensor(), requires_grad=True)
        for per_param in (optimizer.state.values() if optimizer is not None else []):
            for key, value in list(per_param.items()):
                if isinstance(value, DTensor):
                    states.append((per_param, key, value))
                    per_param[key] = value.full_tensor()
    try:
        yield
    finally:
        for owner, leaf, p in swapped:
            owner._parameters[leaf] = p
        for per_param, key, value in states:
            per_param[key] = value
