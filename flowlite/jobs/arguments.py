"""Command-line value types: each user value is checked once, here at the edge, with one line naming what is accepted."""

from __future__ import annotations

import argparse
import math

from flowlite.errors import FlowliteError, check_beta


def beta_value(text: str) -> float:
    """β: a finite number >= 0."""
    try:
        return check_beta(text)
    except FlowliteError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line naming the argument (exit status 2)."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see: {self.prog} --help)\n")
