"""Confidence intervals over training seeds: a run's samples are not independent of each other.

Every sample or eval clip of a fine-tune shares that run's adapter, so the variation that
matters for "does scheme A beat scheme B" is between training seeds as much as between clips.
``clustered_ci`` takes one array per training seed (of values, or of paired differences) and
resamples seeds with replacement, then values within each drawn seed (a two-stage bootstrap).
Its estimate is the mean of the seeds' means.
"""

from __future__ import annotations

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


def clustered_ci(
    groups: list, n_boot: int, seed: int, alpha: float
) -> tuple[float, float, float] | None:
    """(mean of seed means, lo, hi) of the per-seed arrays, non-finite values dropped; None when
    fewer than 2 values are left."""
    groups = [np.asarray(g, float) for g in groups]
    groups = [g[np.isfinite(g)] for g in groups]
    groups = [g for g in groups if len(g)]
    if sum(len(g) for g in groups) < 2:
        return None
    boots = two_stage_bootstrap(groups, int(n_boot), np.random.default_rng(int(seed)))
    lo, hi = np.quantile(boots, [alpha / 2, 1 - alpha / 2])
    return float(np.mean([g.mean() for g in groups])), float(lo), float(hi)
