"""SD3's σ ↔ t conversion and its shifted grid (theory §1.2), the only place paper time meets σ."""

import torch

from flowlite.sd3.sigma import shift_sigma, shifted_grid, sigma_from_time, time_from_sigma
from flowlite.solvers import uniform_grid


def test_sd3_conversion_and_shift():
    t = torch.tensor([0.0, 0.3, 1.0])
    assert torch.allclose(time_from_sigma(sigma_from_time(t)), t)
    assert torch.allclose(shift_sigma(torch.tensor([0.0, 0.5, 1.0]), 3.0), torch.tensor([0.0, 0.75, 1.0]))


def test_time_grids_are_explicit_and_sd3_grid_is_shifted():
    grid = shifted_grid(20, shift=3.0)
    assert grid[0] == 0 and grid[-1] == 1 and (grid[1:] > grid[:-1]).all()
    # shift 3 spends more steps near noise (small t) than the uniform grid
    assert (grid[1:-1] < uniform_grid(20)[1:-1]).all()
