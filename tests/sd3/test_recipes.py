"""Recipes are data keyed by the registry; SD3Flow supplies the value networks sized for latents."""

import torch

from flowlite import METHODS, SD3Flow
from flowlite.sd3 import RECIPES, method_options
from flowlite.sd3.nets import LatentCorrection, LatentCritic


def test_every_registered_method_has_a_recipe_with_a_source_and_beta_only_where_it_applies():
    from flowlite.methods import takes_beta

    assert set(RECIPES) == set(METHODS)
    for name, recipe in RECIPES.items():
        assert recipe["source"] and recipe["lr"] > 0
        assert (recipe["beta"] is not None) == takes_beta(name), name


def test_method_options_are_keywords_every_method_accepts():
    for name in METHODS:
        options = method_options(name, batch_size=2, solver_steps=4)
        assert options["batch_size"] == 2 and options["solver_steps"] == 4


def test_sd3_flow_supplies_latent_value_networks(tiny_sd3):
    pipe, cond = tiny_sd3
    flow = SD3Flow(pipe.transformer, (16, 8, 8), guidance_scale=1.0)
    try:
        critic, correction = flow.make_critic(cond), flow.make_value_correction(cond)
        x, t = torch.randn(2, 16, 8, 8), torch.rand(2)
        assert isinstance(critic, LatentCritic) and critic(x, t, cond).shape == (2,)
        assert isinstance(correction, LatentCorrection) and torch.equal(correction(x, t), torch.zeros_like(x))
    finally:
        pipe.transformer.delete_adapters("default")
