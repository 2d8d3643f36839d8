"""Per-sample loss-weighting schemes.

Every scheme is a callable ``(pred, target, t, mask) -> weights[B]`` with
pred/target ``[B, C, T]``, t ``[B]`` in [0, 1] (1 = pure noise) and mask ``[B, T]``
(True = valid frame). The training loss is ``mean_b(weights[b] * mse_b)``.
Weights are always detached and computed in fp32, so a scheme scales the step
and never changes its direction.

The Eisbach log-barrier (arXiv 2606.07207), line by line:

    Eq.1  e[b,t] = mean_c pred[b,c,t]^2
    Eq.2  p[b,:] = softmax(e[b,:]) over valid frames only
    Eq.3  H[b]   = -sum_t p log p / log(M_b)        (M_b = number of valid frames)
    Eq.4  w[b]   = 1 / (1 - log(1 - H[b]))
    Eq.5  s[b]   = (1 - lam) + lam * w[b]
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
    """Eq.1: mean over channels of the squared prediction, [B, T]."""
    return pred.detach().float().pow(2).mean(dim=1)


@torch.no_grad()
def temporal_entropy(pred: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Eq.2-3: normalised entropy of softmax(energy) over the valid frames, [B] in [0, 1]."""
    valid = _valid_mask(pred, mask)
    energy = frame_energy(pred).masked_fill(~valid, float("-inf"))
    log_p = torch.log_softmax(energy, dim=-1)
    p = log_p.exp()
    entropy = -(p * log_p.masked_fill(~valid, 0.0)).sum(dim=-1)
    n_valid = valid.sum(dim=-1).float()
    # One valid frame carries no distribution; call it fully peaked (H = 0).
    return torch.where(
        n_valid > 1, entropy / torch.log(n_valid.clamp(min=2.0)), torch.zeros_like(entropy)
    ).clamp(0.0, 1.0)


@torch.no_grad()
def barrier_weight(entropy: torch.Tensor) -> torch.Tensor:
    """Eq.4: w = 1 / (1 - log(1 - H)), in (0, 1]."""
    return 1.0 / (1.0 - torch.log((1.0 - entropy).clamp(min=EPS)))


@torch.no_grad()
def eisbach_terms(pred: torch.Tensor, mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """H and w per sample, for logging next to whatever scheme is trained."""
    entropy = temporal_entropy(pred, mask)
    return {"H": entropy, "w": barrier_weight(entropy)}


def _blend(w: torch.Tensor, lam: float) -> torch.Tensor:
    """Eq.5: s = (1 - lam) + lam * w."""
    return (1.0 - lam) + lam * w


def none() -> Scheme:
    def weights(pred, target, t, mask=None):
        return torch.ones(pred.shape[0], device=pred.device, dtype=torch.float32)

    return weights


def constant(c: float = 1.0) -> Scheme:
    def weights(pred, target, t, mask=None):
        return torch.full((pred.shape[0],), float(c), device=pred.device, dtype=torch.float32)

    return weights


def eisbach(lam: float = 0.5) -> Scheme:
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
    """Control: the same weights, permuted across the batch by a seeded generator."""
    generator = torch.Generator().manual_seed(seed)

    def weights(pred, target, t, mask=None):
        w = eisbach_terms(pred, mask)["w"]
        order = torch.randperm(w.shape[0], generator=generator).to(w.device)
        return _blend(w[order], lam)

    return weights


def eisbach_inverse(lam: float = 0.5) -> Scheme:
    """Control: 1 - w, which upweights flat samples instead."""

    def weights(pred, target, t, mask=None):
        return _blend(1.0 - eisbach_terms(pred, mask)["w"], lam)

    return weights


def min_snr(gamma: float = 5.0) -> Scheme:
    """Min-SNR-gamma (Hang et al. 2023) for rectified flow, where SNR = ((1-t)/t)^2.

    With a velocity target the weight is min(SNR, gamma) / (SNR + 1).
    """

    def weights(pred, target, t, mask=None):
        t = t.detach().float().clamp(1e-4, 1.0 - 1e-4)
        snr = ((1.0 - t) / t).pow(2)
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
    "REGISTRY",
    "eisbach_terms",
    "get_scheme",
    "temporal_entropy",
    "barrier_weight",
    "weighted_loss",
]
