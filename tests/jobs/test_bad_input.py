"""Every bad input is one clear line: exit status 2, one ``error:`` line holding the expected word, no traceback,
and nothing written (neither the output folder nor the working directory). The table lives in ``bad_inputs.py``;
most cases go through ``main`` in-process, a representative subset through ``python -m flowlite`` as a user runs
it, and the validating functions are called directly on more values."""

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flowlite.errors import FlowliteError, check_beta
from flowlite.jobs.arguments import guidance_value, non_negative_int, positive_float, positive_int, seed_value
from flowlite.jobs.validate import check_lora_file, check_output, checkpoint_choice, read_prompt_file
from tests.jobs.bad_inputs import PROBLEMS, bad_files, command_cases, sd3_cases

ROOT = Path(__file__).resolve().parents[2]
CASES = {**command_cases(), **sd3_cases()}
SUBPROCESS = ["finetune-nan_mean", "targets-name_up", "bench-log_density", "finetune--lr=nan",
              "finetune-out-under-file", "sd3-prompts-latin1", "sd3-pretrained-truncated_index",
              "sd3-sample-lora-truncated"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return bad_files(tmp_path_factory.mktemp("bad"))


def _argv(case, files, out):
    argv, word = CASES[case]
    return [a.replace("{files}", str(files)).replace("{out}", str(out)) for a in argv], word


def _check(code, stderr, word, out, cwd):
    lines = stderr.strip().splitlines()
    assert code == 2, stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and word in lines[0], stderr
    assert "Traceback" not in stderr
    assert not out.exists(), sorted(out.rglob("*"))
    assert list(cwd.iterdir()) == []


def test_the_table_has_at_least_150_cases():
    assert len(CASES) >= 150 and set(SUBPROCESS) <= set(CASES)


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_in_process(case, files, tmp_path, monkeypatch, capsys):
    from flowlite.jobs.cli import main

    out, cwd = tmp_path / "out", tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    argv, word = _argv(case, files, out)
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    _check(code, capsys.readouterr().err, word, out, cwd)


@pytest.mark.parametrize("case", SUBPROCESS)
def test_bad_input_as_a_user_runs_it(case, files, tmp_path):
    out, cwd = tmp_path / "out", tmp_path / "cwd"
    cwd.mkdir()
    argv, word = _argv(case, files, out)
    done = subprocess.run([sys.executable, "-m", "flowlite", *argv], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1"))
    _check(done.returncode, done.stderr, word, out, cwd)


@pytest.mark.parametrize("parse, text", [(f, t) for f, bad in (
    (seed_value, ["-1", "2" * 30, "abc", "1e3", "", "0x10", str(2**63)]),
    (guidance_value, ["nan", "-inf", "inf", "-0.5", "101", "x"]),
    (positive_float, ["0", "-1e-9", "nan", "inf", "one"]),
    (positive_int, ["0", "-4", "2.5", "ten"]),
    (non_negative_int, ["-1", "1.0", "zero"]),
    (checkpoint_choice, ["abc", "-1", "0", "1.5", "newest", "99999999"])) for t in bad])
def test_argument_types_refuse(parse, text):
    with pytest.raises(argparse.ArgumentTypeError):
        parse(text)


@pytest.mark.parametrize("beta", [float("nan"), float("inf"), -1e-12, 1e9, "big", None, [1.0]])
def test_check_beta_refuses(beta):
    with pytest.raises(FlowliteError, match="beta"):
        check_beta(beta)


@pytest.mark.parametrize("name", ["binary", "latin1", "long", "empty", "nul", "missing"])
def test_prompt_files_refused_naming_the_line(files, name):
    with pytest.raises(FlowliteError, match=r"line \d|no prompts|not found"):
        read_prompt_file(files / f"{name}.txt")


@pytest.mark.parametrize("name", ["random", "empty", "bad_header", "truncated"])
def test_lora_files_refused(files, name):
    with pytest.raises(FlowliteError, match="not a readable safetensors"):
        check_lora_file(files / f"lora_{name}" / "lora" / "pytorch_lora_weights.safetensors")


def test_output_checks_create_nothing(files, tmp_path):
    with pytest.raises(FlowliteError, match="is a file"):
        check_output(files / "a_file", "--out")
    with pytest.raises(FlowliteError, match="which is a file"):
        check_output(files / "a_file" / "deeper" / "still", "--out")
    assert check_output(tmp_path / "new" / "run", "--out") == tmp_path / "new" / "run"
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_problem_json_refused_through_the_loader(files, name):
    from flowlite.toy.problems import load_problem

    with pytest.raises(FlowliteError, match="problem"):
        load_problem(files / f"{name}.json")
