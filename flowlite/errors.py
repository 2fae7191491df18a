"""User-facing errors: one clear line that names the argument and the accepted values (the README's "Bad input")."""


class FlowliteError(ValueError):
    """Bad input. The command line prints ``error: <message>`` and exits with status 2, never a traceback."""


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss; the last good checkpoint was kept."""


def first_line(err: BaseException, limit: int | None = None) -> str:
    """The first line of an error's message (its type's name when the message is empty), cut to ``limit`` characters:
    what a one-line ``error:`` shows of a library's multi-line exception."""
    lines = str(err).strip().splitlines()
    return (lines[0] if lines else type(err).__name__)[:limit]


BETA_MAX = 1e8
"""The largest β accepted: above it exp(β r) overflows for any reward of order one (SD3 recipes use up to 5e5)."""


def check_beta(beta) -> float:
    """β must be a finite number in [0, BETA_MAX] (p* ∝ p_base exp(β r))."""
    import math

    try:
        value = float(beta)
    except (TypeError, ValueError):
        value = math.nan
    if not (math.isfinite(value) and 0 <= value <= BETA_MAX):
        raise FlowliteError(f"beta must be a finite number in [0, {BETA_MAX:g}], got {beta!r}")
    return value
