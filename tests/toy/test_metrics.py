"""Metrics: near zero on exact samples (their noise floor), large on a visibly different law."""

import torch

from flowlite.toy.metrics import energy_distance, histogram_kl, mode_mass_error, noise_floor, sliced_w2
from flowlite.toy.problems import load_problem


def test_metrics_separate_the_base_from_its_tilt_far_beyond_the_noise_floor():
    problem = load_problem("kill")
    gen = torch.Generator().manual_seed(0)
    base_x = problem.base.sample(4000, generator=gen)
    target_x = problem.target.sample(4000, generator=gen)
    floor_mode = noise_floor(mode_mass_error, problem.target, n=4000, repeats=10)
    floor_kl = noise_floor(histogram_kl, problem.target, n=4000, repeats=10)
    assert floor_mode.mean < 0.02 and floor_kl.mean < 0.02
    # mode error of base samples against the target equals the exact TV between their weights (≈ 0.50)
    exact_tv = 0.5 * (problem.base.weights - problem.target.weights).abs().sum().item()
    assert abs(mode_mass_error(base_x, problem.target) - exact_tv) < 0.03
    assert histogram_kl(base_x, problem.target) > 20 * floor_kl.mean
    assert histogram_kl(target_x, problem.target) < 2 * floor_kl.mean
    assert energy_distance(base_x, target_x) > 50 * abs(energy_distance(target_x, problem.target.sample(4000)))


def test_sample_distances_are_zero_for_identical_laws_and_grow_with_a_shift():
    x = torch.randn(3000, 2)
    y = torch.randn(3000, 2)
    assert abs(energy_distance(x, y)) < 0.01
    shifted = [sliced_w2(x, y + d) for d in (0.0, 0.5, 1.0)]
    assert shifted[0] < shifted[1] < shifted[2]
    # in 1-D projections a shift d along a random unit direction u moves quantiles by d·(u·e)
    assert abs(sliced_w2(x, y + torch.tensor([1.0, 0.0]), projections=2000) - 0.707) < 0.1


def test_histogram_kl_floor_shrinks_like_one_over_n():
    target = load_problem("weak").target
    small = noise_floor(histogram_kl, target, n=2000, repeats=6).mean
    large = noise_floor(histogram_kl, target, n=8000, repeats=6).mean
    assert 2.5 < small / large < 6.0
