"""Small networks of the 2-D world: an MLP velocity (base model, residual, value correction) and AC-Flow's MLP critic."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from flowlite.paths import batch_time
from flowlite.time_embedding import SinusoidalTimeEmbedding


class MLPVelocity(nn.Module):
    """v(x, t) = MLP([x, emb(t)]) with SiLU activations.

    ``zero_init=True`` zeroes the output layer so the network starts as the zero field: a residual on top of a
    frozen base then starts exactly at the base (theory §9.3). ``max_frequency`` bounds the time features: a base
    trained on continuous t can use high ones; a residual trained on a fixed time grid needs low ones, or it
    cannot interpolate between grid times.
    """

    def __init__(self, dim: int = 2, width: int = 256, depth: int = 4, time_dim: int = 32,
                 zero_init: bool = False, max_frequency: float = 64.0):
        super().__init__()
        self.config = {"dim": dim, "width": width, "depth": depth, "time_dim": time_dim, "zero_init": zero_init,
                       "max_frequency": max_frequency}
        self.time_embedding = SinusoidalTimeEmbedding(time_dim, max_frequency)
        layers: list[nn.Module] = []
        fan_in = dim + time_dim
        for _ in range(depth - 1):
            layers += [nn.Linear(fan_in, width), nn.SiLU()]
            fan_in = width
        self.hidden = nn.Sequential(*layers)
        self.out = nn.Linear(fan_in, dim)
        if zero_init:
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor, t: Tensor | float, cond=None) -> Tensor:
        t = batch_time(t, x)
        h = torch.cat([x, self.time_embedding(t)], dim=-1)
        return self.out(self.hidden(h))

    # --- weights on disk: safetensors with the architecture in the metadata (no pickle)
    def save(self, path: str | Path, extra_metadata: dict | None = None) -> None:
        meta = {"flowlite_config": json.dumps(self.config)}
        meta.update({k: str(v) for k, v in (extra_metadata or {}).items()})
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(path), metadata=meta)

    @classmethod
    def load(cls, path: str | Path) -> "MLPVelocity":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no weights file at {path}")
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        if "flowlite_config" not in meta:
            raise ValueError(f"{path} has no 'flowlite_config' metadata; was it saved by MLPVelocity.save?")
        net = cls(**json.loads(meta["flowlite_config"]))
        net.load_state_dict(load_file(str(path)))
        return net


class Critic(nn.Module):
    """V_φ(x, t) -> (B,): an MLP with LayerNorm on [x, emb(t)] (theory §7.2: "MLP layers with LayerNorm").

    Conditioning is ignored (toys); ``flowlite.sd3.nets.LatentCritic`` is its image-sized counterpart.
    """

    def __init__(self, dim: int = 2, width: int = 128, depth: int = 3, time_dim: int = 16,
                 max_frequency: float = 4.0):
        super().__init__()
        self.time_embedding = SinusoidalTimeEmbedding(time_dim, max_frequency)
        layers: list[nn.Module] = []
        fan_in = dim + time_dim
        for _ in range(depth - 1):
            layers += [nn.Linear(fan_in, width), nn.LayerNorm(width), nn.SiLU()]
            fan_in = width
        self.hidden = nn.Sequential(*layers)
        self.out = nn.Linear(fan_in, 1)

    def forward(self, x: Tensor, t: Tensor | float, cond=None) -> Tensor:
        t = batch_time(t, x)
        h = torch.cat([x.reshape(x.shape[0], -1), self.time_embedding(t)], dim=-1)
        return self.out(self.hidden(h)).squeeze(-1)
