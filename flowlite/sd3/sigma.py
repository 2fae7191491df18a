"""SD3's noise level σ and paper time t (theory §1.2): σ = 1 - t, the transformer's timestep = 1000·σ, and the
shifted σ grid. Every conversion between the two lives in this file; methods see paper time only."""

from __future__ import annotations

import torch
from torch import Tensor

from flowlite.errors import FlowliteError


def sigma_from_time(t: Tensor | float) -> Tensor:
    """SD3's noise level σ = 1 - t (σ = 1 is noise); the transformer receives timestep = 1000·σ."""
    return 1 - torch.as_tensor(t)


def time_from_sigma(sigma: Tensor | float) -> Tensor:
    """Paper time t = 1 - σ."""
    return 1 - torch.as_tensor(sigma)


def shift_sigma(sigma: Tensor | float, shift: float = 3.0) -> Tensor:
    """SD3's time shift σ' = s·σ / (1 + (s - 1)·σ) (SD3-medium uses s = 3)."""
    sigma = torch.as_tensor(sigma)
    return shift * sigma / (1 + (shift - 1) * sigma)


def shifted_grid(solver_steps: int, shift: float = 3.0) -> Tensor:
    """SD3's shifted schedule in paper time: σ_k uniform from 1 to 0, shifted by s, then t = 1 - σ."""
    sigma = torch.linspace(1.0, 0.0, solver_steps + 1, dtype=torch.float64)
    return time_from_sigma(shift_sigma(sigma, shift))


def dynamic_shift_mu(scheduler_config, image_seq_len: int) -> float:
    """The pipelines' μ for schedulers with ``use_dynamic_shifting``: linear in the number of image tokens, from
    ``base_shift`` at ``base_image_seq_len`` to ``max_shift`` at ``max_image_seq_len``, computed by the function the
    SD3.5 and FLUX pipelines call (diffusers' ``calculate_shift``)."""
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    c = scheduler_config
    return float(calculate_shift(image_seq_len, c["base_image_seq_len"], c["max_image_seq_len"], c["base_shift"],
                                 c["max_shift"]))


def pipeline_grid(scheduler, steps: int, image_seq_len: int | None = None, sigmas=None) -> Tensor:
    """The scheduler's own σ grid for ``steps`` steps, in paper time t = 1 - σ: shifted by its fixed ``shift``
    (SD3-medium: 3) or, with ``use_dynamic_shifting``, by μ(``image_seq_len``) as the pipelines compute it.
    ``sigmas``: the pipeline's own starting σ list where it passes one (FLUX: linspace(1, 1/steps, steps))."""
    kwargs = {}
    if scheduler.config.get("use_dynamic_shifting"):
        if image_seq_len is None:
            raise FlowliteError("this scheduler shifts its sigmas by the image size (use_dynamic_shifting): pass "
                                "image_seq_len (the flow's image_seq_len)")
        kwargs["mu"] = dynamic_shift_mu(scheduler.config, image_seq_len)
    if sigmas is not None:
        scheduler.set_timesteps(sigmas=list(sigmas), **kwargs)
    else:
        scheduler.set_timesteps(steps, **kwargs)
    return time_from_sigma(scheduler.sigmas.to(torch.float64).cpu())
