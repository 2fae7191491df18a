"""Shared test helpers: compare samples with a known mixture against the metric's noise floor."""

import torch

from flowlite.toy.metrics import histogram_kl, mode_mass_error, noise_floor

_FLOORS: dict = {}


def floor(metric, mixture, n):
    key = (metric.__name__, id(mixture), n)
    if key not in _FLOORS:
        _FLOORS[key] = noise_floor(metric, mixture, n=n, repeats=20, seed=123).mean
    return _FLOORS[key]


def averaged_metrics(sampler, mixture, n=4000, batches=4, seed=0):
    """Mode error and KL averaged over independent batches of n samples (sampler(n, generator) -> (n, d)),
    next to the floors of the same metrics at n: averaging keeps a 2× floor bound from failing by chance."""
    gen = torch.Generator().manual_seed(seed)
    xs = [sampler(n, gen) for _ in range(batches)]
    mode = sum(mode_mass_error(x, mixture) for x in xs) / batches
    kl = sum(histogram_kl(x, mixture) for x in xs) / batches
    return {"mode_error": mode, "kl": kl,
            "mode_floor": floor(mode_mass_error, mixture, n), "kl_floor": floor(histogram_kl, mixture, n)}
TINY_PROMPTS = ["a photo of a cat", "a red square"]  # the tiny SD3 fixtures encode these
