"""The one training loop on accelerate with two gloo processes on CPU (``accelerate launch``), against the same loop in
one process on the doubled batch: DistributedDataParallel's averaged gradient is the gradient of the mean over both
ranks' data, so the weights agree up to float64 rounding; the learning-rate schedule counts optimizer steps, not
processes; and a run interrupted and resumed under accelerate equals the uninterrupted one."""

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from flowlite.train import train

from tests.core import two_process_training as script

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def launch(module_args: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    """``accelerate launch`` of two CPU processes (gloo) on a free port; theory §12.6 says why each flag is there."""
    env = dict(os.environ, ACCELERATE_USE_CPU="true", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = str(free.getsockname()[1])
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", port,
           *module_args]
    return subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def launch_script(script: str, out: Path) -> tuple[Path, list[dict]]:
    """Launch ``script`` (beside this file) on two processes writing into ``out``; the run must succeed. Returns
    ``out`` and what each rank wrote to ``rank{r}.json``."""
    done = launch([str(HERE / script), str(out)])
    assert done.returncode == 0, done.stderr[-3000:]
    return out, [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    return launch_script("two_process_training.py", tmp_path_factory.mktemp("two"))


def one_process_on_the_doubled_batch(folder: Path):
    net, optimizer, scheduler = script.model_and_optimizer()
    calls = {"n": 0}

    def loss_fn(step: int):
        micro = calls["n"] % script.ACCUMULATE
        calls["n"] += 1
        both = [script.batch(step, micro, rank) for rank in (0, 1)]
        return script.flow_matching(net, *(torch.cat(parts) for parts in zip(*both)))

    result = train(net, loss_fn, optimizer, script.STEPS, scheduler=scheduler, run_dir=folder, grad_clip=1.0,
                   accumulate=script.ACCUMULATE, progress=False, log_every=1)
    return torch.tensor(script.flat(net), dtype=torch.float64), result


def metrics(folder: Path) -> list[dict]:
    with (folder / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


def test_two_ranks_see_different_data_and_the_same_loss_and_end_with_identical_weights(two_ranks):
    out, ranks = two_ranks
    assert ranks[0]["world"] == ranks[1]["world"] == 2
    assert ranks[0]["local"] != ranks[1]["local"], "both ranks drew the same data: not data-parallel"
    assert ranks[0]["whole"] == ranks[1]["whole"]  # bit for bit: DDP gives every rank the same averaged gradient
    logged = [float(row["loss"]) for row in metrics(out / "whole")]
    local = torch.tensor([r["local"] for r in ranks], dtype=torch.float64).view(2, script.STEPS, script.ACCUMULATE)
    assert logged == pytest.approx(local.mean(dim=(0, 2)).tolist(), rel=1e-12)  # the rank mean, logged by rank 0


def test_two_processes_equal_one_process_on_the_doubled_batch(two_ranks, tmp_path):
    out, ranks = two_ranks
    reference, result = one_process_on_the_doubled_batch(tmp_path / "one")
    two = torch.tensor(ranks[0]["whole"], dtype=torch.float64)
    assert (two - reference).abs().max().item() < 1e-12
    assert (two - torch.tensor(script.flat(script.model_and_optimizer()[0]))).abs().max().item() > 1e-3  # it trained
    rows = metrics(out / "whole")
    # the same learning rate at every update: the scheduler steps once per optimizer step, not once per process
    assert [float(r["lr"]) for r in rows] == result.column("lr")
    assert [float(r["loss"]) for r in rows] == pytest.approx(result.column("loss"), rel=1e-12)
    assert [float(r["grad_norm"]) for r in rows] == pytest.approx(result.column("grad_norm"), rel=1e-9)


def test_resume_under_accelerate_equals_the_uninterrupted_run(two_ranks):
    out, ranks = two_ranks
    assert ranks[0]["resumed"] == ranks[0]["whole"] and ranks[1]["resumed"] == ranks[1]["whole"]
    assert (out / "resumed" / "metrics.csv").read_text().splitlines()[0] == \
        (out / "whole" / "metrics.csv").read_text().splitlines()[0]
    whole, resumed = metrics(out / "whole"), metrics(out / "resumed")
    assert [(r["step"], r["loss"], r["lr"]) for r in resumed] == [(r["step"], r["loss"], r["lr"]) for r in whole]
