"""Run-wide switches: FAST mode for CI and notebooks, device choice, seeding (theory §1.4, §12.5)."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

FAST: bool = os.environ.get("FLOWLITE_FAST", "0").strip().lower() in {"1", "true", "yes"}
"""True when ``FLOWLITE_FAST=1``: notebooks and the CLI shrink their budgets; assertions still hold."""


def fast(slow_value, fast_value):
    """Return ``fast_value`` in FAST mode, else ``slow_value`` (reads the environment each call)."""
    is_fast = os.environ.get("FLOWLITE_FAST", "0").strip().lower() in {"1", "true", "yes"}
    return fast_value if is_fast else slow_value


def pick_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA, then MPS, then CPU; anything else is passed to ``torch.device``."""
    if isinstance(device, torch.device):
        return device
    if device != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) with one integer."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
