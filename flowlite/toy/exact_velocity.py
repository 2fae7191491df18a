"""The exact flow-matching velocity of a Gaussian mixture as a module, fast in float32 (theory §9.3).

With Σ_k = U_k diag(λ_k) U_kᵀ, the path covariance S_k(t) = (1 - t)² I + t² Σ_k = U_k diag(s_k(t)) U_kᵀ with
s_k(t) = (1 - t)² + t² λ_k: one eigendecomposition per component, done once, serves every time. In the rotated
coordinates y_k = U_kᵀ(x - t μ_k) everything is elementwise:

    log w_k ∝ log π_k - ½ Σ_e [log s_ke + y_ke² / s_ke]      (normalised by log-sum-exp),
    v(x, t) = Σ_k w_k [μ_k + U_k ((t λ_k - (1 - t)) / s_k ⊙ y_k)].

With diagonal covariances (every shipped problem but ``weak``) U_k = I and the rotations are skipped. No inverse,
Cholesky factor or solve per call, and no float64: s_k(t) ≥ min(λ_k, 1)/2 > 0 for every t ∈ [0, 1],
so the float32 result stays within 1e-5 (relative) of ``GaussianMixture.velocity`` in float64, t = 1 included
(``tests/toy/test_exact_velocity.py``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from flowlite.toy.gmm import GaussianMixture


class ExactMixtureVelocity(nn.Module):
    """``forward(x, t) = v(x, t)``, the exact FM velocity of ``mixture`` on the linear path, in x's dtype.

    ``t`` is a float, a 0-d tensor or one time per row. The factors are kept in float64 and cast once per dtype;
    ``mixture`` stays available (in float64) for anything else.
    """

    def __init__(self, mixture: GaussianMixture):
        super().__init__()
        self.mixture = mixture.to(torch.float64)
        covs = self.mixture.covs
        k, d = covs.shape[:2]
        if torch.equal(covs, torch.diag_embed(torch.diagonal(covs, dim1=-2, dim2=-1))):
            lam, rot = torch.diagonal(covs, dim1=-2, dim2=-1), torch.eye(d, dtype=covs.dtype).expand(k, d, d)
        else:
            lam, rot = torch.linalg.eigh(covs)  # (K, d), (K, d, d): Σ_k = U_k diag(λ_k) U_kᵀ
        self.diagonal = bool((rot == torch.eye(d, dtype=covs.dtype)).all())  # then U_k = I: skip the rotations
        self._factors64 = {
            "log_weights": torch.log(self.mixture.weights),  # (K,)
            "means": self.mixture.means,  # (K, d)
            "lam": lam.reshape(1, k, d),
            "rot": rot.permute(1, 0, 2).reshape(d, k * d),  # x @ rot -> (U_kᵀ x)_k stacked
            "rot_means": torch.einsum("kde,kd->ke", rot, self.mixture.means).reshape(1, k, d),  # U_kᵀ μ_k
        }
        self._cache: dict = {}

    def _factors(self, dtype: torch.dtype, device) -> dict:
        key = (dtype, device)
        if key not in self._cache:
            self._cache[key] = {n: f.to(dtype=dtype, device=device) for n, f in self._factors64.items()}
        return self._cache[key]

    def forward(self, x: Tensor, t: Tensor | float, cond=None) -> Tensor:
        f = self._factors(x.dtype, x.device)
        n, (k, d) = x.shape[0], f["means"].shape
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).reshape(-1, 1, 1)  # (1|n, 1, 1)
        rotated = x.unsqueeze(1) if self.diagonal else (x @ f["rot"]).reshape(n, k, d)
        y = rotated - t * f["rot_means"]  # U_kᵀ(x - t μ_k)
        s = (1 - t) ** 2 + t**2 * f["lam"]
        w = torch.softmax(f["log_weights"] - 0.5 * (s.log() + y * y / s).sum(-1), dim=-1)  # (n, K)
        pulled = w.unsqueeze(-1) * ((t * f["lam"] - (1 - t)) / s) * y
        return w @ f["means"] + (pulled.sum(1) if self.diagonal else pulled.reshape(n, k * d) @ f["rot"].T)
