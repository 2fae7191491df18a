"""FSDP rehearsed on CPU: two gloo processes (``accelerate launch``) train the tiny SD3 LoRA with the transformer
sharded by torch's FSDP2 (``fully_shard``, one unit per ``JointTransformerBlock`` as ``configs/fsdp.yaml`` lays it out)
through the one training loop (``train(..., shard_units=...)``, ``flowlite.sharding``), for Adjoint Matching (the lean
adjoint runs VJPs of the base, adapters off, inside the loss) and VGG-Flow (a value network beside the LoRA).

Checked against an unsharded process that takes both ranks' batches as two halves of each update (the same seeds):
the gathered LoRA and value network agree to float32 rounding (measured max |Δ| 3e-8; bound 1e-6), the gradient norm
of every update to 1e-5 (relative), the evaluation on every rank to 1e-6; the base weights are bit-identical to the
pretrained ones. Checkpoints and the diffusers LoRA file hold whole tensors gathered from the shards, and a sharded run
resumed from its checkpoint (optimizer state included) equals the uninterrupted one bit for bit."""

import pytest
import torch
from safetensors.torch import load_file

from tests.core import fsdp_rehearsal as script
from tests.core.test_accelerate_processes import launch_script


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    return launch_script("fsdp_rehearsal.py", tmp_path_factory.mktemp("fsdp"))


def lora_keys(state: dict) -> list[str]:
    return [k for k in state if "lora_" in k]


def max_difference(a: dict, b: dict, keys) -> float:
    return max((a[k].double() - b[k].double()).abs().max().item() for k in keys)


def test_both_ranks_trained_sharded_and_gather_the_same_full_state(rehearsal):
    out, ranks = rehearsal
    assert ranks[0]["world"] == ranks[1]["world"] == 2
    for name in script.METHODS:
        assert ranks[0]["sharded"][name] == ranks[1]["sharded"][name] == ["DTensor"]  # every parameter was sharded
        first, second = (load_file(str(out / name / f"rank{r}.safetensors")) for r in (0, 1))
        assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
        assert ranks[0]["loss"][name] == ranks[1]["loss"][name]  # the logged loss is the rank mean
    assert (ranks[0]["offloaded_keys"], ranks[1]["offloaded_keys"]) == (83, 0)  # cpu_offload gathers on rank 0 only


@pytest.mark.parametrize("name", script.METHODS)
def test_sharded_training_equals_one_unsharded_process(rehearsal, name):
    out, ranks = rehearsal
    sharded = load_file(str(out / name / "rank0.safetensors"))
    reference = load_file(str(out / name / "reference.safetensors"))
    assert sharded.keys() == reference.keys()
    lora = lora_keys(sharded)
    assert len(lora) == 16 and max_difference(sharded, reference, lora) < 1e-6
    assert max(reference[k].abs().max().item() for k in lora if "lora_B" in k) > 1e-3  # B starts at 0: it trained
    base = load_file(str(out / "base.safetensors"))
    frozen = {k.replace(".base_layer", ""): v for k, v in sharded.items() if k not in lora}
    assert frozen.keys() == base.keys() and all(torch.equal(frozen[k], base[k]) for k in base)
    expected = ranks[script.METHODS.index(name)]["reference"][name]
    assert ranks[0]["grad_norm"][name] == pytest.approx(expected["grad_norm"], rel=1e-5)
    assert ranks[0]["eval"][name] == ranks[1]["eval"][name] == pytest.approx(expected["eval_reward"], rel=1e-6)
    # the checkpoint rank 0 wrote holds the gathered trainable state: LoRA and, for VGG-Flow, the value network
    checkpoint = load_file(str(out / name / "whole" / "checkpoints" / f"step_{script.STEPS:07d}" / "model.safetensors"))
    trained = load_file(str(out / name / "reference_trained.safetensors"))
    assert checkpoint.keys() == trained.keys() and max_difference(checkpoint, trained, trained) < 1e-6
    assert (name == "vgg-flow") == any("value_gradient" in k for k in trained)
    assert (out / name / "whole" / "eval" / f"step_{script.STEPS:07d}.png").is_file()  # rank 0 wrote the images


def test_the_lora_file_written_from_the_shards_loads_back(rehearsal, tiny_sd3):
    from flowlite.sd3 import SD3Flow, load_lora

    out, _ = rehearsal
    pipe, _ = tiny_sd3
    for name in script.METHODS:
        flow = SD3Flow(pipe.transformer, script.LATENT, guidance_scale=5.0)
        load_lora(flow, out / name / "whole" / "checkpoints" / f"step_{script.STEPS:07d}" / "lora")
        loaded = {k: v.detach() for k, v in flow.transformer.state_dict().items() if "lora_" in k}
        sharded = load_file(str(out / name / "rank0.safetensors"))
        assert loaded.keys() == set(lora_keys(sharded)) and max_difference(loaded, sharded, loaded) == 0.0


def test_a_sharded_run_resumes_exactly_with_its_optimizer_state(rehearsal):
    out, _ = rehearsal
    name = script.RESUMED
    whole = load_file(str(out / name / "rank0.safetensors"))
    for r in (0, 1):
        resumed = load_file(str(out / name / f"resumed{r}.safetensors"))
        assert resumed.keys() == set(lora_keys(whole)) and all(torch.equal(resumed[k], whole[k]) for k in resumed)
    state = torch.load(out / name / "resumed" / "checkpoints" / "step_0000001" / "training_state.pt", weights_only=True)
    weights = load_file(str(out / name / "resumed" / "checkpoints" / "step_0000001" / "model.safetensors"))
    moments = [s["exp_avg"] for s in state["optimizer"]["state"].values()]
    assert sorted(m.shape for m in moments) == sorted(w.shape for w in weights.values())  # whole, not one shard
