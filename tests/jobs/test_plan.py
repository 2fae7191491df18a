"""The memory planner (``python -m flowlite plan``, theory §12.7) against exact counts, full-depth traces and the peak
RSS of real updates on CPU; ``bench/gpu.py`` in its CPU mode."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from flowlite.jobs.plan import LORA_TARGETS, Workload, count_state, method_steps
from flowlite.jobs.plan_check import measure, predict, sd3_config
from flowlite.jobs.plan_models import MODELS, ModelSpec, load_spec
from flowlite.jobs.plan_trace import build_fake, run_pass, trace_passes
from flowlite.methods import METHODS

ROOT = Path(__file__).resolve().parents[2]
TOLERANCE = 0.15
"""|predicted - measured| / measured on CPU; measured (bench/RESULTS.md): -1.6% to +7.4% over three sizes."""


def tiny_spec(size: str = "tiny", side: int = 16) -> ModelSpec:
    return ModelSpec(size, sd3_config(size, side), 8 * side, 16, cfg=False)


def test_parameter_and_optimizer_bytes_equal_the_exact_count_of_a_built_model():
    from diffusers import SD3Transformer2DModel

    from flowlite.sd3.flow import SD3Flow

    spec = tiny_spec()
    counts = count_state(spec, Workload("tiny", 128, precision="fp32", rank=4))
    transformer = SD3Transformer2DModel.from_config({k: v for k, v in spec.config.items() if k[0] != "_"})
    flow = SD3Flow(transformer, (16, 16, 16), rank=4)
    lora = sum(p.numel() for p in flow.trainable_parameters())
    frozen = sum(p.numel() * 4 for p in transformer.parameters() if not p.requires_grad)
    frozen += sum(b.numel() * b.element_size() for b in transformer.buffers())
    assert counts.lora_params == lora > 0
    assert counts.weights == frozen
    assert counts.trainable == lora * (4 + 4 + 8)  # fp32 parameter, grad, two AdamW moments
    sharded = count_state(spec, Workload("tiny", 128, precision="fp32", rank=4, gpus=2, fsdp=True))
    assert sharded.weights == frozen // 2 + 2 * counts.largest_block


def test_shipped_configs_have_the_published_parameter_counts():
    """Billions of transformer parameters as the model cards state them (SD3-medium 2B, SD3.5-large 8B, FLUX 12B)."""
    expected = {"sd3-medium": 2.0, "sd3.5-large": 8.1, "flux.1-dev": 11.9}
    for name, billions in expected.items():
        counts = count_state(load_spec(name), Workload(name, 1024, precision="fp32"))
        assert abs(counts.weights / 4e9 - billions) < 0.1, (name, counts.weights / 4e9)
    assert all("/" in entry["source"] for entry in MODELS.values())  # each cites its hub id


@pytest.mark.parametrize("checkpointing", [False, True])
def test_depth_extrapolation_equals_a_full_depth_trace(checkpointing):
    spec = ModelSpec("five", {**sd3_config("tiny", 16), "num_layers": 5}, 128, 16, cfg=False)
    passes = [("sample", 2), ("vjp", 2), ("regress", 2)]
    extrapolated = trace_passes(spec, passes, spec.resolution, torch.float32, checkpointing, 8, LORA_TARGETS)
    model, mode = build_fake(spec, spec.config, torch.float32, 8, LORA_TARGETS)
    with mode:
        for kind, batch in passes:
            full = run_pass(model, spec, kind, batch, spec.resolution, torch.float32, checkpointing)
            assert extrapolated[(kind, batch)].held == full.held
            assert extrapolated[(kind, batch)].peak == pytest.approx(full.peak, rel=0.01)


def test_every_registered_method_has_a_pass_pattern_with_grad_where_it_trains():
    for name in METHODS:
        steps = method_steps(name, 4, 20, cfg=True)
        assert any(s.kind == "regress" for s in steps), name
    kinds = {s.kind for s in method_steps("adjoint-matching", 4, 20, cfg=True)}
    assert kinds == {"sample", "vjp", "regress"}  # the lean adjoint's VJPs of the base


def test_prediction_is_within_tolerance_of_measured_peak_rss_for_a_tiny_and_a_small_model():
    configs = [sd3_config("tiny", 16), sd3_config("small", 16)]
    measured = measure(configs, ["adjoint-matching"], 16, batch_size=2)
    for config, peak in zip(configs, measured):
        predicted = predict(config, "adjoint-matching", 16, batch_size=2)["total"]
        assert abs(predicted - peak) <= TOLERANCE * peak, (config["num_attention_heads"], predicted, peak)


def test_plan_command_prints_what_fits_for_a_local_config(run, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(sd3_config("tiny", 16)))
    out = run("plan", "--model", str(tmp_path), "--resolution", "128", "--method", "draft", "adjoint-matching",
              "--json", str(tmp_path / "plan.json"))
    assert out.returncode == 0, out.stderr
    assert "| draft |" in out.stdout and "| 24 GB | 48 GB | 80 GB |" in out.stdout
    rows = json.loads((tmp_path / "plan.json").read_text())["rows"]
    assert [r["method"] for r in rows] == ["draft", "adjoint-matching"]
    assert all(r["fits"]["24 GB"] for r in rows)  # a tiny model fits anywhere
    assert rows[1]["total"] > rows[0]["total"]  # the adjoint's VJP graph over a larger regression batch
    bad = run("plan", "--model", "no-such-model")
    assert bad.returncode == 2 and "sd3-medium" in bad.stderr


def test_gpu_bench_runs_real_method_updates_on_cpu_with_tiny_models(tmp_path):
    out = tmp_path / "gpu_results.json"
    subprocess.run([sys.executable, str(ROOT / "bench" / "gpu.py"), "--tiny", "--device", "cpu", "--methods", "draft",
                    "--updates", "1", "--out", str(out)], check=True, capture_output=True, cwd=ROOT)
    rows = json.loads(out.read_text())["rows"]
    assert {(r["model"], r["method"]) for r in rows} == {("sd3-tiny", "draft"), ("flux-tiny", "draft")}
    assert all(r["status"] == "measured" and r["seconds_per_update"] > 0 and r["predicted_bytes"] > 0 for r in rows)
    how = {r["model"]: r["how"] for r in rows}  # both families train through their FlowModel, FLUX included
    assert how == {"sd3-tiny": "method updates via SD3Flow", "flux-tiny": "method updates via FluxFlow"}, how
    assert "| sd3-tiny | draft |" in out.with_suffix(".md").read_text()
    subprocess.run([sys.executable, str(ROOT / "bench" / "gpu.py"), "--tiny", "--device", "cpu", "--methods",
                    "adjoint-matching", "--models", "sd3-tiny", "--updates", "1", "--quantize-base", "int8", "--out",
                    str(out)], check=True, capture_output=True, cwd=ROOT)
    (row,) = json.loads(out.read_text())["rows"]  # the int8 base: planned with int8 rows and measured
    assert row["workload"]["quantize_base"] == "int8" and row["status"] == "measured"
