"""Per-method settings for SD3, as data keyed by the registry's method names (theory §5.3, §6.6, §6.8, §7.4, §8).

Every registered method has a recipe (``tests/sd3/test_recipes.py`` checks it). A recipe gives the learning rate,
β per reward (None for methods without a KL term), the method's own options, and its source: a paper, the official
code, or, where nothing is published, how the value was derived. :func:`method_options` adds what makes a method fit a
small budget (a few trajectories, a few solver steps).
"""

from __future__ import annotations

from torch import Tensor

_AM_SOURCE = ("AM paper App. G via theory §5.3 (Adam lr 2e-5, betas (0.95, 0.999), wd 1e-2, clip 1; time subset: "
              "last 25% of steps + 10 earlier); beta = reward multiplier of AM on SD3 in the VGG paper, theory §6.8")
_AM_BETA = {"aesthetic": 5e3, "pickscore": 1e4, "clipscore": 1e4}
_AM_OPTIONS = {"time_subset": "recipe", "late_fraction": 0.25, "n_early": 10}
_BASELINE_LR = 1e-4  # the VGG paper's baselines on SD3 (theory §6.8)

RECIPES: dict[str, dict] = {
    "adjoint-matching": {
        "source": _AM_SOURCE, "lr": 2e-5, "adam_betas": (0.95, 0.999), "beta": _AM_BETA, "options": _AM_OPTIONS},
    "non-memoryless-control": {
        "source": "negative control: Adjoint Matching's recipe with constant sigma = 0.5 (theory §3.4); derived",
        "lr": 2e-5, "adam_betas": (0.95, 0.999), "beta": _AM_BETA, "options": _AM_OPTIONS},
    "vgg-flow": {
        "source": "VGG-Flow paper, theory §6.6 (lr 5e-4, AdamW (0.9, 0.999) wd 1e-2, clip 1, eta_t = t^2, boundary "
                  "coefficient 1e4; beta = 1/lambda: aesthetic 5e4, PickScore 5e5)",
        "lr": 5e-4, "beta": {"aesthetic": 5e4, "pickscore": 5e5, "clipscore": 5e5},
        "options": {"eta_schedule": "quadratic", "alpha": 1e4}},
    "vgg-flow-pmp": {
        "source": "VGG-Flow-PMP (theory §6.9): no published SD3 recipe; VGG-Flow's beta (same objective) with "
                  "Adjoint Matching's optimiser and time subset; derived",
        "lr": 2e-5, "adam_betas": (0.95, 0.999), "beta": {"aesthetic": 5e4, "pickscore": 5e5, "clipscore": 5e5},
        "options": _AM_OPTIONS},
    "ac-flow": {
        "source": "no published SD3 recipe (theory §7.4 is a reconstruction): lr 1e-4 as the VGG paper's baselines "
                  "(theory §6.8), temperature 1 on batch-standardised rewards, critic warm-up 50 of 400 updates",
        "lr": _BASELINE_LR, "beta": None, "options": {"warmup": 50, "temperature": 1.0}},
    "rwr": {
        "source": "offline reward-weighted regression (theory §7.3): lr 1e-4 as the VGG paper's baselines; beta as "
                  "Adjoint Matching's (both aim at the tilt); derived",
        "lr": _BASELINE_LR, "beta": _AM_BETA, "options": {}},
    "orw": {
        "source": "ORW-CFM-W2 (theory §7.3): alpha = 1 as its code's default; lr 1e-4 as the VGG paper's baselines; "
                  "beta as Adjoint Matching's; derived",
        "lr": _BASELINE_LR, "beta": _AM_BETA, "options": {"alpha": 1.0}},
    "refl": {
        "source": "VGG paper's ReFL baseline on SD3, theory §6.8/§8: truncation step 15-20 of 20, lr 1e-4, no KL",
        "lr": _BASELINE_LR, "beta": None, "options": {"late_fraction": (0.75, 1.0)}},
    "draft": {
        "source": "DRaFT-1 (K = 1, theory §8), lr 1e-4 as the VGG paper's baselines (theory §6.8), no KL",
        "lr": _BASELINE_LR, "beta": None, "options": {"k": 1}},
}
"""CLIPScore is 100·cos like PickScore (same scale), so it takes PickScore's β (derived, not from a paper)."""

SMALL_BUDGET: dict[str, dict] = {"ac-flow": {"n_times": 2}}
"""Options that keep a method cheap on a tiny model (fewer intermediate states per trajectory)."""


def method_options(name: str, batch_size: int, solver_steps: int, grid: Tensor | None = None, cond=None) -> dict:
    """The keyword arguments every method takes on SD3 (batch, grid, conditioning) plus the small-budget ones: offline
    RWR samples two batches' worth of base images with the training sampler's steps."""
    options: dict = {"batch_size": batch_size, "solver_steps": solver_steps, "cond": cond,
                     **SMALL_BUDGET.get(name, {})}
    if grid is not None:
        options["grid"] = grid
    if name == "rwr":
        options.update(n_samples=2 * batch_size, sampling_steps=solver_steps)
    return options
