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
- ``trunc_logit_normal``: Stable Audio 3's sampler (its LoRA trainer's). z ~ N(0, 1), its
  normal CDF mapped onto the part of the logit-normal above u = 0.075 and back, u rescaled
  (u - 0.075) / 0.925 onto [0, 1], then flipped: t = 1 - u. Mean ~0.54, 10th-90th
  percentiles ~0.24-0.84.
- ``log_snr``: Stable Audio 3's: a log-SNR lambda ~ N(mean -1.2, std 2.0), t = sigmoid(-lambda)
  clamped to [1e-4, 1 - 1e-4].
- ``log_snr_uniform``: Stable Audio 3's: lambda ~ U(-6, 5), t = sigmoid(-lambda), clamped so.
- ``sobol``: Stable Audio 3's (and stable-audio-tools') ``uniform``: a scrambled Sobol draw.
  Upstream continues one sequence over all steps; here each step scrambles afresh from its
  generator, so a resumed run draws what an uninterrupted one does. For a batch of 2^m the
  two agree in what matters: every aligned block of 2^m points of a 1-D Sobol sequence has
  one point in each interval [k / 2^m, (k + 1) / 2^m).

The formulas are tested against the package's own functions in tests/test_timesteps.py.
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
    """Stable Audio 3's truncated logit-normal (see the module docstring), in float64."""
    z = torch.randn(n, generator=generator).double()
    lower = 0.5 * (1 + math.erf(math.log(left / (1 - left)) / math.sqrt(2)))  # Phi(logit(left))
    cdf = lower + (1 - lower) * torch.special.ndtr(z)
    u = torch.sigmoid(torch.special.ndtri(cdf))
    u = ((u - left) / (1 - left)).clamp(0.0, 1.0).float()
    return 1 - u if flip else u


LOG_SNR_CLAMP = 1e-4


def log_snr_normal(
    n: int, generator: torch.Generator, mean_logsnr: float = -1.2, std_logsnr: float = 2.0
) -> torch.Tensor:
    lam = torch.randn(n, generator=generator) * std_logsnr + mean_logsnr
    return torch.sigmoid(-lam).clamp(LOG_SNR_CLAMP, 1 - LOG_SNR_CLAMP)


def log_snr_uniform(
    n: int, generator: torch.Generator, min_logsnr: float = -6.0, max_logsnr: float = 5.0
) -> torch.Tensor:
    lam = torch.rand(n, generator=generator) * (max_logsnr - min_logsnr) + min_logsnr
    return torch.sigmoid(-lam).clamp(LOG_SNR_CLAMP, 1 - LOG_SNR_CLAMP)


def sobol(n: int, generator: torch.Generator) -> torch.Tensor:
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    return torch.quasirandom.SobolEngine(1, scramble=True, seed=seed).draw(n)[:, 0]


SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {
    "uniform": uniform,
    "logit_normal": logit_normal,
    "trunc_logit_normal": trunc_logit_normal,
    "log_snr": log_snr_normal,
    "log_snr_uniform": log_snr_uniform,
    "sobol": sobol,
}
# Stable Audio 3's sampler names (training/diffusion.py) -> the samplers above.
SA3_SAMPLERS = {
    "uniform": "sobol",
    "logit_normal": "logit_normal",
    "trunc_logit_normal": "trunc_logit_normal",
    "log_snr": "log_snr",
    "log_snr_uniform": "log_snr_uniform",
}


def sample_timesteps(name: str, n: int, generator: torch.Generator, **options) -> torch.Tensor:
    """n training timesteps in [0, 1] (1 = noise) from the sampler ``name``; ``options``
    are its keywords (log_snr: mean_logsnr, std_logsnr; log_snr_uniform: min/max_logsnr)."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown timestep sampler {name!r}; known: {sorted(SAMPLERS)}")
    try:
        return SAMPLERS[name](n, generator, **options)
    except TypeError as err:
        raise ValueError(f"timestep sampler {name!r}: bad options {options} ({err})") from err


__all__ = ["OBJECTIVES", "SA3_SAMPLERS", "SAMPLERS", "log_snr", "noisy_input", "sample_timesteps"]
