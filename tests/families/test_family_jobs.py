"""`python -m flowlite sd3 --model sd3.5|flux --tiny` end to end: the run trains, resuming equals an uninterrupted
run, and `sd3-sample` reproduces the training-time evaluation image through the family's diffusers pipeline."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from flowlite.errors import FlowliteError
from flowlite.jobs.cli import main
from flowlite.jobs.image_settings import resolve_config


@pytest.fixture(scope="module")
def prompts(tmp_path_factory):
    folder = tmp_path_factory.mktemp("prompts")
    (folder / "train.txt").write_text("cat\ndog\n")
    (folder / "eval.txt").write_text("snail\nlobster\n")
    return folder


def job(prompts, out, model, *extra):
    return main(["sd3", "--tiny", "--model", model, "--method", "adjoint-matching", "--reward", "pickscore",
                 "--prompts", str(prompts / "train.txt"), "--eval-prompts", str(prompts / "eval.txt"),
                 "--output", str(out), "--solver-steps", "2", "--eval-steps", "2", "--batch-size", "2",
                 "--checkpoint-every", "1", "--eval-every", "2", "--lr", "0.05", "--quiet", *extra])


def lora(folder):
    return load_file(str(Path(folder) / "lora" / "pytorch_lora_weights.safetensors"))


@pytest.mark.parametrize("model", ["sd3.5", "flux"])
def test_tiny_job_resumes_exactly_and_samples_through_diffusers(prompts, tmp_path, model):
    assert job(prompts, tmp_path / "straight", model, "--train-steps", "2") == 0
    assert job(prompts, tmp_path / "resumed", model, "--train-steps", "1") == 0
    assert job(prompts, tmp_path / "resumed", model, "--train-steps", "2", "--resume", "latest") == 0
    config = json.loads((tmp_path / "straight" / "config.json").read_text())
    assert config["model"] == model and "--model " + model in config["reproduce"]
    a, b = lora(tmp_path / "straight"), lora(tmp_path / "resumed")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(k.endswith("lora_B.weight") and v.abs().sum() > 0 for k, v in a.items())

    samples = tmp_path / "samples"
    assert main(["sd3-sample", "--lora", str(tmp_path / "straight"), "--prompt", "lobster", "--seed", "1",
                 "--output", str(samples)]) == 0
    image = np.asarray(Image.open(samples / "sample00_seed1.png")).astype(int)
    evaluated = np.asarray(Image.open(tmp_path / "straight" / "eval" / "step_0000002" / "prompt01_seed1.png"))
    assert np.abs(image - evaluated.astype(int)).max() <= 1


def test_model_recipes_resolve_and_flux_refuses_drop_t5(tmp_path):
    base = {"method": "draft", "reward": "aesthetic", "prompts": "p.txt"}
    flux = resolve_config({**base, "pretrained": "black-forest-labs/FLUX.1-dev"})
    sd35 = resolve_config({**base, "pretrained": "stabilityai/stable-diffusion-3.5-medium"})
    assert (flux["model"], flux["guidance_scale"], flux["max_sequence_length"]) == ("flux", 3.5, 512)
    assert (sd35["model"], sd35["guidance_scale"], sd35["eval_steps"]) == ("sd3.5", 4.5, 40)
    assert resolve_config({**base, "pretrained": "x/y", "model": "flux", "guidance_scale": 2.0})["guidance_scale"] == 2
    assert resolve_config({**base, "tiny": True})["model"] == "sd3"
    (tmp_path / "p.txt").write_text("cat\n")
    assert main(["sd3", "--tiny", "--model", "flux", "--drop-t5", "--method", "draft", "--reward", "aesthetic",
                 "--prompts", str(tmp_path / "p.txt"), "--output", str(tmp_path / "run"), "--quiet"]) != 0
    with pytest.raises(FlowliteError, match="drop-t5"):
        from flowlite.jobs.image_models import MODELS

        MODELS["flux"].tiny(drop_t5=True)
