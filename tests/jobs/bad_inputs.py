"""The bad-input table of ``test_bad_input.py``: what a new user gets wrong, per job, and a word the one error line
must hold. ``{out}`` is the run/output folder the case must leave unwritten, ``{files}`` a folder of prepared bad
files (``bad_files``)."""

import json
from pathlib import Path

GOOD_BASE = {"weights": [1.0], "means": [[0.0, 0.0]], "covs": [[[1.0, 0.0], [0.0, 1.0]]]}
LINEAR = {"type": "linear", "b": [0.3, 0.2]}


def problem(**changes) -> dict:
    d = {"name": "p", "base": GOOD_BASE, "reward": LINEAR, "beta": 1.0}
    d.update(changes)
    return d


PROBLEMS = {  # file name -> (JSON text or object, a word of the error line)
    "not_json": ("{not json", "not valid JSON"),
    "nan_mean": ('{"base": {"weights": [1], "means": [[NaN, 0]], "covs": [[[1, 0], [0, 1]]]}, '
                 '"reward": {"type": "linear", "b": [1, 0]}, "beta": 1}', "NaN"),
    "huge_mean": (problem(base={**GOOD_BASE, "means": [[1e200, 0.0]]}), "finite"),
    "inf_cov": ('{"base": {"weights": [1], "means": [[0, 0]], "covs": [[[1e999, 0], [0, 1]]]}, '
                '"reward": {"type": "linear", "b": [1, 0]}, "beta": 1}', "covs"),
    "reward_dim": (problem(reward={"type": "linear", "b": [1.0, 0.0, 0.0]}), "dimension 3"),
    "quad_dim": (problem(reward={"type": "quadratic", "A": [[1.0]], "m": [0.0]}), "dimension 1"),
    "log_density": (problem(reward={"type": "mixture_log_density", "mixture": GOOD_BASE}), "closed-form tilt"),
    "name_up": (problem(name="../x"), "name '../x'"),
    "name_abs": (problem(name="/tmp/x"), "name '/tmp/x'"),
    "base_name_up": (problem(base_name="../../evil"), "base_name"),
    "name_space": (problem(name="a b"), "name 'a b'"),
    "not_pd": (problem(base={**GOOD_BASE, "covs": [[[1.0, 0.0], [0.0, -1.0]]]}), "positive definite"),
    "asym": (problem(base={**GOOD_BASE, "covs": [[[1.0, 0.5], [0.0, 1.0]]]}), "symmetric"),
    "neg_weight": (problem(base={**GOOD_BASE, "weights": [-1.0]}), "non-negative"),
    "weights_shape": (problem(base={**GOOD_BASE, "weights": [0.5, 0.5]}), "weights"),
    "means_shape": (problem(base={**GOOD_BASE, "means": [0.0, 0.0]}), "means"),
    "string_mean": (problem(base={**GOOD_BASE, "means": [["a", 0.0]]}), "malformed"),
    "null_cov": (problem(base={**GOOD_BASE, "covs": [[[None, 0.0], [0.0, 1.0]]]}), "expected a number"),
    "bool_weight": (problem(base={**GOOD_BASE, "weights": [True]}), "expected a number"),
    "no_beta": ({k: v for k, v in problem().items() if k != "beta"}, "beta"),
    "beta_text": (problem(beta="big"), "beta"),
    "beta_huge": (problem(beta=1e308), "beta"),
    "beta_negative": (problem(beta=-2.0), "beta"),
    "base_list": (problem(base=[1, 2]), "base must be a JSON object"),
    "reward_unknown": (problem(reward={"type": "cubic"}), "accepted: quadratic, linear"),
    "reward_missing_b": (problem(reward={"type": "linear"}), "'b'"),
    "quad_not_psd": (problem(reward={"type": "quadratic", "A": [[-1.0, 0.0], [0.0, 1.0]], "m": [0.0, 0.0]}),
                     "semi-definite"),
    "top_level_list": ("[1, 2, 3]", "JSON object"),
    "description_number": (problem(description=5), "description"),
}


def bad_files(folder: Path) -> Path:
    """Write every bad problem, prompt, LoRA and pipeline file of the table under ``folder``."""
    for name, (content, _) in PROBLEMS.items():
        text = content if isinstance(content, str) else json.dumps(content)
        (folder / f"{name}.json").write_text(text)
    (folder / "latin1.json").write_bytes('{"name": "caf\xe9"}'.encode("latin-1"))
    (folder / "good_prompts.txt").write_text("cat\ndog\n")
    (folder / "binary.txt").write_bytes(bytes(range(256)) * 4)
    (folder / "latin1.txt").write_bytes("cat\ncaf\xe9 au lait\n".encode("latin-1"))
    (folder / "long.txt").write_text("cat\n" + "a" * 5000 + "\n")
    (folder / "empty.txt").write_text("# nothing\n\n")
    (folder / "nul.txt").write_text("cat\nd\x00g\n")
    (folder / "a_file").write_text("I am a file")
    for name, index in (("truncated_index", '{"_class_name": "StableDiffusion3Pip'),
                        ("unknown_class", '{"_class_name": "NoSuchPipeline", "transformer": ["diffusers", "Nope"]}'),
                        ("index_list", "[1, 2]")):
        (folder / name).mkdir()
        (folder / name / "model_index.json").write_text(index)
    (folder / "no_index").mkdir()
    for name, data in (("random", bytes(range(200))), ("empty", b""), ("bad_header", b"\xff" * 8 + b"{{{{"),
                       ("truncated", None)):
        run = folder / f"lora_{name}"
        (run / "lora").mkdir(parents=True)
        (run / "config.json").write_text(json.dumps({"tiny": True}))
        if data is None:  # a real safetensors file cut in half
            import torch
            from safetensors.torch import save_file

            save_file({"a": torch.zeros(64, 64)}, str(run / "whole.safetensors"))
            data = (run / "whole.safetensors").read_bytes()[:2000]
        (run / "lora" / "pytorch_lora_weights.safetensors").write_bytes(data)
    (folder / "damaged_config" / "lora").mkdir(parents=True)
    (folder / "damaged_config" / "config.json").write_text('{"tiny": tr')
    return folder


def command_cases() -> dict:
    """id -> (argv with {out} and {files}, a word of the error line)."""
    cases = {}
    for job in ("targets", "finetune", "bench"):
        flag = "--problems" if job == "bench" else "--problem"
        for name, (_, word) in PROBLEMS.items():
            cases[f"{job}-{name}"] = ([job, flag, f"{{files}}/{name}.json", "--out", "{out}"], word)
    for name in ("nan_mean", "reward_dim", "name_up", "base_name_up", "not_pd", "inf_cov"):
        cases[f"train-base-{name}"] = (["train-base", "--problem", f"{{files}}/{name}.json", "--out", "{out}/b.st"],
                                       PROBLEMS[name][1])
    cases["targets-latin1"] = (["targets", "--problem", "{files}/latin1.json", "--out", "{out}"], "not valid JSON")
    values = {"--beta": ["nan", "-1", "abc", "inf", "1e308"], "--seed": ["-1", str(2**70), "abc", "1.5"]}
    for flag, bads in values.items():
        for bad in bads:
            cases[f"targets{flag}={bad}"] = (["targets", flag, bad, "--out", "{out}"], flag.strip("-"))
    finetune = {"--lr": ["nan", "-1", "0", "abc", "inf"], "--eval-every": ["-3", "x"], "--train-steps": ["0", "-1"],
                "--batch-size": ["0"], "--solver-steps": ["0"], "--seed": ["-1", str(2**70)],
                "--base": ["foo"], "--method": ["magic"], "--schedule": ["sometimes"]}
    for flag, bads in finetune.items():
        for bad in bads:
            cases[f"finetune{flag}={bad}"] = (["finetune", flag, bad, "--out", "{out}"], flag.strip("-"))
    cases["finetune-beta-refl"] = (["finetune", "--method", "refl", "--beta", "2", "--out", "{out}"], "no KL term")
    cases["finetune-schedule-rwr"] = (["finetune", "--method", "rwr", "--schedule", "ode", "--out", "{out}"],
                                      "--schedule")
    cases["finetune-resume-nothing"] = (["finetune", "--resume", "--out", "{out}"], "nothing to resume")
    cases["finetune-out-file"] = (["finetune", "--out", "{files}/a_file"], "is a file")
    cases["finetune-out-under-file"] = (["finetune", "--out", "{files}/a_file/run"], "which is a file")
    cases["targets-out-file"] = (["targets", "--out", "{files}/a_file"], "is a file")
    cases["bench-out-under-file"] = (["bench", "--iterations", "1", "--out", "{files}/a_file/x"], "which is a file")
    cases["train-base-out-folder"] = (["train-base", "--out", "{files}"], "is a folder")
    bench = {"--own-optimum-samples": ["-5"], "--seeds": ["-1"], "--budget-seconds": ["nan", "-1", "0"],
             "--iterations": ["0"], "--jobs": ["0"], "--eval-samples": ["0"]}
    for flag, bads in bench.items():
        for bad in bads:
            cases[f"bench{flag}={bad}"] = (["bench", flag, bad, "--out", "{out}"], flag.strip("-").split("-")[0])
    cases["bench-methods-magic"] = (["bench", "--methods", "magic", "--out", "{out}"], "unknown method 'magic'")
    return cases


SD3 = ["sd3", "--tiny", "--method", "draft", "--reward", "aesthetic", "--prompts", "{files}/good_prompts.txt",
       "--eval-prompts", "{files}/good_prompts.txt", "--output", "{out}", "--quiet"]


def sd3_cases() -> dict:
    cases = {}
    values = {"--guidance-scale": ["nan", "-5", "1e9"], "--seed": ["-1", str(2**70)], "--lr": ["nan", "-1"],
              "--rank": ["0"], "--mixed-precision": ["fp8"], "--train-steps": ["0"], "--keep-last": ["0"],
              "--resume": ["first"]}
    for flag, bads in values.items():
        for bad in bads:
            cases[f"sd3{flag}={bad}"] = (SD3 + [flag, bad], flag.strip("-").split("-")[0])
    cases["sd3-beta-refl"] = (SD3 + ["--method", "refl", "--beta", "3"], "no KL term")
    cases["sd3-beta-nan"] = (SD3 + ["--method", "adjoint-matching", "--beta", "nan"], "beta")
    for name, word in (("binary", "line 2: not UTF-8"), ("latin1", "line 2: not UTF-8"), ("long", "line 2"),
                       ("empty", "no prompts"), ("nul", "line 2"), ("missing", "not found")):
        cases[f"sd3-prompts-{name}"] = (SD3 + ["--prompts", f"{{files}}/{name}.txt"], word)
    cases["sd3-eval-prompts-latin1"] = (SD3 + ["--eval-prompts", "{files}/latin1.txt"], "--eval-prompts")
    pretrained = ["sd3", "--method", "draft", "--reward", "aesthetic", "--prompts", "{files}/good_prompts.txt",
                  "--output", "{out}", "--pretrained"]
    for name, word in (("truncated_index", "model_index.json cannot be read"), ("unknown_class", "NoSuchPipeline"),
                       ("index_list", "_class_name"), ("no_index", "no model_index.json"),
                       ("nowhere", "not found")):
        cases[f"sd3-pretrained-{name}"] = (pretrained + [f"{{files}}/{name}"], word)
    cases["sd3-output-file"] = (SD3 + ["--output", "{files}/a_file"], "is a file")
    cases["sd3-resume-nothing"] = (SD3 + ["--resume", "latest"], "nothing to resume")
    sample = ["sd3-sample", "--prompt", "cat", "--output", "{out}/x.png", "--lora"]
    for name, word in (("random", "not a readable safetensors"), ("empty", "not a readable safetensors"),
                       ("bad_header", "not a readable safetensors"), ("truncated", "not a readable safetensors")):
        cases[f"sd3-sample-lora-{name}"] = (sample + [f"{{files}}/lora_{name}"], word)
    cases["sd3-sample-damaged-config"] = (sample + ["{files}/damaged_config"], "config.json is damaged")
    cases["sd3-sample-not-a-run"] = (sample + ["{files}"], "not a run folder")
    for bad in ("abc", "-1", "0", "1.5"):
        cases[f"sd3-sample-checkpoint={bad}"] = (sample + ["{files}/lora_random", "--checkpoint", bad], "checkpoint")
    cases["sd3-sample-guidance-nan"] = (sample + ["{files}/lora_random", "--guidance-scale", "nan"], "guidance")
    cases["sd3-sample-long-prompt"] = (["sd3-sample", "--lora", "{files}/lora_random", "--prompt", "a" * 3000,
                                        "--output", "{out}/x.png"], "limited to")
    cases["threads-zero"] = (["--threads", "0", "targets"], "threads")
    cases["unknown-job"] = (["paint"], "invalid choice")
    return cases
