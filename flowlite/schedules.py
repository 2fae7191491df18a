"""Noise schedules of the linear path's SDEs and their one-step discretisations (theory §3.2, §3.3).

Every SDE here has the base marginals, dX = [v + ½σ(t)² ∇log p_t] dt + σ(t) dB, and with
∇log p_t = -(x - t v)/(1 - t) its drift is affine in (x, v). So is every step we use:

    x_{k+1} = state_gain · x_k + velocity_gain · v(x_k, t_k) + noise_std · z_k,

a :class:`StepCoefficients`. One sampler (``solvers.solve_sde``) and one lean adjoint (``adjoint.lean_adjoint``)
serve every schedule through these three numbers.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

from flowlite.paths import memoryless_sigma


class StepCoefficients(NamedTuple):
    """x_u = state_gain·x_t + velocity_gain·v(x_t, t) + noise_std·z for one step from t to u."""

    state_gain: float
    velocity_gain: float
    noise_std: float


class NoiseSchedule:
    """σ(t) and its discretisation. ``control_gain`` is κ(t) = 1 + σ²t / (2(1 - t)): a change of velocity Δv
    changes the drift by κΔv, so the control is u = κ Δv / σ (κ = 2 for the memoryless schedule, theory §3.2)."""

    name = "schedule"

    def sigma(self, t: float) -> float:
        raise NotImplementedError

    def step_coefficients(self, t: float, u: float) -> StepCoefficients:
        raise NotImplementedError

    def control_gain(self, t: float) -> float:
        sig = self.sigma(t)
        return 1.0 + (sig**2 * t / (2 * (1 - t)) if sig else 0.0)


class Memoryless(NoiseSchedule):
    """σ(t) = c·sqrt(2(1 - t)/t), drift (1 + c²)v - c²x/t, discretised with the exponential integrator
    (theory §3.3). c = 1 is Adjoint Matching's memoryless schedule; every c > 0 forgets X0 (theory §3.4)."""

    def __init__(self, scale: float = 1.0):
        if scale < 0:
            raise ValueError(f"scale must be >= 0, got {scale}")
        self.scale = float(scale)
        self.name = "memoryless" if scale == 1.0 else f"memoryless(c={scale:g})"

    def sigma(self, t: float) -> float:
        return float(memoryless_sigma(t, scale=self.scale)) if t > 0 else math.inf

    def control_gain(self, t: float) -> float:
        return 1.0 + self.scale**2

    def step_coefficients(self, t: float, u: float) -> StepCoefficients:
        return exponential_integrator_coefficients(t, u, self.scale)


class EulerMaruyama(NoiseSchedule):
    """Any σ(t), discretised by Euler–Maruyama: state_gain = 1 - hσ²/(2(1 - t)),
    velocity_gain = h(1 + σ²t/(2(1 - t))), noise_std = σ√h.

    ``EulerMaruyama.constant(0.5)`` is the constant-σ negative control (keeps memory of X0);
    ``EulerMaruyama.memoryless(offset=h)`` is the memoryless σ with the (t + h) offset, kept to show its bias.
    """

    def __init__(self, sigma: Callable[[float], float], name: str = "euler-maruyama"):
        self._sigma = sigma
        self.name = name

    @classmethod
    def constant(cls, sigma: float) -> "EulerMaruyama":
        return cls(lambda t: sigma, name=f"constant(σ={sigma:g})")

    @classmethod
    def memoryless(cls, offset: float) -> "EulerMaruyama":
        return cls(lambda t: float(memoryless_sigma(t, offset=offset)), name="memoryless-euler-maruyama")

    def sigma(self, t: float) -> float:
        return float(self._sigma(t))

    def step_coefficients(self, t: float, u: float) -> StepCoefficients:
        h, sig = u - t, self.sigma(t)
        if sig == 0.0:
            return StepCoefficients(1.0, h, 0.0)
        half_var = sig**2 / (2 * (1 - t))
        return StepCoefficients(1.0 - h * half_var, h * (1.0 + half_var * t), sig * math.sqrt(h))


def exponential_integrator_coefficients(t: float, u: float, scale: float = 1.0) -> StepCoefficients:
    """One exponential-integrator step of the memoryless-family SDE (theory §3.3).

    SDE: dX = [(1 + p) v - p X/t] dt + sqrt(2p(1 - t)/t) dB with p = scale² (p = 1: memoryless; p = 0: ODE).
    Integrating -pX/t and the noise exactly with v frozen on [t, u]:
        state_gain = (t/u)^p,   velocity_gain = (u^{p+1} - t^{p+1}) / u^p,
        noise_std² = (2p / u^{2p}) [F(u) - F(t)],   F(r) = r^{2p}/(2p) - r^{2p+1}/(2p+1).
    Well defined at t = 0 (state_gain = 0: X_u forgets X_0).
    """
    p = float(scale) ** 2
    if p == 0.0:
        return StepCoefficients(1.0, u - t, 0.0)
    state_gain = (t / u) ** p
    velocity_gain = (u ** (p + 1) - t ** (p + 1)) / u**p

    def big_f(r: float) -> float:
        return r ** (2 * p) / (2 * p) - r ** (2 * p + 1) / (2 * p + 1)

    var = (2 * p / u ** (2 * p)) * (big_f(u) - big_f(t))
    return StepCoefficients(state_gain, velocity_gain, math.sqrt(max(var, 0.0)))
