"""Gaussian mixtures: the 2-D world where every target is known in closed form (theory §9).

``GaussianMixture`` samples, evaluates log-density and score, gives the *exact* flow-matching velocity of
the linear path (theory §9.3) and tilts itself by exp(β r) for quadratic and linear rewards (theory §9.2).
The exact optimal fine-tuned velocity is therefore ``base.tilt(reward, beta).velocity``.
"""

from __future__ import annotations

import math
import torch
from torch import Tensor


def _as_tensor(value, dtype: torch.dtype) -> Tensor:
    if isinstance(value, (list, tuple)) and any(torch.is_tensor(v) for v in value):
        return torch.stack([torch.as_tensor(v, dtype=dtype) for v in value])
    return torch.as_tensor(value, dtype=dtype)


def _time_column(t: Tensor | float, n: int, like: Tensor) -> Tensor:
    t = torch.as_tensor(t, dtype=like.dtype, device=like.device)
    return (t.expand(n) if t.ndim == 0 else t).reshape(n, 1)


class GaussianMixture:
    """p(x) = Σ_k π_k N(x; μ_k, Σ_k) in R^d.

    Args:
        weights: (K,) non-negative, normalised here.
        means: (K, d).
        covs: (K, d, d) symmetric positive definite.
    """

    def __init__(self, weights, means, covs, dtype: torch.dtype | None = None):
        dtype = dtype or torch.get_default_dtype()
        weights, means, covs = (_as_tensor(a, dtype) for a in (weights, means, covs))
        if means.ndim != 2:
            raise ValueError(f"means must have shape (K, d), got {tuple(means.shape)}")
        k, d = means.shape
        if weights.shape != (k,):
            raise ValueError(f"weights must have shape ({k},) to match means, got {tuple(weights.shape)}")
        if covs.shape != (k, d, d):
            raise ValueError(f"covs must have shape ({k}, {d}, {d}), got {tuple(covs.shape)}")
        if not torch.isfinite(weights).all() or (weights < 0).any() or weights.sum() <= 0:
            raise ValueError(f"weights must be finite, non-negative and not all zero, got {weights.tolist()}")
        if not (torch.isfinite(means).all() and torch.isfinite(covs).all()):
            raise ValueError("means and covs must be finite")
        if not torch.allclose(covs, covs.transpose(-1, -2), atol=1e-6):
            raise ValueError("covs must be symmetric")
        if (torch.linalg.eigvalsh(covs) <= 0).any():
            raise ValueError("covs must be positive definite")
        self.weights = weights / weights.sum()
        self.means = means
        self.covs = covs

    # ------------------------------------------------------------------ basics
    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def to(self, dtype: torch.dtype | None = None, device=None) -> "GaussianMixture":
        kw = {"dtype": dtype, "device": device}
        out = GaussianMixture.__new__(GaussianMixture)
        out.weights, out.means, out.covs = (a.to(**kw) for a in (self.weights, self.means, self.covs))
        out.weights = out.weights / out.weights.sum()  # renormalise in the new precision
        return out

    def to_dict(self) -> dict:
        return {"weights": self.weights.tolist(), "means": self.means.tolist(), "covs": self.covs.tolist()}

    @classmethod
    def from_dict(cls, d: dict, dtype: torch.dtype | None = None) -> "GaussianMixture":
        return cls(d["weights"], d["means"], d["covs"], dtype=dtype)

    def __repr__(self) -> str:
        w = ", ".join(f"{x:.3f}" for x in self.weights.tolist())
        return f"GaussianMixture(K={self.n_components}, d={self.dim}, weights=[{w}])"

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n independent samples, shape (n, d)."""
        comp = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=self.means.dtype)
        chol = torch.linalg.cholesky(self.covs)
        return self.means[comp] + (chol[comp] @ z.unsqueeze(-1)).squeeze(-1)

    # ------------------------------------------------------------------ densities
    @staticmethod
    def _gaussian_log_prob(x: Tensor, means: Tensor, covs: Tensor) -> Tensor:
        """log N(x; μ, Σ) for x (n, d) against means (n|1, K, d), covs (n|1, K, d, d) -> (n, K)."""
        d = x.shape[-1]
        diff = x.unsqueeze(1) - means
        chol = torch.linalg.cholesky(covs)
        sol = torch.linalg.solve_triangular(chol, diff.unsqueeze(-1), upper=False).squeeze(-1)
        logdet = 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
        return -0.5 * (d * math.log(2 * math.pi) + logdet + (sol**2).sum(-1))

    def component_log_probs(self, x: Tensor) -> Tensor:
        """log π_k + log N(x; μ_k, Σ_k), shape (n, K)."""
        x = x.to(self.means.dtype)
        return torch.log(self.weights) + self._gaussian_log_prob(x, self.means.unsqueeze(0), self.covs.unsqueeze(0))

    def log_prob(self, x: Tensor) -> Tensor:
        """log p(x), shape (n,)."""
        return torch.logsumexp(self.component_log_probs(x), dim=-1)

    def responsibilities(self, x: Tensor) -> Tensor:
        """Posterior component probabilities w_k(x) = π_k N(x; μ_k, Σ_k) / p(x), shape (n, K)."""
        return torch.softmax(self.component_log_probs(x), dim=-1)

    def score(self, x: Tensor) -> Tensor:
        """∇ log p(x) = -Σ_k w_k Σ_k⁻¹ (x - μ_k), shape (n, d)."""
        x = x.to(self.means.dtype)
        w = self.responsibilities(x)
        diff = x.unsqueeze(1) - self.means
        prec_diff = torch.linalg.solve(self.covs.unsqueeze(0), diff.unsqueeze(-1)).squeeze(-1)
        return -(w.unsqueeze(-1) * prec_diff).sum(1)

    # ------------------------------------------------------------------ the linear path
    def marginal(self, t: float) -> "GaussianMixture":
        """p_t = Σ_k π_k N(t μ_k, (1 - t)² I + t² Σ_k) for a scalar t (theory §9.3)."""
        eye = torch.eye(self.dim, dtype=self.covs.dtype)
        return GaussianMixture(self.weights, t * self.means, (1 - t) ** 2 * eye + t**2 * self.covs,
                               dtype=self.means.dtype)

    def _path_terms(self, x: Tensor, t: Tensor | float):
        """Responsibilities and the S_k(t)⁻¹(x - t μ_k) terms shared by velocity, posterior and score."""
        x = x.to(self.means.dtype)
        n = x.shape[0]
        tt = _time_column(t, n, x)  # (n, 1)
        t3 = tt.reshape(n, 1, 1, 1)
        eye = torch.eye(self.dim, dtype=x.dtype, device=x.device)
        cov_t = (1 - t3) ** 2 * eye + t3**2 * self.covs.unsqueeze(0)  # (n, K, d, d)
        mean_t = tt.unsqueeze(-1) * self.means.unsqueeze(0)  # (n, K, d)
        logw = torch.log(self.weights) + self._gaussian_log_prob(x, mean_t, cov_t)
        w = torch.softmax(logw, dim=-1)
        solved = torch.linalg.solve(cov_t, (x.unsqueeze(1) - mean_t).unsqueeze(-1)).squeeze(-1)  # (n, K, d)
        return w, solved, t3, eye

    def velocity(self, x: Tensor, t: Tensor | float) -> Tensor:
        """Exact FM velocity v(x, t) = Σ_k w_k [μ_k + (tΣ_k - (1 - t)I) S_k⁻¹ (x - tμ_k)]  (theory §9.3)."""
        w, solved, t3, eye = self._path_terms(x, t)
        gain = t3 * self.covs.unsqueeze(0) - (1 - t3) * eye
        per_comp = self.means.unsqueeze(0) + (gain @ solved.unsqueeze(-1)).squeeze(-1)
        return (w.unsqueeze(-1) * per_comp).sum(1)

    def path_score(self, x: Tensor, t: Tensor | float) -> Tensor:
        """∇ log p_t(x) = -Σ_k w_k S_k⁻¹ (x - t μ_k)."""
        w, solved, _, _ = self._path_terms(x, t)
        return -(w.unsqueeze(-1) * solved).sum(1)

    def posterior(self, x: Tensor, t: Tensor | float) -> tuple[Tensor, Tensor, Tensor]:
        """Law of x1 given x_t = x: a mixture with weights w_k, means μ_k + tΣ_k S_k⁻¹(x - tμ_k) and
        covariances Σ_k - t² Σ_k S_k⁻¹ Σ_k. Returns (w (n,K), means (n,K,d), covs (n,K,d,d))."""
        w, solved, t3, eye = self._path_terms(x, t)
        covs = self.covs.unsqueeze(0)
        means = self.means.unsqueeze(0) + t3.squeeze(-1) * (covs @ solved.unsqueeze(-1)).squeeze(-1)
        n = x.shape[0]
        cov_t = (1 - t3) ** 2 * eye + t3**2 * covs
        post_cov = covs - t3**2 * covs @ torch.linalg.solve(cov_t, covs.expand(n, -1, -1, -1))
        return w, means, post_cov

    # ------------------------------------------------------------------ tilts (theory §9.2)
    def tilt(self, reward, beta: float) -> "GaussianMixture":
        """The mixture ∝ p(x)·exp(β r(x)), in closed form when the reward allows it (``reward.tilt``, a ``ToyReward``
        of ``flowlite.toy.rewards``)."""
        return reward.tilt(self, beta)

    def tilt_quadratic(self, A, m, beta: float) -> "GaussianMixture":
        """Tilt by exp(-β/2 (x - m)ᵀA(x - m)): Σ' = (Σ⁻¹ + B)⁻¹, μ' = Σ'(Σ⁻¹μ + Bm),
        π' ∝ π |I + ΣB|^{-1/2} exp(-½ (μ - m)ᵀ B (I + ΣB)⁻¹ (μ - m)), with B = βA (valid for singular A)."""
        dt = self.means.dtype
        B = beta * torch.as_tensor(A, dtype=dt)
        m = torch.as_tensor(m, dtype=dt)
        eye = torch.eye(self.dim, dtype=dt)
        prec = torch.linalg.inv(self.covs)
        new_covs = torch.linalg.inv(prec + B)
        new_covs = 0.5 * (new_covs + new_covs.transpose(-1, -2))
        new_means = (new_covs @ (prec @ self.means.unsqueeze(-1) + (B @ m).reshape(1, -1, 1))).squeeze(-1)
        i_plus = eye + self.covs @ B
        diff = (self.means - m).unsqueeze(-1)
        quad = (diff.transpose(-1, -2) @ B @ torch.linalg.solve(i_plus, diff)).reshape(-1)
        log_z = -0.5 * torch.linalg.slogdet(i_plus).logabsdet - 0.5 * quad
        new_weights = torch.softmax(torch.log(self.weights) + log_z, dim=0)
        return GaussianMixture(new_weights, new_means, new_covs, dtype=dt)

    def tilt_linear(self, b, beta: float) -> "GaussianMixture":
        """Tilt by exp(β bᵀx): μ' = μ + βΣb, Σ' = Σ, π' ∝ π exp(β bᵀμ + ½β² bᵀΣb)."""
        dt = self.means.dtype
        b = torch.as_tensor(b, dtype=dt)
        cov_b = self.covs @ b
        new_means = self.means + beta * cov_b
        log_z = beta * self.means @ b + 0.5 * beta**2 * cov_b @ b
        new_weights = torch.softmax(torch.log(self.weights) + log_z, dim=0)
        return GaussianMixture(new_weights, new_means, self.covs, dtype=dt)
