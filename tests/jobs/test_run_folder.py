"""Run folders that cannot be mixed: the lock, the resume check, the fallback to a checkpoint that loads, and kill -9
at fixed moments followed by --resume giving the same weights and log as a run never interrupted."""

import csv
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from flowlite.checkpoint import list_checkpoints
from flowlite.errors import FlowliteError
from flowlite.jobs.run_lock import LOCK_FILE, RunLock

ROOT = Path(__file__).resolve().parents[2]
SMALL = ("finetune", "--problem", "weak", "--method", "adjoint-matching", "--batch-size", "16", "--solver-steps", "5",
         "--quiet")


def weights(out):
    last = list_checkpoints(Path(out) / "checkpoints")[-1]
    return load_file(str(last / "model.safetensors"))


def csv_rows(out):
    with (Path(out) / "metrics.csv").open() as f:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]


def one_error_line(out):
    lines = out.stderr.strip().splitlines()
    return out.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in out.stderr


def test_a_second_run_into_a_locked_folder_is_refused_and_a_dead_owners_lock_is_taken_over(tmp_path):
    folder = tmp_path / "run"
    with RunLock(folder):
        assert (folder / LOCK_FILE).read_text().split()[0] == str(os.getpid())
        with pytest.raises(FlowliteError, match=r"in use by process \d+"):
            RunLock(folder).acquire()
    assert not folder.exists()  # the lock created the folder, nothing else was written: both are gone
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    folder.mkdir()
    (folder / LOCK_FILE).write_text(f"{dead.pid} {os.uname().nodename}\n")
    said = []
    with RunLock(folder, say=said.append):
        assert (folder / LOCK_FILE).read_text().split()[0] == str(os.getpid())
    assert said and "no longer runs" in said[0]
    assert folder.is_dir() and not (folder / LOCK_FILE).exists()


def start_finetune(out, *extra):
    """A finetune run in its own process (what a second terminal, or a kill -9, sees)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "flowlite", *SMALL, "--out", str(out), *extra], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for(path, seconds=300):
    for _ in range(seconds * 20):
        if path.exists():
            return
        time.sleep(0.05)
    raise AssertionError(f"{path} never appeared")


def test_two_concurrent_runs_into_one_folder_the_second_is_refused_the_first_completes(run, tmp_path):
    out = tmp_path / "run"
    first = start_finetune(out, "--train-steps", "60")
    wait_for(out / LOCK_FILE)
    second = run(*SMALL, "--train-steps", "4", "--out", str(out))
    assert one_error_line(second) and "in use by process" in second.stderr, second.stderr
    assert first.wait(timeout=600) == 0, first.stderr.read()[-2000:]
    assert [p.name for p in list_checkpoints(out / "checkpoints")][-1] == "step_0000060"
    assert len(csv_rows(out)) == 60 and (out / "metrics.json").is_file() and not (out / LOCK_FILE).exists()


def test_resume_checks_what_it_resumes(run, tmp_path):
    out = tmp_path / "run"
    assert run(*SMALL, "--train-steps", "4", "--out", str(out)).returncode == 0
    config = (out / "config.json").read_text()
    cases = {("--beta", "2.0", "--resume"): "beta 0.2 -> 2.0",
             ("--batch-size", "8", "--resume"): "batch_size",
             ("--seed", "3", "--lr", "0.01", "--resume"): "seed 0 -> 3, train_options",
             ("--resume", "--train-steps", "2"): "newest checkpoint is at step 4",
             ("--train-steps", "4"): "already holds a run"}
    for extra, expected in cases.items():
        done = run(*SMALL, "--out", str(out), *extra)
        assert one_error_line(done) and expected in done.stderr, (extra, done.stderr)
        assert (out / "config.json").read_text() == config  # written only after the check
    done = run(*[a for a in SMALL if a != "adjoint-matching" and a != "--method"], "--method", "rwr", "--out",
               str(out), "--resume")
    assert one_error_line(done) and "method 'adjoint-matching' -> 'rwr'" in done.stderr
    assert run(*SMALL, "--train-steps", "2", "--out", str(out), "--overwrite").returncode == 0
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == ["step_0000001", "step_0000002"]


def test_resume_falls_back_to_the_newest_checkpoint_that_loads(run, tmp_path):
    straight, out = tmp_path / "straight", tmp_path / "run"
    assert run(*SMALL, "--train-steps", "8", "--out", str(straight)).returncode == 0
    assert run(*SMALL, "--train-steps", "8", "--out", str(out)).returncode == 0  # checkpoints 6 and 8 kept
    newest = list_checkpoints(out / "checkpoints")[-1]
    (newest / "training_state.pt").write_bytes(b"truncated")
    (out / "checkpoints" / ".tmp-step_0000009-99999").mkdir()  # a killed writer's leftover
    done = run(*SMALL, "--train-steps", "8", "--out", str(out), "--resume")
    assert done.returncode == 0, done.stderr
    assert "skipped step_0000008" in done.stderr and "broken-step_0000008" in done.stderr
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".tmp")]
    a, b = weights(straight), weights(out)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert csv_rows(straight) == csv_rows(out)


def test_kill_minus_nine_at_fixed_moments_then_resume_is_bit_identical(run, tmp_path):
    """Killed twice at moments drawn from a fixed seed (each resumed run killed again), then resumed until done: the
    same final weights and CSV (wall-clock seconds aside) as a run never interrupted, no temporary folder or lock
    left. Wherever a kill lands (before the first checkpoint, mid-write, after the end) the rules are the same."""
    moments = [random.Random(17).uniform(0.2, 3.0) for _ in range(2)]
    straight, out = tmp_path / "straight", tmp_path / "run"
    assert run(*SMALL, "--train-steps", "40", "--out", str(straight)).returncode == 0
    for moment in moments:
        victim = start_finetune(out, "--train-steps", "40", *continue_flag(out))
        wait_for(out / LOCK_FILE)
        time.sleep(moment)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
    done = run(*SMALL, "--train-steps", "40", "--out", str(out), *continue_flag(out))
    assert done.returncode == 0, done.stderr
    a, b = weights(straight), weights(out)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert csv_rows(straight) == csv_rows(out)
    leftovers = [p for d in (out, out / "checkpoints") for p in d.iterdir() if p.name.startswith(".tmp")]
    assert not leftovers and not (out / LOCK_FILE).exists()


def continue_flag(out) -> list[str]:
    """--resume when a checkpoint exists, --overwrite when only a config was written, nothing for a bare folder."""
    if list_checkpoints(out / "checkpoints"):
        return ["--resume"]
    return ["--overwrite"] if (out / "config.json").exists() or (out / "checkpoints").exists() else []


def test_the_image_job_shares_the_lock_and_the_resume_check(run, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("cat\ndog\n")
    out = tmp_path / "run"
    sd3 = ["sd3", "--tiny", "--method", "draft", "--reward", "aesthetic", "--prompts", str(prompts), "--eval-prompts",
           str(prompts), "--output", str(out), "--quiet"]
    with RunLock(out):
        done = run(*sd3)
        assert one_error_line(done) and "--output" in done.stderr and "in use by process" in done.stderr
        assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]
    out.mkdir(exist_ok=True)
    (out / "config.json").write_text('{"tiny": true, "method": "draft", "seed": 0')  # truncated by a full disk
    (out / "checkpoints" / "step_0000002").mkdir(parents=True)
    for name in ("model.safetensors", "training_state.pt"):
        (out / "checkpoints" / "step_0000002" / name).write_bytes(b"")
    done = run(*sd3, "--resume", "latest")
    assert one_error_line(done) and "config.json is damaged" in done.stderr
    done = run(*sd3)
    assert one_error_line(done) and "already holds a run" in done.stderr


def test_the_image_job_from_python_takes_the_same_lock(tmp_path):
    """``run_image_job`` (what notebook 09 calls) refuses a folder another process writes, before building anything."""
    from flowlite.jobs.image_run import run_image_job
    from flowlite.jobs.image_settings import resolve_config

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("cat\n")
    out = tmp_path / "run"
    config = resolve_config({"tiny": True, "method": "draft", "reward": "aesthetic", "prompts": str(prompts),
                             "output": str(out), "quiet": True})
    with RunLock(out):
        with pytest.raises(FlowliteError, match=r"--output .* in use by process"):
            run_image_job(config)
        assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]


def die_in_checkpoint(nth: int, *argv):
    """Run the command line in its own process, killed -9 half-way through writing its nth checkpoint's weights."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, str(Path(__file__).with_name("die_in_checkpoint.py")), str(nth), *argv],
                          env=env, capture_output=True, text=True, timeout=600)


def test_kill_minus_nine_inside_a_checkpoint_write_then_resume_is_bit_identical(run, tmp_path):
    """The kill lands inside the atomic write of the 2nd checkpoint (weights file half written): the folder keeps the
    1st checkpoint, resume continues from it and ends where an uninterrupted run ends, with no temporary folder."""
    straight, out = tmp_path / "straight", tmp_path / "run"
    assert run(*SMALL, "--train-steps", "12", "--out", str(straight)).returncode == 0
    killed = die_in_checkpoint(2, *SMALL, "--train-steps", "12", "--out", str(out))
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == ["step_0000003"]
    assert [p.name for p in (out / "checkpoints").iterdir() if p.name.startswith(".tmp-step_0000006")]
    done = run(*SMALL, "--train-steps", "12", "--out", str(out), "--resume")
    assert done.returncode == 0, done.stderr
    a, b = weights(straight), weights(out)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert csv_rows(straight) == csv_rows(out)
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".tmp")]


def test_the_image_job_killed_inside_a_checkpoint_write_resumes_to_the_same_lora(run, tmp_path):
    """``sd3 --tiny`` killed -9 inside its 2nd checkpoint write, then ``--resume latest``: the LoRA file equals an
    uninterrupted run's, tensor for tensor."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("cat\ndog\n")
    sd3 = ["sd3", "--tiny", "--method", "adjoint-matching", "--reward", "aesthetic", "--prompts", str(prompts),
           "--eval-prompts", str(prompts), "--solver-steps", "2", "--eval-steps", "2", "--batch-size", "2",
           "--train-steps", "4", "--checkpoint-every", "1", "--eval-every", "4", "--quiet"]
    straight, out = tmp_path / "straight", tmp_path / "run"
    assert run(*sd3, "--output", str(straight)).returncode == 0
    killed = die_in_checkpoint(2, *sd3, "--output", str(out))
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == ["step_0000001"]
    done = run(*sd3, "--output", str(out), "--resume", "latest")
    assert done.returncode == 0, done.stderr
    a, b = (load_file(str(folder / "lora" / "pytorch_lora_weights.safetensors")) for folder in (straight, out))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert csv_rows(straight) == csv_rows(out)
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".tmp")]
