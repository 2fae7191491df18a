"""The shipped FSDP configs (``configs/fsdp*.yaml``), read by accelerate's own launcher: they ask for full-shard with
``use_orig_params`` and one FSDP unit per transformer block, and those units are exactly the blocks the memory
planner's ``--fsdp`` gathers one at a time and the job's ``--fsdp`` shards. accelerate runs its FSDP plugin on GPUs only
(it needs a GPU-like device, and a CPU process group stays plain data parallel), so it has never run here and the job
refuses a launch through it with one line; ``--fsdp`` shards with torch's FSDP2 instead, rehearsed on CPU."""

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
from accelerate.utils.dataclasses import get_module_class_from_name
from accelerate.utils.launch import prepare_multi_gpu_env
from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy

from flowlite.jobs.image_models import MODELS
from flowlite.jobs.plan import LORA_TARGETS, Workload, count_state
from flowlite.jobs.plan_models import load_spec
from flowlite.jobs.plan_trace import build_meta

ROOT = Path(__file__).resolve().parents[2]


def launch_environment(config_file: Path) -> tuple[dict, int]:
    """What ``accelerate launch --config_file FILE`` puts in each process's environment, and its process count."""
    args = launch_command_parser().parse_args(["--config_file", str(config_file), "train.py"])
    args, _, _ = _validate_launch_command(args)
    return prepare_multi_gpu_env(args), args.num_processes


@pytest.mark.parametrize("config_file, model, depths, families", [
    ("fsdp.yaml", "sd3.5-medium", {"joint": 2, "dual": 1}, ("sd3", "sd3.5")),
    ("fsdp_flux.yaml", "flux.1-dev", {"double": 1, "single": 2}, ("flux",))])
def test_config_shards_the_blocks_the_planner_gathers(config_file, model, depths, families):
    env, processes = launch_environment(ROOT / "configs" / config_file)
    for family in families:  # the job's --fsdp shards the same units (flowlite.sharding)
        assert MODELS[family].fsdp_units == tuple(env["FSDP_TRANSFORMER_CLS_TO_WRAP"].split(","))
    assert env["ACCELERATE_USE_FSDP"] == "true" and env["FSDP_SHARDING_STRATEGY"] == "FULL_SHARD"
    assert env["FSDP_USE_ORIG_PARAMS"] == "true"  # LoRA parameters trainable beside frozen ones in one unit
    assert env["FSDP_AUTO_WRAP_POLICY"] == "TRANSFORMER_BASED_WRAP"
    spec = load_spec(model)
    spec = replace(spec, config=spec.with_depths(depths))  # full width, fewer blocks of every type
    transformer = build_meta(spec, spec.config, torch.bfloat16, 8, LORA_TARGETS)
    classes = {get_module_class_from_name(transformer, name) for name in env["FSDP_TRANSFORMER_CLS_TO_WRAP"].split(",")}
    assert None not in classes
    units = [m for m in transformer.modules() if m is not transformer
             and transformer_auto_wrap_policy(m, False, 0, transformer_layer_cls=classes)]
    blocks = [b for child in transformer.children() if isinstance(child, torch.nn.ModuleList) for b in child]
    assert [id(u) for u in units] == [id(b) for b in blocks]  # accelerate's units are the planner's blocks
    assert len(units) == sum(spec.depths().values())
    unit_bytes = max(sum(p.numel() * p.element_size() for p in u.parameters()) for u in units)
    one = count_state(spec, Workload(model, 1024))
    sharded = count_state(spec, Workload(model, 1024, gpus=processes, fsdp=True))
    assert sharded.largest_block == unit_bytes
    assert sharded.weights == one.weights // processes + 2 * unit_bytes  # W/G plus a gathered and a prefetched unit


def test_the_job_refuses_an_fsdp_launch_before_writing_anything(tmp_path, monkeypatch, run):
    (tmp_path / "train.txt").write_text("cat\n")
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    out = tmp_path / "run"
    done = run("sd3", "--tiny", "--method", "draft", "--reward", "aesthetic", "--prompts", str(tmp_path / "train.txt"),
               "--eval-prompts", str(tmp_path / "train.txt"), "--output", str(out), "--quiet")
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "FSDP" in done.stderr and "GPU" in done.stderr
    assert not out.exists()
