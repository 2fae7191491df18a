"""`python -m flowlite sd3` and `sd3-sample` on the tiny random SD3 (16x16 images, 2-step grids, batch 2), called
in-process through ``flowlite.cli.main``; the two-process run goes through ``accelerate launch`` on CPU."""

import csv
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from flowlite.checkpoint import list_checkpoints
from flowlite.jobs.cli import main
from flowlite.methods import METHODS

ROOT = Path(__file__).resolve().parents[2]
LORA_FILE = "pytorch_lora_weights.safetensors"


@pytest.fixture(scope="module")
def prompts(tmp_path_factory):
    folder = tmp_path_factory.mktemp("prompts")
    (folder / "train.txt").write_text("# animals\ncat\n\ndog\nhorse\n")
    (folder / "eval.txt").write_text("snail\nlobster\n")
    (folder / "empty.txt").write_text("# only a comment\n\n")
    return folder


def sd3(prompts, out, *extra, method="draft", reward="aesthetic"):
    argv = ["sd3", "--tiny", "--method", method, "--reward", reward, "--prompts", str(prompts / "train.txt"),
            "--eval-prompts", str(prompts / "eval.txt"), "--output", str(out), "--solver-steps", "2",
            "--eval-steps", "2", "--batch-size", "2", "--quiet", *extra]
    return main(argv)


def lora(folder):
    return load_file(str(Path(folder) / LORA_FILE))


def png(path):
    return np.asarray(Image.open(path)).astype(int)


@pytest.mark.parametrize("method", list(METHODS))
def test_tiny_run_writes_lora_config_metrics_and_eval_grid(prompts, tmp_path, method):
    out = tmp_path / "run"
    assert sd3(prompts, out, "--train-steps", "2", "--eval-every", "2", "--checkpoint-every", "2", method=method) == 0

    config = json.loads((out / "config.json").read_text())
    assert config["method"] == method and config["tiny"] and config["train_steps"] == 2 and config["solver_steps"] == 2
    assert config["recipe_source"] and "torch" in config["versions"]
    assert config["reproduce"].startswith("python -m flowlite sd3 --tiny --method " + method)
    weights = lora(out / "lora")
    assert weights and all(k.startswith("transformer.") and ".lora_" in k for k in weights)
    assert any(k.endswith("lora_B.weight") and v.abs().sum() > 0 for k, v in weights.items()), "LoRA never moved"
    rows = (out / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    assert len(rows) == 3 and {"loss", "eval_reward", "eval_diversity", "eval_prior_distance"} <= set(header)
    last = dict(zip(header, rows[-1].split(",")))
    assert np.isfinite(float(last["loss"])) and float(last["eval_prior_distance"]) >= 0
    grid = png(out / "eval" / "step_0000002.png")
    assert grid.shape == (2 * 16, 2 * 16, 3)  # 2 held-out prompts x 2 seeds of 16x16 images
    assert np.array_equal(grid[:16, 16:], png(out / "eval" / "step_0000002" / "prompt00_seed1.png"))


def test_resume_then_continue_equals_an_uninterrupted_run(prompts, tmp_path):
    common = ("--checkpoint-every", "2", "--eval-every", "2", "--lr", "0.01", "--grad-accum", "2")
    assert sd3(prompts, tmp_path / "straight", "--train-steps", "4", *common, method="adjoint-matching") == 0
    assert sd3(prompts, tmp_path / "resumed", "--train-steps", "2", *common, method="adjoint-matching") == 0
    assert sd3(prompts, tmp_path / "resumed", "--train-steps", "4", "--resume", "latest", *common,
               method="adjoint-matching") == 0

    a, b = lora(tmp_path / "straight" / "lora"), lora(tmp_path / "resumed" / "lora")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    losses = [[row.split(",")[1] for row in (tmp_path / run / "metrics.csv").read_text().splitlines()[1:]]
              for run in ("straight", "resumed")]
    assert len(losses[0]) == 4 and losses[0] == losses[1]


def test_rotation_keeps_keep_last_and_a_failed_checkpoint_leaves_the_previous_intact(prompts, tmp_path, monkeypatch):
    out = tmp_path / "run"
    assert sd3(prompts, out, "--train-steps", "3", "--checkpoint-every", "1", "--keep-last", "2", "--eval-every", "3") == 0
    kept = list_checkpoints(out / "checkpoints")
    assert [p.name for p in kept] == ["step_0000002", "step_0000003"]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_0000002", "step_0000003"]
    for folder in kept:
        assert {"model.safetensors", "training_state.pt"} <= {p.name for p in folder.iterdir()}
        assert (folder / "lora" / LORA_FILE).is_file()

    import flowlite.jobs.image_job as image_job

    real = image_job.save_lora
    calls = []

    def crash_on_second(flow, directory, **kwargs):  # the disk fills up while the step-5 checkpoint is being written
        calls.append(directory)
        if len(calls) == 2:
            raise OSError("no space left on device")
        return real(flow, directory, **kwargs)

    monkeypatch.setattr(image_job, "save_lora", crash_on_second)
    assert sd3(prompts, out, "--train-steps", "6", "--checkpoint-every", "1", "--keep-last", "2", "--eval-every", "6",
               "--resume", "latest") == 1  # one error line, not a traceback
    kept = list_checkpoints(out / "checkpoints")
    assert [p.name for p in kept] == ["step_0000003", "step_0000004"]  # step 5 never appeared, half-written
    monkeypatch.setattr(image_job, "save_lora", real)
    assert sd3(prompts, out, "--train-steps", "5", "--checkpoint-every", "1", "--keep-last", "2", "--eval-every", "5",
               "--resume", "latest") == 0
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == ["step_0000004", "step_0000005"]
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".tmp")]


def test_sd3_sample_reproduces_the_training_time_evaluation_image(prompts, tmp_path):
    out = tmp_path / "run"
    assert sd3(prompts, out, "--train-steps", "2", "--eval-every", "2", "--lr", "0.05") == 0
    samples = tmp_path / "samples"
    assert main(["sd3-sample", "--lora", str(out), "--prompt", "lobster", "--seed", "1", "--output",
                 str(samples)]) == 0
    image = png(samples / "sample00_seed1.png")
    evaluated = png(out / "eval" / "step_0000002" / "prompt01_seed1.png")  # lobster is the 2nd held-out prompt
    base = png(out / "eval" / "base" / "prompt01_seed1.png")
    assert np.abs(image - evaluated).max() <= 1
    assert np.abs(image - base).max() > 1, "the LoRA did not change the image: the comparison would prove nothing"


@pytest.mark.parametrize("case", ["missing prompts", "empty prompts", "unknown method", "unknown reward",
                                  "resume without checkpoint", "missing pretrained folder"])
def test_bad_input_gets_one_error_line_and_writes_nothing(prompts, tmp_path, capsys, case):
    out = tmp_path / "run"
    base = ["sd3", "--method", "draft", "--reward", "aesthetic", "--prompts", str(prompts / "train.txt"),
            "--output", str(out)]
    argv, expected = {"missing prompts": (["--tiny", "--prompts", str(tmp_path / "nope.txt")], "nope.txt"),
                      "empty prompts": (["--tiny", "--prompts", str(prompts / "empty.txt")], "no prompts"),
                      "unknown method": (["--tiny", "--method", "dpo"], "dpo"),
                      "unknown reward": (["--tiny", "--reward", "hps"], "hps"),
                      "resume without checkpoint": (["--tiny", "--resume", "latest"], "no checkpoint"),
                      "missing pretrained folder": (["--pretrained", str(tmp_path / "sd3")], "not found")}[case]
    assert main(base + argv) == 2  # argparse takes the last value of a repeated flag
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and expected in err[0], err
    assert not out.exists()


def test_sd3_sample_on_a_folder_that_is_not_a_run_gets_one_error_line(tmp_path, capsys):
    assert main(["sd3-sample", "--lora", str(tmp_path), "--prompt", "cat"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "config.json" in err[0]
    assert list(tmp_path.iterdir()) == []


def test_gradient_checkpointing_gives_the_same_update(prompts, tmp_path):
    for name, extra in (("plain", ()), ("checkpointed", ("--gradient-checkpointing",))):
        assert sd3(prompts, tmp_path / name, "--train-steps", "1", "--lr", "0.01", "--eval-every", "1", *extra,
                   method="adjoint-matching") == 0
    a, b = lora(tmp_path / "plain" / "lora"), lora(tmp_path / "checkpointed" / "lora")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert any(k.endswith("lora_B.weight") and a[k].abs().sum() > 0 for k in a)


def test_pretrained_folders_load_as_a_users_would(prompts, tmp_path):
    """Not --tiny: the SD3 and reward weights come from folders written with save_pretrained (as from the hub)."""
    from flowlite.rewards.image import PickScore
    from flowlite.sd3.tiny import build_tiny_sd3

    build_tiny_sd3(seed=3).save_pretrained(tmp_path / "sd3")
    PickScore.tiny(seed=4).save_pretrained(tmp_path / "pickscore")
    out = tmp_path / "run"
    small = ("--train-steps", "1", "--grad-accum", "1", "--eval-every", "1", "--eval-seeds", "2", "--checkpoint-every", "1",
             "--max-sequence-length", "32", "--mixed-precision", "no", "--rank", "4", "--guidance-scale", "1",
             "--height", "16", "--width", "16", "--lr", "0.05")
    argv = ["sd3", "--method", "refl", "--reward", "pickscore", "--prompts", str(prompts / "train.txt"),
            "--eval-prompts", str(prompts / "eval.txt"), "--pretrained", str(tmp_path / "sd3"), "--reward-pretrained",
            str(tmp_path / "pickscore"), "--output", str(out), "--solver-steps", "2", "--eval-steps", "2",
            "--batch-size", "2", "--quiet", *small]
    assert main(argv) == 0
    config = json.loads((out / "config.json").read_text())
    assert not config["tiny"] and config["pretrained"] == str(tmp_path / "sd3") and config["beta"] is None
    assert not (out / "base").exists()
    assert main(["sd3-sample", "--lora", str(out), "--prompt", "snail", "--seed", "0", "--output",
                 str(tmp_path / "snail.png")]) == 0
    assert np.abs(png(tmp_path / "snail.png") - png(out / "eval" / "step_0000001" / "prompt00_seed0.png")).max() <= 1


def test_reward_vae_decodes_for_the_training_reward_only(prompts, tmp_path):
    from diffusers import AutoencoderKL, AutoencoderTiny

    from flowlite.jobs.image_job import Processes, build_job
    from flowlite.jobs.image_settings import resolve_config

    AutoencoderTiny(encoder_block_out_channels=(8, 8), decoder_block_out_channels=(8, 8), num_encoder_blocks=(1, 1),
                    num_decoder_blocks=(1, 1), latent_channels=16, shift_factor=0.0609,
                    scaling_factor=1.5035).save_pretrained(tmp_path / "taesd")
    config = resolve_config({"method": "draft", "reward": "aesthetic", "tiny": True, "prompts": str(prompts / "train.txt"),
                             "eval_prompts": str(prompts / "eval.txt"), "reward_vae": str(tmp_path / "taesd")})
    job = build_job(config, Processes())
    assert isinstance(job.method.reward.vae, AutoencoderTiny)
    assert isinstance(job.evaluator.reward.vae, AutoencoderKL) and job.evaluator.reward.vae is job.pipe.vae
    z = torch.randn(2, 16, 8, 8)
    assert not torch.allclose(job.method.reward.decode(z), job.evaluator.reward.decode(z))
    assert sd3(prompts, tmp_path / "run", "--train-steps", "1", "--eval-every", "1", "--reward-vae", str(tmp_path / "taesd")) == 0


def test_dry_run_prints_seconds_per_step_and_peak_memory_and_writes_nothing(prompts, tmp_path, capsys):
    out = tmp_path / "run"
    assert sd3(prompts, out, "--dry-run", method="adjoint-matching") == 0
    line = capsys.readouterr().out
    assert re.search(r"then \d+\.\d+ s/step", line) and re.search(r"peak RSS \d+ MiB", line)
    assert not out.exists()


def launch_two_processes(prompts, out: Path, *extra: str) -> subprocess.CompletedProcess:
    """The tiny job (Adjoint Matching, 2 updates of 2 accumulated micro-batches) in two gloo processes."""
    env = dict(os.environ, ACCELERATE_USE_CPU="true", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    with socket.socket() as free:  # a free port for the two processes' rendezvous
        free.bind(("127.0.0.1", 0))
        port = str(free.getsockname()[1])
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", port,
           "-m", "flowlite", "sd3", "--tiny", "--method", "adjoint-matching", "--reward", "aesthetic",
           "--prompts", str(prompts / "train.txt"), "--eval-prompts", str(prompts / "eval.txt"),
           "--output", str(out), "--train-steps", "2", "--solver-steps", "2", "--eval-steps", "2", "--batch-size", "2",
           "--eval-every", "2", "--checkpoint-every", "2", "--lr", "0.01", "--grad-accum", "2", "--quiet", *extra]
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def two_processes(prompts, tmp_path_factory):
    """Data parallel (DDP) and, for the --fsdp comparison below, the same run with the transformer sharded."""
    out = tmp_path_factory.mktemp("two")
    return {kind: (out / kind, launch_two_processes(prompts, out / kind, *flags))
            for kind, flags in (("ddp", ()), ("fsdp", ("--fsdp",)))}


def test_two_cpu_processes_share_the_loss_and_keep_identical_lora(two_processes):
    out, done = two_processes["ddp"]

    steps = {}  # (step, micro-batch) -> rank -> (local loss, rank-mean loss); two micro-batches per update
    for rank, step, micro, local, mean in re.findall(
            r"rank (\d)/2 step (\d+) micro (\d) local_loss (\S+) mean_loss (\S+)", done.stdout):
        steps.setdefault((int(step), int(micro)), {})[int(rank)] = (float(local), float(mean))
    assert sorted(steps) == [(1, 0), (1, 1), (2, 0), (2, 1)] and all(sorted(r) == [0, 1] for r in steps.values())
    logged = [float(row.split(",")[1]) for row in (out / "metrics.csv").read_text().splitlines()[1:]]
    for (step, micro), ranks in steps.items():
        (local0, mean0), (local1, mean1) = ranks[0], ranks[1]
        assert mean0 == mean1  # the same loss on both ranks
        assert mean0 == pytest.approx((local0 + local1) / 2, rel=1e-5)  # the mean of what each rank computed
    for step in (1, 2):  # the logged loss averages the update's micro-batches
        assert logged[step - 1] == pytest.approx((steps[step, 0][0][1] + steps[step, 1][0][1]) / 2, rel=1e-6)
    assert steps[1, 0][0][0] != steps[1, 0][1][0], "both ranks drew the same data: not data-parallel"
    finals = {int(r): (float(d), float(total)) for r, d, total in
              re.findall(r"rank (\d)/2 lora_max_difference_across_ranks (\S+) lora_sum (\S+)", done.stdout)}
    assert sorted(finals) == [0, 1] and finals[0] == finals[1] and finals[0][0] == 0.0
    saved = sum(v.double().sum().item() for v in lora(out / "lora").values())  # what rank 0 wrote
    assert saved == pytest.approx(finals[1][1], rel=1e-9) and saved != 0.0
    assert json.loads((out / "summary.json").read_text())["lora_max_difference_across_ranks"] == 0.0


def test_the_job_sharded_with_fsdp_equals_data_parallel(two_processes):
    """--fsdp (torch's FSDP2, one unit per block; flowlite.sharding) against the DDP run of the same settings: the same
    rank-mean losses, gradient norms and evaluation (every rank evaluates) to 1e-5, and the same LoRA, gathered from the
    shards into the checkpoint and the final file."""
    (ddp, ddp_done), (fsdp, fsdp_done) = two_processes["ddp"], two_processes["fsdp"]
    pattern = r"rank (\d)/2 step (\d+) micro (\d) local_loss (\S+) mean_loss (\S+)"
    sharded, plain = (sorted(re.findall(pattern, d.stdout)) for d in (fsdp_done, ddp_done))
    assert [r[:3] for r in sharded] == [r[:3] for r in plain] and len(plain) == 8
    assert [float(x) for r in sharded for x in r[3:]] == pytest.approx([float(x) for r in plain for x in r[3:]],
                                                                        rel=1e-5)
    rows = [list(csv.DictReader((f / "metrics.csv").open())) for f in (fsdp, ddp)]
    for key in ("loss", "grad_norm", "eval_reward", "reward"):
        got, want = ([float(r[key]) for r in kind if r.get(key)] for kind in rows)
        assert got == pytest.approx(want, rel=1e-5) and len(got) == (1 if key == "eval_reward" else 2)
    final, reference = lora(fsdp / "lora"), lora(ddp / "lora")
    assert final.keys() == reference.keys()
    diff = torch.cat([(final[k] - reference[k]).abs().reshape(-1) for k in final])
    # Adam divides each element's gradient by its own scale: the few elements whose gradient is at rounding level
    # (measured 3 of 2048, the largest step 1.5e-4 of lr 1e-2) move differently; every other one agrees to 1e-6
    assert (diff > 1e-6).sum().item() <= 0.01 * diff.numel() and diff.max().item() < 1e-3
    checkpoint = lora(fsdp / "checkpoints" / "step_0000002" / "lora")
    assert all(torch.equal(checkpoint[k], final[k]) for k in final)  # whole tensors, not rank 0's shard
    summary = json.loads((fsdp / "summary.json").read_text())
    assert summary["sharded"] and not json.loads((ddp / "summary.json").read_text())["sharded"]
    assert summary["lora_max_difference_across_ranks"] == 0.0


def test_fsdp_in_one_process_is_one_error_line_before_anything_is_written(run, prompts, tmp_path):
    out = tmp_path / "one"
    done = run("sd3", "--tiny", "--method", "draft", "--reward", "aesthetic", "--prompts", str(prompts / "train.txt"),
               "--eval-prompts", str(prompts / "eval.txt"), "--output", str(out), "--quiet", "--fsdp")
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "--fsdp" in done.stderr
    assert not out.exists()
