"""What a problem JSON must hold before any job trusts it (the README's "When things go wrong").

Every number finite and of moderate size (|x| <= 1e6), a reward whose dimension is the mixture's, names that are
safe file names (``[A-Za-z0-9_-]``, they become output files), and, for the jobs, an exact tilted target
p* ∝ p_base exp(β r) (theory §9.2) that is finite with positive-definite covariances. Each failure is one
``FlowliteError`` naming the problem file and the field.
"""

from __future__ import annotations

import math
import re

import torch

from flowlite.errors import FlowliteError

NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
NUMBER_MAX = 1e6


def check_name(value, field: str, source: str) -> str:
    """A name that is also a safe file name: 1 to 64 of A-Z a-z 0-9 _ - (no '/', '..' or absolute paths)."""
    if not isinstance(value, str) or not NAME.match(value):
        raise FlowliteError(f"problem {source}: {field} {value!r} is not accepted; a name is 1 to 64 characters "
                            "from A-Z a-z 0-9 _ - (it becomes a file name)")
    return value


def check_numbers(value, field: str, source: str) -> None:
    """Every number in a nested list/dict is finite with |x| <= NUMBER_MAX; anything else but a list, dict or
    string is refused."""
    if isinstance(value, dict):
        for key, item in value.items():
            check_numbers(item, f"{field}.{key}", source)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            check_numbers(item, f"{field}[{i}]", source)
    elif isinstance(value, bool) or value is None:
        raise FlowliteError(f"problem {source}: {field} is {value!r}; expected a number")
    elif isinstance(value, (int, float)):
        if not (math.isfinite(value) and abs(value) <= NUMBER_MAX):
            raise FlowliteError(f"problem {source}: {field} is {value!r}; numbers must be finite with "
                                f"|x| <= {NUMBER_MAX:g}")
    elif not isinstance(value, str):
        raise FlowliteError(f"problem {source}: {field} has the unexpected value {value!r}")


def reward_dimension(reward) -> int | None:
    """The dimension a toy reward acts on (None when it does not say)."""
    for buffer in ("m", "b"):
        if hasattr(reward, buffer):
            return int(getattr(reward, buffer).shape[0])
    mixture = getattr(reward, "mixture", None)
    return mixture.dim if mixture is not None else None


def check_dimensions(base, reward, source: str) -> None:
    dim = reward_dimension(reward)
    if dim is not None and dim != base.dim:
        raise FlowliteError(f"problem {source}: the reward acts on dimension {dim} but the base mixture on "
                            f"{base.dim}; they must match")


def check_exact_target(problem, source: str) -> None:
    """The jobs measure against the exact tilt: the reward must have one in closed form and, at this β, it must be
    finite with positive-definite covariances."""
    reward = problem.reward
    if not getattr(reward, "has_closed_form_tilt", False):
        kind = reward.to_dict().get("type") if hasattr(reward, "to_dict") else type(reward).__name__
        raise FlowliteError(f"problem {source}: reward type {kind!r} has no closed-form tilt, and the jobs score "
                            "against the exact tilt; accepted reward types here: quadratic, linear")
    try:
        target = problem.target
        ok = all(torch.isfinite(t).all() for t in (target.weights, target.means, target.covs))
        ok = ok and bool((torch.linalg.eigvalsh(target.covs) > 0).all())
    except (ValueError, RuntimeError):  # torch.linalg errors are RuntimeErrors
        ok = False
    if not ok:
        problem.__dict__.pop("target", None)
        raise FlowliteError(f"problem {source}: the exact tilt at beta={problem.beta:g} is not finite or not "
                            "positive definite; use a smaller beta or a milder reward")
