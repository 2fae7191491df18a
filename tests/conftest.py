"""Fixtures shared across rooms: the shipped 2-D problems and the tiny random SD3 (built in memory, and saved with
save_pretrained so tests load it through ``load_sd3`` as users load a hub id or folder)."""

import os

import matplotlib
import pytest
import torch

matplotlib.use("Agg")
os.environ.setdefault("FLOWLITE_FAST", "1")
torch.set_num_threads(1)

from tests.helpers import TINY_PROMPTS


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="module")
def reweight():
    """The default problem: three modes, a mild quadratic tilt, β = 1."""
    from flowlite import load_problem

    return load_problem("reweight")


@pytest.fixture(scope="module")
def tiny_sd3():
    """A tiny random SD3 pipeline (seed 0) and cached embeddings of TINY_PROMPTS; fresh per test module."""
    from flowlite.sd3 import PromptCache, build_tiny_sd3

    pipe = build_tiny_sd3(seed=0)
    return pipe, PromptCache(pipe, max_sequence_length=32)(TINY_PROMPTS)


@pytest.fixture(scope="session")
def tiny_sd3_folder(tmp_path_factory):
    """The tiny pipeline written with save_pretrained (read-only): tests load it through load_sd3, as users do."""
    from flowlite.sd3 import build_tiny_sd3

    folder = tmp_path_factory.mktemp("tiny_sd3")
    build_tiny_sd3(seed=0).save_pretrained(folder)
    return folder
