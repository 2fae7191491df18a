"""The one loop's use of accelerate in a single process: trackers see what ``metrics.csv`` holds, and a run leaves
none of accelerate's process-wide state behind (a notebook trains many times in one kernel)."""

import csv

import pytest
import torch
from accelerate.state import AcceleratorState, GradientState
from accelerate.tracking import GeneralTracker

from flowlite.parallel import make_accelerator
from flowlite.train import train


class Recording(GeneralTracker):
    """A tracker that keeps what accelerate hands it."""

    name = "recording"
    requires_logging_directory = False

    def __init__(self):
        super().__init__()
        self.rows, self.finished = [], False

    @property
    def tracker(self):
        return self

    def store_init_configuration(self, values: dict) -> None:
        self.config = values

    def log(self, values: dict, step: int | None = None, **kwargs) -> None:
        self.rows.append({"step": step, **values})

    def finish(self) -> None:
        self.finished = True


def small_problem(seed: int = 0):
    torch.manual_seed(seed)
    net = torch.nn.Linear(3, 1)
    x, y = torch.randn(32, 3), torch.randn(32, 1)
    return net, (lambda step: (net(x) - y).pow(2).mean()), torch.optim.SGD(net.parameters(), lr=0.1)


def test_trackers_receive_every_row_of_metrics_csv(tmp_path):
    net, loss_fn, optimizer = small_problem()
    recording = Recording()
    accelerator = make_accelerator(run_dir=tmp_path, log_with=[recording])
    train(net, loss_fn, optimizer, 5, run_dir=tmp_path, grad_clip=1.0, progress=False, accelerator=accelerator)
    with (tmp_path / "metrics.csv").open() as f:
        written = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]
    assert [r["step"] for r in recording.rows] == [1, 2, 3, 4, 5] and recording.finished
    assert [{k: pytest.approx(float(v), rel=1e-12) for k, v in row.items()} for row in recording.rows] == written


def test_a_run_leaves_no_accelerate_state_and_another_precision_may_follow(tmp_path):
    net, loss_fn, optimizer = small_problem()
    train(net, loss_fn, optimizer, 2, progress=False, accumulate=2)
    assert not AcceleratorState._shared_state and not GradientState._shared_state
    # without the reset, a bf16 accelerator after a default one is refused ("AcceleratorState has already been
    # initialized and cannot be changed")
    bf16 = make_accelerator(mixed_precision="bf16", cpu=True)
    assert bf16.mixed_precision == "bf16" and bf16.gradient_accumulation_steps == 1
    net, loss_fn, optimizer = small_problem()
    twice = train(net, loss_fn, optimizer, 2, progress=False)
    net, loss_fn, optimizer = small_problem()
    fresh = train(net, loss_fn, optimizer, 2, progress=False)
    assert twice.column("loss") == fresh.column("loss")


def test_accumulation_divides_each_micro_batch_like_one_big_batch():
    torch.manual_seed(0)
    x, y = torch.randn(8, 3), torch.randn(8, 1)
    calls = {"n": 0}

    def halves(net):
        def loss_fn(step):
            part = calls["n"] % 2
            calls["n"] += 1
            return (net(x[4 * part:4 * part + 4]) - y[4 * part:4 * part + 4]).pow(2).mean()
        return loss_fn

    torch.manual_seed(1)
    a = torch.nn.Linear(3, 1)
    b = torch.nn.Linear(3, 1)
    b.load_state_dict(a.state_dict())
    train(a, halves(a), torch.optim.SGD(a.parameters(), lr=0.1), 3, accumulate=2, progress=False)
    train(b, lambda step: (b(x) - y).pow(2).mean(), torch.optim.SGD(b.parameters(), lr=0.1), 3, progress=False)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
