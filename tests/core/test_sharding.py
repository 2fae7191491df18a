"""``flowlite.sharding`` in one process (no process group): which modules become FSDP units and roots, the refusals,
and that its gather is a no-op without sharding. The sharded runs themselves are in ``test_fsdp_rehearsal.py``."""

import pytest
import torch
from torch import nn

from flowlite.sharding import _roots, gathered, is_sharded
from flowlite.train import train


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.frozen, self.lora = nn.Linear(3, 3), nn.Linear(3, 3)
        self.frozen.requires_grad_(False)


class Transformer(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed, self.blocks = nn.Linear(3, 3).requires_grad_(False), nn.ModuleList([Block(), Block()])


class Method(nn.Module):
    def __init__(self):
        super().__init__()
        self.transformer, self.value = Transformer(), nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 1))
        self.reward = nn.Linear(3, 1).requires_grad_(False)


def test_units_are_the_blocks_and_roots_their_owner_and_each_value_network():
    method = Method()
    units, roots = _roots(method, ("Block",))
    assert units == list(method.transformer.blocks)
    assert roots == [method.transformer, method.value]  # not the reward (frozen, stays whole), not the method


def test_refusals_name_the_problem():
    with pytest.raises(ValueError, match="no submodule of class Missing"):
        _roots(Method(), ("Missing",))
    method = Method()
    method.scale = nn.Parameter(torch.ones(1))  # trainable, beside the frozen reward on the method itself
    with pytest.raises(ValueError, match="trainable parameter scale"):
        _roots(method, ("Block",))


def test_gathered_is_a_no_op_without_sharding():
    method = Method()
    optimizer = torch.optim.AdamW([p for p in method.parameters() if p.requires_grad])
    before = {k: v.clone() for k, v in method.state_dict().items()}
    params = list(method.parameters())
    with gathered(method, optimizer):
        assert list(method.parameters()) == params and not is_sharded(method)
    assert all(torch.equal(before[k], v) for k, v in method.state_dict().items())


def test_sharding_with_an_ema_is_refused_before_anything_runs():
    from flowlite.ema import EMA

    net = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="ema"):
        train(net, lambda step: net.weight.sum(), torch.optim.SGD(net.parameters(), lr=0.1), 1,
              ema=EMA(net), shard_units=("Linear",), progress=False)
