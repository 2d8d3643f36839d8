"""Confidence intervals over training seeds, bootstrap p-values, and Holm's adjustment.

Every sample or eval clip of a fine-tune shares that run's adapter, so the variation that
matters for "does scheme A beat scheme B" is between training seeds as much as between clips.
``clustered_ci`` takes one array per training seed (of values, or of paired differences) and
resamples seeds with replacement, then values within each drawn seed (a two-stage bootstrap).
Its estimate is the mean of the seeds' means.

A claim's p-value is read off its bootstrap distribution (``bootstrap_p``), and the verdicts of
all claims are adjusted together by Holm's step-down rule (``holm``): docs/metrics.md.
"""

from __future__ import annotations

import math

import numpy as np

_BLOCK_ELEMENTS = 4_000_000  # bounds the memory of one block of replicates


def two_stage_bootstrap(groups: list[np.ndarray], n_boot: int, rng) -> np.ndarray:
    """n_boot resampled means of seed means: seeds with replacement, then values within each."""
    k = len(groups)
    picks = rng.integers(0, k, size=(n_boot, k))
    total = np.zeros(n_boot)
    for g, values in enumerate(groups):
        rows = np.nonzero(picks == g)[0]
        block = max(1, _BLOCK_ELEMENTS // len(values))
        for start in range(0, len(rows), block):
            part = rows[start : start + block]
            draws = rng.integers(0, len(values), size=(len(part), len(values)))
            np.add.at(total, part, values[draws].mean(axis=1))
    return total / k


def clustered_bootstrap(groups: list, n_boot: int, seed: int):
    """(mean of seed means, bootstrap replicates) of the per-seed arrays, non-finite values
    dropped; None when fewer than 2 values are left."""
    groups = [np.asarray(g, float) for g in groups]
    groups = [g[np.isfinite(g)] for g in groups]
    groups = [g for g in groups if len(g)]
    if sum(len(g) for g in groups) < 2:
        return None
    boots = two_stage_bootstrap(groups, int(n_boot), np.random.default_rng(int(seed)))
    return float(np.mean([g.mean() for g in groups])), boots


def clustered_ci(
    groups: list, n_boot: int, seed: int, alpha: float
) -> tuple[float, float, float] | None:
    """(mean of seed means, lo, hi) of the per-seed arrays, non-finite values dropped; None when
    fewer than 2 values are left."""
    result = clustered_bootstrap(groups, n_boot, seed)
    if result is None:
        return None
    estimate, boots = result
    lo, hi = np.quantile(boots, [alpha / 2, 1 - alpha / 2])
    return estimate, float(lo), float(hi)


def bootstrap_p(boots, null: float = 0.0, side: str = "two-sided") -> float:
    """Bootstrap p-value of ``estimate != null`` (or ``> null`` / ``< null`` for side
    "greater" / "less"): the share of replicates on the far side of the null, with the +1
    correction so that it is never 0."""
    b = np.asarray(boots, float)
    b = b[np.isfinite(b)]
    if b.size == 0:
        return float("nan")
    below = (np.sum(b <= null) + 1) / (b.size + 1)
    above = (np.sum(b >= null) + 1) / (b.size + 1)
    if side == "greater":
        return float(below)
    if side == "less":
        return float(above)
    return float(min(1.0, 2.0 * min(below, above)))


def holm(p_values: dict[str, float], alpha: float) -> dict[str, dict]:
    """Holm's step-down rule over a family of p-values: id -> {rank, threshold, rejected}.

    Sorted ascending, the k-th smallest (k = 0, 1, ...) is rejected when it and every smaller
    one lie at or below alpha / (m - k); the first that does not stops the procedure. NaN
    p-values are left out of the family."""
    family = sorted((p, key) for key, p in p_values.items() if np.isfinite(p))
    m = len(family)
    out, still = {}, True
    for k, (p, key) in enumerate(family):
        threshold = alpha / (m - k)
        still = still and p <= threshold
        out[key] = {"rank": k + 1, "family": m, "threshold": threshold, "rejected": bool(still)}
    return out


def independent_bootstrap(x, y, n_boot: int, seed: int, alpha: float):
    """(mean(x) - mean(y), lo, hi, replicates): scipy.stats.bootstrap's percentile interval of
    a difference of means of two independent groups (each resampled at its own size)."""
    from scipy.stats import bootstrap

    gx, gy = np.asarray(x, float), np.asarray(y, float)
    diff = float(gx.mean() - gy.mean())
    if gx.size < 2 or gy.size < 2 or (np.ptp(gx) == 0 and np.ptp(gy) == 0):
        return diff, diff, diff, np.full(int(n_boot), diff)
    res = bootstrap(
        (gx, gy),
        lambda a, b, axis: np.mean(a, axis=axis) - np.mean(b, axis=axis),
        n_resamples=int(n_boot),
        confidence_level=1.0 - float(alpha),
        method="percentile",
        random_state=np.random.default_rng(int(seed)),
        vectorized=True,
    )
    ci = res.confidence_interval
    return diff, float(ci.low), float(ci.high), res.bootstrap_distribution


def verdict(
    diff_lo: float, diff_hi: float, higher_is_barrier: bool, min_effect: float = 0.0
) -> str:
    """ "supported" if the barrier-minus-baseline CI lies strictly beyond +min_effect on the
    claimed side, "contradicted" if strictly beyond it on the other side, "inconclusive"
    otherwise (NaN included): a CI that excludes 0 but reaches into the negligible effects
    within +-min_effect does not decide a claim."""
    lo, hi, delta = float(diff_lo), float(diff_hi), abs(float(min_effect))
    if math.isnan(lo) or math.isnan(hi):
        return "inconclusive"
    if lo > delta:
        return "supported" if higher_is_barrier else "contradicted"
    if hi < -delta:
        return "contradicted" if higher_is_barrier else "supported"
    return "inconclusive"
