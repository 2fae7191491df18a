"""Distances between samples and a known 2-D target, and their noise floors (theory §9.4, §10).

* ``mode_mass_error``: total variation between the target's component weights and the mean posterior
  responsibilities of the samples under the target. Unbiased for overlapping modes; floor ∝ 1/√n.
* ``histogram_kl``: KL(target ‖ model) with the model density a Gaussian-smoothed histogram and the target
  convolved with the same kernel (again a mixture), both on the same grid. Floor ∝ 1/n.
* ``energy_distance`` and ``sliced_w2``: sample-to-sample distances (noisy on multimodal targets).
* ``noise_floor``: a metric's value on exact samples of the target, mean ± std over repeats.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from flowlite.toy.gmm import GaussianMixture


def mode_mass_error(samples: Tensor, target: GaussianMixture) -> float:
    """½ Σ_k |π_k - mean_i w_k(x_i)|, with w_k the target's responsibilities."""
    resp = target.responsibilities(samples.detach().to(target.means.dtype)).mean(0)
    return 0.5 * (resp - target.weights).abs().sum().item()


def mode_weights(samples: Tensor, target: GaussianMixture) -> Tensor:
    """Mean posterior responsibilities of the samples under the target's components, shape (K,)."""
    return target.responsibilities(samples.detach().to(target.means.dtype)).mean(0)


def _grid_extent(target: GaussianMixture, pad: float = 4.0) -> tuple[float, float, float, float]:
    std = torch.sqrt(torch.diagonal(target.covs, dim1=-2, dim2=-1)).max().item()
    lo = (target.means.min(0).values - pad * std - 1.0).tolist()
    hi = (target.means.max(0).values + pad * std + 1.0).tolist()
    return lo[0], hi[0], lo[1], hi[1]


def histogram_kl(samples: Tensor, target: GaussianMixture, bins: int = 80, bandwidth: float = 0.2,
                 extent: tuple[float, float, float, float] | None = None) -> float:
    """KL(target * k ‖ model histogram * k) on a bins × bins grid, k = N(0, bandwidth² I) (2-D only)."""
    if target.dim != 2:
        raise ValueError("histogram_kl is defined for 2-D targets only")
    x = samples.detach().to(torch.float64)
    x0, x1, y0, y1 = extent or _grid_extent(target)
    dx, dy = (x1 - x0) / bins, (y1 - y0) / bins
    cx = x0 + dx * (torch.arange(bins, dtype=torch.float64) + 0.5)
    cy = y0 + dy * (torch.arange(bins, dtype=torch.float64) + 0.5)
    # model: histogram (samples outside the grid are dropped, a loss of mass the KL then penalises)
    ix = torch.floor((x[:, 0] - x0) / dx).long()
    iy = torch.floor((x[:, 1] - y0) / dy).long()
    inside = (ix >= 0) & (ix < bins) & (iy >= 0) & (iy < bins)
    hist = torch.zeros(bins * bins, dtype=torch.float64)
    hist.index_add_(0, ix[inside] * bins + iy[inside], torch.ones(int(inside.sum()), dtype=torch.float64))
    hist = hist.reshape(bins, bins) / x.shape[0]
    # smooth with a separable Gaussian kernel (the same kernel the target is convolved with below)
    kx = torch.exp(-0.5 * ((cx[:, None] - cx[None, :]) / bandwidth) ** 2)
    ky = torch.exp(-0.5 * ((cy[:, None] - cy[None, :]) / bandwidth) ** 2)
    kx, ky = kx / (kx.sum(0, keepdim=True)), ky / (ky.sum(0, keepdim=True))
    model = kx @ hist @ ky.T
    smoothed = GaussianMixture(target.weights, target.means,
                               target.covs + bandwidth**2 * torch.eye(2, dtype=target.covs.dtype),
                               dtype=torch.float64)
    gx, gy = torch.meshgrid(cx, cy, indexing="ij")
    p = torch.exp(smoothed.log_prob(torch.stack([gx.reshape(-1), gy.reshape(-1)], -1))).reshape(bins, bins)
    p = p / p.sum()
    q = model.clamp_min(1e-12)
    return float((p * (torch.log(p.clamp_min(1e-300)) - torch.log(q))).sum())


def energy_distance(x: Tensor, y: Tensor, max_samples: int = 4000) -> float:
    """Energy distance 2E|X - Y| - E|X - X'| - E|Y - Y'| (≥ 0, zero iff the laws are equal)."""
    x, y = x.detach()[:max_samples].to(torch.float64), y.detach()[:max_samples].to(torch.float64)
    xy = torch.cdist(x, y).mean()
    xx = torch.cdist(x, x).sum() / (x.shape[0] * (x.shape[0] - 1))
    yy = torch.cdist(y, y).sum() / (y.shape[0] * (y.shape[0] - 1))
    return float(2 * xy - xx - yy)


def sliced_w2(x: Tensor, y: Tensor, projections: int = 256, generator: torch.Generator | None = None) -> float:
    """Sliced 2-Wasserstein distance over random unit directions (needs equal sample counts)."""
    n = min(x.shape[0], y.shape[0])
    x, y = x.detach()[:n].to(torch.float64), y.detach()[:n].to(torch.float64)
    dirs = torch.randn(projections, x.shape[1], generator=generator, dtype=torch.float64)
    dirs = dirs / dirs.norm(dim=1, keepdim=True)
    px, _ = torch.sort(x @ dirs.T, dim=0)
    py, _ = torch.sort(y @ dirs.T, dim=0)
    return float(torch.sqrt(((px - py) ** 2).mean()))


@dataclass
class RewardStats:
    mean: float
    std: float
    stderr: float


def reward_stats(reward, samples: Tensor, cond=None) -> RewardStats:
    """Mean, standard deviation and standard error of the reward over samples."""
    with torch.no_grad():
        r = reward(samples, cond).to(torch.float64)
    std = r.std().item() if r.numel() > 1 else 0.0
    return RewardStats(r.mean().item(), std, std / math.sqrt(max(r.numel(), 1)))


def score(samples: Tensor, target: GaussianMixture, reward=None, base: GaussianMixture | None = None,
          tilt_samples: Tensor | None = None) -> dict[str, float]:
    """The one scorer of 2-D samples (theory §10), used by ``finetune``'s job, the bench, the tests and the notebooks:

    * ``mean_reward`` (with ``reward``): the mean of r over the samples;
    * ``mode_error``: per-mode mass error against ``target`` (the exact tilt, or whichever law the samples aim at);
    * ``kl_to_tilt``: smoothed-histogram KL(target ‖ samples);
    * ``kl_to_base`` (with ``base``): the same against the base mixture;
    * ``energy_to_tilt`` (with ``tilt_samples``, exact samples of the target): the energy distance.
    """
    out = {}
    if reward is not None:
        out["mean_reward"] = reward_stats(reward, samples).mean
    out["mode_error"] = mode_mass_error(samples, target)
    out["kl_to_tilt"] = histogram_kl(samples, target)
    if base is not None:
        out["kl_to_base"] = histogram_kl(samples, base)
    if tilt_samples is not None:
        out["energy_to_tilt"] = energy_distance(samples, tilt_samples)
    return out


@dataclass
class NoiseFloor:
    mean: float
    std: float

    def __str__(self) -> str:
        return f"{self.mean:.4f} ± {self.std:.4f}"


def noise_floor(metric: Callable[[Tensor, GaussianMixture], float], target: GaussianMixture, n: int = 4000,
                repeats: int = 10, seed: int = 0) -> NoiseFloor:
    """A metric's value on n exact samples of the target (mean ± std over repeats): below it, differences are
    noise. For a two-sample metric pass ``lambda x, tgt: energy_distance(x, tgt.sample(len(x)))``."""
    gen = torch.Generator().manual_seed(seed)
    vals = torch.tensor([metric(target.sample(n, generator=gen), target) for _ in range(repeats)],
                        dtype=torch.float64)
    return NoiseFloor(vals.mean().item(), vals.std().item() if repeats > 1 else 0.0)
