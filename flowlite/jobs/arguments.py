"""Command-line value types: each user value is checked once, here at the edge, with one line naming what is accepted."""

from __future__ import annotations

import argparse
import math
from typing import Callable

from flowlite.errors import FlowliteError, check_beta

SEED_MAX = 2**63 - 2  # torch.manual_seed's range, less the +1 the jobs add for their evaluation generators


def beta_value(text: str) -> float:
    """β: a finite number in [0, BETA_MAX]."""
    try:
        return check_beta(text)
    except FlowliteError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _accepted(text: str, convert: Callable, ok: Callable, accepted: str):
    """``convert(text)`` when it parses and passes ``ok``; else one line naming what is accepted."""
    try:
        value = convert(text)
    except (ValueError, OverflowError):
        value = None
    if value is None or not ok(value):
        raise argparse.ArgumentTypeError(f"expected {accepted}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    return _accepted(text, int, lambda v: v >= 1, "a positive integer")


def non_negative_int(text: str) -> int:
    """A count where 0 means "off" (e.g. --eval-every 0)."""
    return _accepted(text, int, lambda v: v >= 0, "an integer >= 0")


def seed_value(text: str) -> int:
    """A seed every RNG accepts (torch, NumPy's SeedSequence): an integer in [0, 2**63 - 2]."""
    return _accepted(text, int, lambda v: 0 <= v <= SEED_MAX, "a seed, an integer in [0, 2**63 - 2]")


def guidance_value(text: str) -> float:
    """A classifier-free guidance scale: a finite number in [0, 100] (1 is no guidance)."""
    return _accepted(text, float, lambda v: math.isfinite(v) and 0 <= v <= 100,
                     "a guidance scale, a finite number in [0, 100]")


def positive_float(text: str) -> float:
    return _accepted(text, float, lambda v: math.isfinite(v) and v > 0, "a positive number")


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line naming the argument (exit status 2)."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see: {self.prog} --help)\n")
