"""Figures for 2-D work: densities, samples, trajectories, vector fields, training curves (matplotlib)."""

from __future__ import annotations

from typing import Callable, Sequence

import matplotlib.pyplot as plt
import torch
from torch import Tensor

from flowlite.toy.gmm import GaussianMixture
from flowlite.toy.metrics import _grid_extent


def default_extent(*mixtures: GaussianMixture, pad: float = 3.0) -> tuple[float, float, float, float]:
    """A square-ish window holding every mixture's mass."""
    boxes = [_grid_extent(m, pad) for m in mixtures]
    return (min(b[0] for b in boxes), max(b[1] for b in boxes), min(b[2] for b in boxes), max(b[3] for b in boxes))


def grid_points(extent, n: int = 100) -> tuple[Tensor, Tensor, Tensor]:
    """(X, Y, points) for an n × n grid over extent = (x0, x1, y0, y1)."""
    xs = torch.linspace(extent[0], extent[1], n, dtype=torch.float64)
    ys = torch.linspace(extent[2], extent[3], n, dtype=torch.float64)
    gx, gy = torch.meshgrid(xs, ys, indexing="xy")
    return gx, gy, torch.stack([gx.reshape(-1), gy.reshape(-1)], -1)


def plot_density(ax, mixture: GaussianMixture, extent=None, levels: int = 8, filled: bool = True,
                 cmap: str = "Blues", **kw):
    """Contours of a mixture's density."""
    extent = extent or default_extent(mixture)
    gx, gy, pts = grid_points(extent, 120)
    dens = torch.exp(mixture.to(torch.float64).log_prob(pts)).reshape(gx.shape)
    draw = ax.contourf if filled else ax.contour
    cs = draw(gx.numpy(), gy.numpy(), dens.numpy(), levels=levels, cmap=cmap, **kw)
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.set_aspect("equal")
    return cs


def plot_samples(ax, x: Tensor, color: str = "k", size: float = 2.0, alpha: float = 0.4, label=None, **kw):
    x = x.detach().cpu()
    return ax.scatter(x[:, 0], x[:, 1], s=size, c=color, alpha=alpha, label=label, linewidths=0, **kw)


def plot_trajectories(ax, states: Tensor, n: int = 50, color: str = "tab:gray", alpha: float = 0.5, **kw):
    """Paths of the first n particles; ``states`` has shape (K+1, B, 2)."""
    s = states.detach().cpu()[:, :n]
    for i in range(s.shape[1]):
        ax.plot(s[:, i, 0], s[:, i, 1], color=color, alpha=alpha, lw=0.7, **kw)
    ax.scatter(s[0, :, 0], s[0, :, 1], s=6, c="tab:blue", zorder=3, label="x0")
    ax.scatter(s[-1, :, 0], s[-1, :, 1], s=6, c="tab:red", zorder=3, label="x1")


def plot_vector_field(ax, field: Callable[[Tensor], Tensor], extent, n: int = 20, color: str = "k", **kw):
    """Quiver plot of field(points) on an n × n grid."""
    gx, gy, pts = grid_points(extent, n)
    with torch.no_grad():
        v = field(pts.to(torch.get_default_dtype())).to(torch.float64)
    ax.quiver(gx.numpy(), gy.numpy(), v[:, 0].reshape(gx.shape).numpy(), v[:, 1].reshape(gx.shape).numpy(),
              color=color, **kw)
    ax.set_aspect("equal")


def plot_curves(ax, history: Sequence[dict], keys: Sequence[str], x: str = "step", logy: bool = False):
    """Training curves from a ``TrainResult.history`` (or rows read from metrics.csv)."""
    for key in keys:
        pts = [(row[x], row[key]) for row in history if key in row]
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, label=key)
    ax.set_xlabel(x)
    if logy:
        ax.set_yscale("log")
    ax.legend()


def compare_panels(mixtures: dict[str, GaussianMixture], samples: dict[str, Tensor] | None = None,
                   extent=None, title: str | None = None, size: float = 3.2):
    """One panel per named density, with the matching samples (if given) scattered on top."""
    extent = extent or default_extent(*mixtures.values())
    fig, axes = plt.subplots(1, len(mixtures), figsize=(size * len(mixtures), size), squeeze=False)
    for ax, (name, mix) in zip(axes[0], mixtures.items()):
        plot_density(ax, mix, extent)
        if samples and name in samples:
            plot_samples(ax, samples[name][:2000], color="tab:orange", size=1.5)
        ax.set_title(name)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig, axes[0]
