"""User-facing errors: one clear line that names the argument and the accepted values (the README's "Bad input")."""


class FlowliteError(ValueError):
    """Bad input. The command line prints ``error: <message>`` and exits with status 2, never a traceback."""


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss; the last good checkpoint was kept."""


def check_beta(beta) -> float:
    """β must be a finite, non-negative number (p* ∝ p_base exp(β r))."""
    import math

    try:
        value = float(beta)
    except (TypeError, ValueError):
        raise FlowliteError(f"beta must be a finite number >= 0, got {beta!r}") from None
    if not math.isfinite(value) or value < 0:
        raise FlowliteError(f"beta must be a finite number >= 0, got {beta!r}")
    return value
