"""Diffusion objectives and training-timestep samplers, as a backend declares them.

Time runs from t = 0 (data) to t = 1 (pure noise) everywhere in this project.

Objectives, ``(x0, noise, t) -> (x_t, target)``:

- ``rectified_flow``: x_t = (1 - t) x0 + t noise, target = noise - x0 (the velocity that
  stable-audio-tools and Stable Audio 3 predict);
- ``v``: alpha = cos(pi t / 2), sigma = sin(pi t / 2), x_t = alpha x0 + sigma noise,
  target = alpha noise - sigma x0 (v-prediction on the cosine schedule).

Timestep samplers, ``(n, generator) -> t [n]``:

- ``uniform``: U(0, 1);
- ``logit_normal``: sigmoid(N(0, 1)), as stable-audio-tools samples rectified-flow times;
- ``trunc_logit_normal``: Stable Audio 3's sampler. u = sigmoid(z), z ~ N(0, 1), restricted to
  u >= 0.075 by inverting the normal CDF on the kept range, rescaled (u - 0.075) / 0.925 onto
  [0, 1], then flipped: t = 1 - u. Mean ~0.54, 10th-90th percentiles ~0.24-0.84.

Every draw comes from the generator passed in, so a step's timesteps depend only on its seed.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

OBJECTIVES = ("rectified_flow", "v")


def noisy_input(
    objective: str, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_t, target) of ``objective`` for clean latents x0 [B, C, T], noise and t [B]."""
    tt = t.view(-1, *([1] * (x0.dim() - 1)))
    if objective == "rectified_flow":
        return (1 - tt) * x0 + tt * noise, noise - x0
    if objective == "v":
        alpha, sigma = torch.cos(tt * torch.pi / 2), torch.sin(tt * torch.pi / 2)
        return alpha * x0 + sigma * noise, alpha * noise - sigma * x0
    raise ValueError(f"unknown objective {objective!r}; known: {list(OBJECTIVES)}")


def log_snr(objective: str, t: torch.Tensor) -> torch.Tensor:
    """log(alpha^2 / sigma^2) at t, with alpha, sigma as in ``noisy_input``."""
    t = t.float().clamp(1e-6, 1 - 1e-6)
    if objective == "rectified_flow":
        return 2 * (torch.log1p(-t) - torch.log(t))
    if objective == "v":
        return 2 * torch.log(1 / torch.tan(t * torch.pi / 2))
    raise ValueError(f"unknown objective {objective!r}; known: {list(OBJECTIVES)}")


def uniform(n: int, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=generator)


def logit_normal(
    n: int, generator: torch.Generator, mean: float = 0.0, std: float = 1.0
) -> torch.Tensor:
    return torch.sigmoid(mean + std * torch.randn(n, generator=generator))


TRUNC_LEFT = 0.075


def trunc_logit_normal(
    n: int, generator: torch.Generator, left: float = TRUNC_LEFT, flip: bool = True
) -> torch.Tensor:
    """Stable Audio 3's truncated logit-normal (see the module docstring)."""
    lower = 0.5 * (1 + math.erf(math.log(left / (1 - left)) / math.sqrt(2)))  # Phi(logit(left))
    cdf = lower + (1 - lower) * torch.rand(n, generator=generator, dtype=torch.float64)
    u = torch.sigmoid(torch.special.ndtri(cdf))
    u = ((u - left) / (1 - left)).clamp(0.0, 1.0).float()
    return 1 - u if flip else u


SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {
    "uniform": uniform,
    "logit_normal": logit_normal,
    "trunc_logit_normal": trunc_logit_normal,
}


def sample_timesteps(name: str, n: int, generator: torch.Generator) -> torch.Tensor:
    """n training timesteps in [0, 1] (1 = noise) from the sampler ``name``."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown timestep sampler {name!r}; known: {sorted(SAMPLERS)}")
    return SAMPLERS[name](n, generator)


__all__ = ["OBJECTIVES", "SAMPLERS", "log_snr", "noisy_input", "sample_timesteps"]
