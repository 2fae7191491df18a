"""Benchmark problems: a base Gaussian mixture, a toy reward and β, read from ``data/problems/*.json``.

Each problem knows its exact KL-tilted target p* ∝ p_base exp(β r) (theory §9.2) and builds a ``ToyFlow`` on
either the exact base velocity or the shipped trained base MLP (``data/bases/<base_name>.safetensors``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from flowlite.errors import FlowliteError, check_beta
from flowlite.toy.flow import ExactMixtureVelocity, ToyFlow
from flowlite.toy.gmm import GaussianMixture
from flowlite.toy.nets import MLPVelocity
from flowlite.toy.problem_checks import check_dimensions, check_exact_target, check_name, check_numbers
from flowlite.toy.rewards import ToyReward, reward_from_dict

DATA_DIR = Path(os.environ.get("FLOWLITE_DATA", Path(__file__).resolve().parents[2] / "data"))
PROBLEM_DIR = DATA_DIR / "problems"
BASE_CHECKPOINT_DIR = DATA_DIR / "bases"  # trained base MLPs, one safetensors file per mixture
BASE_KINDS = ("exact", "mlp")


@dataclass
class Problem:
    name: str
    description: str
    base_name: str
    base: GaussianMixture
    reward: ToyReward
    beta: float
    extra: dict = field(default_factory=dict)

    @cached_property
    def target(self) -> GaussianMixture:
        """The exact KL-regularised optimum p* ∝ p_base exp(β r), as a mixture."""
        return self.base.tilt(self.reward, self.beta)

    def with_beta(self, beta: float) -> "Problem":
        return Problem(self.name, self.description, self.base_name, self.base, self.reward, check_beta(beta),
                       self.extra)

    @property
    def checkpoint_path(self) -> Path:
        return BASE_CHECKPOINT_DIR / f"{self.base_name}.safetensors"

    def base_velocity_module(self, kind: str = "exact"):
        """The frozen base: the exact mixture velocity, or the shipped trained MLP."""
        if kind == "exact":
            return ExactMixtureVelocity(self.base)
        if kind == "mlp":
            if not self.checkpoint_path.is_file():
                raise FlowliteError(f"no trained base for {self.base_name!r} at {self.checkpoint_path}; "
                                    f"run: python -m flowlite train-base --problem {self.name}")
            return MLPVelocity.load(self.checkpoint_path)
        raise FlowliteError(f"unknown base kind {kind!r}; accepted: {', '.join(BASE_KINDS)}")

    def flow(self, base: str = "exact", residual=None) -> ToyFlow:
        """A fine-tunable ToyFlow that starts exactly at the chosen base."""
        return ToyFlow(self.base_velocity_module(base), residual, dim=self.base.dim)


def list_problems() -> list[str]:
    return sorted(p.stem for p in PROBLEM_DIR.glob("*.json"))


def problem_from_dict(d: dict, source: str = "<dict>") -> Problem:
    """A problem from its JSON description, checked (``problem_checks``): finite numbers, matching dimensions,
    positive-definite covariances, safe names. Raises FlowliteError naming the field."""
    missing = [k for k in ("base", "reward", "beta") if k not in d]
    if missing:
        raise FlowliteError(f"problem {source} is missing the field(s) {', '.join(missing)}; "
                            "a problem needs 'base' (weights, means, covs), 'reward' and 'beta'")
    for key in ("base", "reward"):
        if not isinstance(d[key], dict):
            raise FlowliteError(f"problem {source}: {key} must be a JSON object")
        check_numbers(d[key], key, source)
    try:
        base = GaussianMixture.from_dict(d["base"])
        reward = reward_from_dict(d["reward"])
    except (KeyError, ValueError, TypeError, RuntimeError) as err:
        raise FlowliteError(f"problem {source} is malformed: {err}") from None
    check_dimensions(base, reward, source)
    name = check_name(d.get("name", Path(source).stem), "name", source)
    base_name = check_name(d.get("base_name", name), "base_name", source)
    if not isinstance(d.get("description", ""), str):
        raise FlowliteError(f"problem {source}: description must be a string")
    try:
        beta = check_beta(d["beta"])
    except FlowliteError as err:
        raise FlowliteError(f"problem {source}: {err}") from None
    return Problem(name, d.get("description", ""), base_name, base, reward, beta,
                   {k: v for k, v in d.items() if k not in {"name", "description", "base_name", "base", "reward",
                                                             "beta"}})


def load_problem(name_or_path: str | Path, beta: float | None = None, exact_target: bool = True) -> Problem:
    """Load a shipped problem by name (see :func:`list_problems`) or any JSON file by path. With ``exact_target``
    (what every job needs) the reward must tilt the base in closed form and the tilt must be finite."""
    path = Path(name_or_path)
    if path.suffix != ".json":
        path = PROBLEM_DIR / f"{name_or_path}.json"
    if not path.is_file():
        raise FlowliteError(f"unknown problem {str(name_or_path)!r}; accepted: {', '.join(list_problems())} "
                            "or a path to a .json file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"), parse_constant=_no_constant)
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError, RecursionError) as err:
        raise FlowliteError(f"problem file {path} is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise FlowliteError(f"problem file {path} must hold a JSON object")
    problem = problem_from_dict(data, str(path))
    problem = problem if beta is None else problem.with_beta(beta)
    if exact_target:
        check_exact_target(problem, str(path))
    return problem


def _no_constant(name: str):
    """JSON has no NaN or Infinity; Python's reader accepts them unless told not to."""
    raise ValueError(f"{name} is not a JSON number")
