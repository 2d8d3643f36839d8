"""Per-sample loss-weighting schemes.

Every scheme is a callable ``(pred, target, t, mask) -> weights[B]`` with
pred/target ``[B, C, T]``, t ``[B]`` in [0, 1] (1 = pure noise) and mask ``[B, T]``
(True = valid frame). The training loss is ``mean_b(weights[b] * mse_b)``.
Weights are always detached and computed with autocast off, in fp32 (the entropy in fp64),
so a scheme scales the step and never changes its direction.

The Eisbach log-barrier (arXiv 2606.07207), line by line:

    Eq.1  e[b,t] = mean_c pred[b,c,t]^2
    Eq.2  p[b,:] = softmax(e[b,:]) over valid frames only
    Eq.3  H[b]   = -sum_t p log p / log(M_b)        (M_b = number of valid frames)
    Eq.4  w[b]   = 1 / (1 - log(1 - H[b]))
    Eq.5  s[b]   = (1 - lam) + lam * w[b]

The registry (``get_scheme(name, **params)``):

    none                      s = 1
    eisbach(lam)              s = (1 - lam) + lam * w
    eisbach_batchmean(lam)    s = (1 - lam) + lam * mean_b(w), the same for the whole batch
    eisbach_shuffled(lam)     s = (1 - lam) + lam * w[perm], perm from a seeded generator
    eisbach_inverse(lam)      s = (1 - lam) + lam * (1 - w), upweighting flat samples
    min_snr(gamma)            s = min(SNR, gamma) * sigma_t^2 (the x0-loss weight on the target)
    constant(c)               s = c; c = mean applied weight of an eisbach run is its
                              learning-rate-matched control
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Scheme = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]

EPS = 1e-12


def _valid_mask(pred: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return torch.ones(pred.shape[0], pred.shape[-1], dtype=torch.bool, device=pred.device)
    return mask.to(torch.bool)


@torch.no_grad()
def frame_energy(pred: torch.Tensor) -> torch.Tensor:
    """Eq.1: mean over channels of the squared prediction, [B, T] (fp64, see eisbach_terms)."""
    return pred.detach().double().pow(2).mean(dim=1)


@torch.no_grad()
def _entropy(pred: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Eq.2-3 in fp64, [B] in [0, 1]."""
    valid = _valid_mask(pred, mask)
    energy = frame_energy(pred).masked_fill(~valid, float("-inf"))
    log_p = torch.log_softmax(energy, dim=-1)
    p = log_p.exp()
    entropy = -(p * log_p.masked_fill(~valid, 0.0)).sum(dim=-1)
    n_valid = valid.sum(dim=-1).double()
    # One valid frame carries no distribution; call it fully peaked (H = 0).
    return torch.where(
        n_valid > 1, entropy / torch.log(n_valid.clamp(min=2.0)), torch.zeros_like(entropy)
    ).clamp(0.0, 1.0)


@torch.no_grad()
def temporal_entropy(pred: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Eq.2-3: normalised entropy of softmax(energy) over the valid frames, [B] in [0, 1]."""
    return _entropy(pred, mask).float()


@torch.no_grad()
def barrier_weight(entropy: torch.Tensor) -> torch.Tensor:
    """Eq.4: w = 1 / (1 - log(1 - H)), in (0, 1]."""
    return 1.0 / (1.0 - torch.log((1.0 - entropy).clamp(min=EPS)))


@torch.no_grad()
def eisbach_terms(pred: torch.Tensor, mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """H and w per sample (fp32), for the schemes and for logging next to any scheme.

    Computed in fp64 and returned in fp32: in practice H is 0.9-0.999, and Eq.4 amplifies the
    rounding error of 1 - H by 1 / (1 - H); in fp32 that made padded and unpadded batches
    disagree in the 5th digit of w. The cost is nothing next to the DiT ([B, T] values).
    """
    entropy = _entropy(pred, mask)
    return {"H": entropy.float(), "w": barrier_weight(entropy).float()}


def _blend(w: torch.Tensor, lam: float) -> torch.Tensor:
    """Eq.5: s = (1 - lam) + lam * w."""
    return (1.0 - lam) + lam * w


def none() -> Scheme:
    def weights(pred, target, t, mask=None):
        return torch.ones(pred.shape[0], device=pred.device, dtype=torch.float32)

    return weights


def constant(c: float = 1.0) -> Scheme:
    """The same scale c for every sample. With c = the mean applied weight of an eisbach run,
    it is that run's learning-rate-matched control (grid entry ``{name: constant, c: matched}``)."""
    if not float(c) > 0:
        raise ValueError(f"constant: c must be > 0, got {c}")

    def weights(pred, target, t, mask=None):
        return torch.full((pred.shape[0],), float(c), device=pred.device, dtype=torch.float32)

    return weights


def eisbach(lam: float = 0.5) -> Scheme:
    """Eq.1-5: s = (1 - lam) + lam * w, w the log-barrier of the temporal entropy."""

    def weights(pred, target, t, mask=None):
        return _blend(eisbach_terms(pred, mask)["w"], lam)

    return weights


def eisbach_batchmean(lam: float = 0.5) -> Scheme:
    """Ablation: the whole batch is scaled by the batch mean of w."""

    def weights(pred, target, t, mask=None):
        w = eisbach_terms(pred, mask)["w"]
        return _blend(w.mean().expand_as(w), lam)

    return weights


def eisbach_shuffled(lam: float = 0.5, seed: int = 0) -> Scheme:
    """Control: the same weights, permuted across the batch by a seeded generator.

    The generator advances once per call; its state is ``weights.generator`` so that a
    checkpoint can save and restore it (exact resume).
    """
    generator = torch.Generator().manual_seed(int(seed))

    def weights(pred, target, t, mask=None):
        w = eisbach_terms(pred, mask)["w"]
        order = torch.randperm(w.shape[0], generator=generator).to(w.device)
        return _blend(w[order], lam)

    weights.generator = generator
    return weights


def eisbach_inverse(lam: float = 0.5) -> Scheme:
    """Control: 1 - w, which upweights flat samples instead."""

    def weights(pred, target, t, mask=None):
        return _blend(1.0 - eisbach_terms(pred, mask)["w"], lam)

    return weights


def min_snr(gamma: float = 5.0, objective: str = "rectified_flow") -> Scheme:
    """Min-SNR-gamma (Hang et al. 2023), for the loss on the backend's target.

    Min-SNR weights the x0-loss by min(SNR, gamma). Both objectives of eisbach.objectives
    recover x0 from their target with error x0_err = sigma_t * target_err, so the weight on
    the target's MSE is min(SNR, gamma) * sigma_t^2:

    - rectified_flow: x_t = (1 - t) x0 + t noise, SNR = ((1 - t) / t)^2, sigma_t = t,
      so w = min((1 - t)^2, gamma t^2);
    - v: alpha = cos(pi t / 2), sigma = sin(pi t / 2), sigma^2 = 1 / (SNR + 1),
      so w = min(SNR, gamma) / (SNR + 1), the paper's v-prediction form.
    """
    if gamma <= 0:
        raise ValueError(f"min_snr: gamma must be > 0, got {gamma}")
    if objective not in ("rectified_flow", "v"):
        raise ValueError(f"min_snr: unknown objective {objective!r}")

    def weights(pred, target, t, mask=None):
        t = t.detach().float().to(pred.device).clamp(1e-4, 1.0 - 1e-4)
        if objective == "rectified_flow":
            return torch.minimum((1.0 - t).pow(2), gamma * t.pow(2))
        snr = (1.0 / torch.tan(t * torch.pi / 2)).pow(2)
        return torch.minimum(snr, torch.full_like(snr, gamma)) / (snr + 1.0)

    return weights


REGISTRY: dict[str, Callable[..., Scheme]] = {
    "none": none,
    "constant": constant,
    "eisbach": eisbach,
    "eisbach_batchmean": eisbach_batchmean,
    "eisbach_shuffled": eisbach_shuffled,
    "eisbach_inverse": eisbach_inverse,
    "min_snr": min_snr,
}
# The schemes that blend a weight with Eq.5; at lam = 0 each of them is exactly `none` (s = 1).
LAMBDA_SCHEMES = ("eisbach", "eisbach_batchmean", "eisbach_shuffled", "eisbach_inverse")
# The schemes whose weight of one sample depends on the other samples of the batch: training
# computes them over the whole global batch at once, across ranks (eisbach.distributed).
BATCH_LEVEL_SCHEMES = ("eisbach_batchmean", "eisbach_shuffled")


def get_scheme(name: str, **params) -> Scheme:
    """The weighting scheme ``name`` with its parameters as keywords, e.g. ``lam=0.5``."""
    if name not in REGISTRY:
        raise KeyError(f"unknown weighting scheme {name!r}; known: {sorted(REGISTRY)}")
    factory = REGISTRY[name]
    try:
        scheme = factory(**params)
    except TypeError as err:
        raise TypeError(f"weighting scheme {name!r}: bad parameters {params}: {err}") from None
    if "lam" in params and not 0.0 <= float(params["lam"]) <= 1.0:
        raise ValueError(f"weighting scheme {name!r}: lam must be in [0, 1], got {params['lam']}")

    def detached_fp32(pred, target, t, mask=None):
        with torch.autocast(device_type=pred.device.type, enabled=False):
            return scheme(pred.detach().float(), target.detach().float(), t, mask).detach()

    detached_fp32.scheme_name = name
    detached_fp32.params = dict(params)
    detached_fp32.generator = getattr(scheme, "generator", None)
    detached_fp32.batch_level = name in BATCH_LEVEL_SCHEMES
    return detached_fp32


def weighted_loss(
    pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor, mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked per-sample MSE [B] and the batch loss mean_b(weights * mse_b)."""
    valid = _valid_mask(pred, mask).unsqueeze(1).to(pred.dtype)
    sq = (pred.float() - target.float()).pow(2) * valid
    per_sample = sq.sum(dim=(1, 2)) / (valid.sum(dim=(1, 2)) * pred.shape[1]).clamp(min=1.0)
    return per_sample, (weights.detach() * per_sample).mean()


__all__ = [
    "LAMBDA_SCHEMES",
    "REGISTRY",
    "eisbach_terms",
    "get_scheme",
    "temporal_entropy",
    "barrier_weight",
    "weighted_loss",
]
