"""The one training loop: exact resume, atomic checkpoints, the non-finite-loss stop, logging."""

import csv

import pytest
import torch

from flowlite.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint, save_checkpoint
from flowlite.errors import NonFiniteLossError
from flowlite.losses import flow_matching_loss
from flowlite.toy.gmm import GaussianMixture
from flowlite.toy.nets import MLPVelocity
from flowlite.train import train

MIX = GaussianMixture([0.4, 0.6], [[-2.0, 0.0], [2.0, 1.0]], [[[0.3, 0.0], [0.0, 0.3]]] * 2)


def _setup(seed=0):
    torch.manual_seed(seed)
    net = MLPVelocity(2, width=32, depth=3)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.7)

    def loss_fn(step):  # randomness from the global RNG, as every method does
        return flow_matching_loss(net, MIX.sample(64)), {"batch_mean": 0.0}

    return net, opt, sched, loss_fn


def test_resume_then_continue_equals_an_uninterrupted_run(tmp_path):
    net_a, opt_a, sched_a, loss_a = _setup()
    full = train(net_a, loss_a, opt_a, 12, scheduler=sched_a, progress=False)

    net_b, opt_b, sched_b, loss_b = _setup()
    train(net_b, loss_b, opt_b, 7, scheduler=sched_b, run_dir=tmp_path, checkpoint_every=7, progress=False)
    torch.manual_seed(999)  # the interrupted process's RNG is gone; resume must restore it
    net_c, opt_c, sched_c, loss_c = _setup(seed=5)  # different init: resume must overwrite it
    resumed = train(net_c, loss_c, opt_c, 12, scheduler=sched_c, run_dir=tmp_path, checkpoint_every=100,
                    resume=True, progress=False)
    for (name, a), c in zip(net_a.state_dict().items(), net_c.state_dict().values()):
        assert torch.equal(a, c), name
    assert resumed.step == 12
    assert [r["loss"] for r in resumed.history] == pytest.approx([r["loss"] for r in full.history])
    assert sched_c.get_last_lr() == sched_a.get_last_lr()


def test_checkpoint_is_atomic_and_rotated(tmp_path, monkeypatch):
    net, opt, sched, _ = _setup()
    first = save_checkpoint(tmp_path, net, opt, sched, step=5)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError):
        save_checkpoint(tmp_path, net, opt, sched, step=10)
    monkeypatch.undo()
    assert latest_checkpoint(tmp_path) == first  # the half-written step 10 is not a checkpoint
    load_checkpoint(first, net, opt, sched)
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k])
    for step in (10, 15, 20):
        save_checkpoint(tmp_path, net, opt, sched, step=step, keep_last=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_0000015", "step_0000020"]


def test_checkpoint_holds_only_trainable_state_and_loads_without_pickle(tmp_path):
    from safetensors.torch import load_file

    from flowlite.toy.flow import ExactMixtureVelocity, ToyFlow

    flow = ToyFlow(MLPVelocity(2, width=16, depth=2))  # frozen MLP base, trainable residual
    path = save_checkpoint(tmp_path, flow, step=1)
    keys = set(load_file(str(path / "model.safetensors")))
    assert keys and all(k.startswith("residual.") for k in keys)
    state = torch.load(path / "training_state.pt", weights_only=True)
    assert state["step"] == 1
    ToyFlow(ExactMixtureVelocity(MIX))  # the exact base has no weights at all


def test_non_finite_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(tmp_path):
    net, opt, sched, loss_fn = _setup()

    def poisoned(step):
        loss, logs = loss_fn(step)
        return (loss * float("nan") if step == 6 else loss), logs

    with pytest.raises(NonFiniteLossError, match=r"nan at step 7.*step_0000005"):
        train(net, poisoned, opt, 20, scheduler=sched, run_dir=tmp_path, checkpoint_every=5, progress=False)
    assert latest_checkpoint(tmp_path / "checkpoints").name == "step_0000005"
    with (tmp_path / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and {"step", "loss", "lr", "batch_mean", "seconds"} <= set(rows[0])


def test_callback_values_join_the_log_and_base_training_learns(tmp_path):
    net, opt, sched, loss_fn = _setup()
    result = train(net, loss_fn, opt, 60, run_dir=tmp_path, callback=lambda s: {"eval": float(s)},
                   callback_every=20, progress=False)
    assert result.column("eval") == [20.0, 40.0, 60.0]
    losses = result.column("loss")
    assert sum(losses[-10:]) / 10 < sum(losses[:10]) / 10


def test_resume_restores_the_weight_average_too(tmp_path):
    from flowlite.ema import EMA

    net_a, opt_a, _, loss_a = _setup()
    ema_a = EMA(net_a, 0.9)
    train(net_a, loss_a, opt_a, 10, ema=ema_a, progress=False)

    net_b, opt_b, _, loss_b = _setup()
    train(net_b, loss_b, opt_b, 6, ema=EMA(net_b, 0.9), run_dir=tmp_path, checkpoint_every=6, progress=False)
    net_c, opt_c, _, loss_c = _setup(seed=3)
    ema_c = EMA(net_c, 0.9)
    train(net_c, loss_c, opt_c, 10, ema=ema_c, run_dir=tmp_path, resume=True, progress=False)
    for a, c in zip(ema_a.shadow, ema_c.shadow):
        assert torch.equal(a, c)
    assert ema_c.updates == 10
