"""Inference over training seeds: one rule for every claim, its four readings, Holm, power.

Every sample of a fine-tune shares that run's adapter, so the unit of replication is the
training seed (the cluster), not the clip or the logged training sample. Each claim is reduced to
one number per cluster (the mean of its paired differences within that seed, or a per-run
statistic averaged over the seed's runs), and the k cluster means are tested with Student's t on
k - 1 degrees of freedom (``scipy.stats.ttest_1samp``) against the band +-delta of negligible
effects, signed so that positive is the claimed direction:

    supported     H0: mu <= +delta, rejected by the one-sided test "greater" at +delta
    contradicted  H0: mu >= -delta, rejected by "less" at -delta
    negligible    H0: |mu| >= delta, rejected by both one-sided tests (TOST) "greater" at
                  -delta and "less" at +delta

each at level alpha / 2, so a reading holds exactly when the two-sided (1 - alpha) t interval of
the mean lies beyond +delta, beyond -delta, or inside the band. The claim's p-value is
2 min(p_supported, p_contradicted, p_negligible): the smallest alpha at which its interval
decides one reading, defined before any reading is known. Holm's step-down rule adjusts those
p-values across the family of claims (``holm``), and a claim whose adjusted p-value exceeds alpha
reads "inconclusive". For a balanced design the t-test on cluster means is the random-intercept
mixed model's test with Satterthwaite degrees of freedom, exact for normal cluster means at any
ratio of between- to within-seed variance; tests/test_stats_calibration.py checks coverage and
error rates of this shipped code by simulation. Compound claims (``intersection_union``) and the
minimum detectable effect (``minimum_detectable_effect``) are built on the same tests.

docs/metrics.md, "Inference", is the written rule.
"""

from __future__ import annotations

import math

import numpy as np

READINGS = ("supported", "contradicted", "negligible", "inconclusive")
POWER = 0.8  # the power at which minimum detectable effects are stated


def cluster_means(groups) -> tuple[np.ndarray, int]:
    """(mean of each cluster's finite values, number of finite values) of per-cluster arrays
    (a list, or a dict cluster -> values); clusters without a finite value are dropped."""
    values = groups.values() if isinstance(groups, dict) else groups
    arrays = [np.asarray(v, float).ravel() for v in values]
    arrays = [a[np.isfinite(a)] for a in arrays]
    arrays = [a for a in arrays if a.size]
    return np.array([a.mean() for a in arrays]), int(sum(a.size for a in arrays))


def band_test(means, delta, alpha: float) -> dict[str, np.ndarray]:
    """The three one-sided tests and the (1 - alpha) t interval of cluster means.

    ``means``: (..., k) cluster means, signed so that positive is the claimed direction;
    ``delta`` (>= 0) broadcasts against the leading axes. Returns arrays over the leading axes:
    estimate, ci_low, ci_high, p_supported, p_contradicted, p_negligible and p_value (see the
    module docstring). These are scipy.stats.ttest_1samp's p-values and interval (tests/
    test_stats.py checks them against it), computed from Student's t CDF (scipy.special.stdtr,
    what scipy.stats.t uses) directly, because ttest_1samp's overhead per call made the
    calibration simulation 60x slower."""
    from scipy.special import stdtr, stdtrit

    x = np.asarray(means, float)
    k = x.shape[-1]
    d = np.asarray(delta, float)
    estimate = x.mean(axis=-1)
    if k >= 2:
        centred = x - estimate[..., None]
        se = np.sqrt(np.einsum("...i,...i->...", centred, centred) / (k - 1) / k)
    else:
        se = np.full(estimate.shape, np.nan)
    df = k - 1 if k >= 2 else np.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        upper_t, lower_t = (estimate - d) / se, (estimate + d) / se
        half = stdtrit(df, 1.0 - float(alpha) / 2) * se
    p_sup = stdtr(df, -upper_t)  # "greater" at +delta
    p_con = stdtr(df, lower_t)  # "less" at -delta
    # TOST: "greater" at -delta is 1 - p_con and "less" at +delta is 1 - p_sup
    p_neg = 1.0 - np.minimum(p_sup, p_con)
    return {
        "estimate": estimate,
        "ci_low": estimate - half,
        "ci_high": estimate + half,
        "p_supported": p_sup,
        "p_contradicted": p_con,
        "p_negligible": p_neg,
        "p_value": claim_p_value(p_sup, p_con, p_neg),
    }


def claim_p_value(p_supported, p_contradicted, p_negligible) -> np.ndarray:
    """2 min of the three one-sided p-values (each reading is tested at alpha / 2), at most 1."""
    stacked = np.stack(np.broadcast_arrays(p_supported, p_contradicted, p_negligible))
    return np.minimum(1.0, 2.0 * stacked.min(axis=0))


def reading_codes(tests: dict, decided) -> np.ndarray:
    """Index into READINGS of each claim: the reading of its smallest one-sided p-value where
    ``decided`` (boolean, e.g. Holm rejects its p-value), else 3 (inconclusive). NaN p-values
    read inconclusive."""
    stacked = np.stack(
        np.broadcast_arrays(tests["p_supported"], tests["p_contradicted"], tests["p_negligible"])
    )
    finite = np.isfinite(stacked).all(axis=0)
    best = np.argmin(np.where(np.isfinite(stacked), stacked, np.inf), axis=0)
    return np.where(np.asarray(decided, bool) & finite, best, 3)


def holm_adjusted(p, axis: int = -1) -> np.ndarray:
    """Holm's step-down adjusted p-values along ``axis`` (no NaN): sorted ascending, the j-th
    (j = 0, 1, ...) is max over i <= j of (m - i) p_(i), capped at 1; p rejected at level alpha
    exactly when its adjusted value is <= alpha, as the step-down procedure decides."""
    q = np.moveaxis(np.asarray(p, float), axis, -1)
    m = q.shape[-1]
    order = np.argsort(q, axis=-1, kind="stable")
    ranked = np.take_along_axis(q, order, axis=-1) * (m - np.arange(m))
    adjusted = np.minimum(1.0, np.maximum.accumulate(ranked, axis=-1))
    out = np.empty_like(adjusted)
    np.put_along_axis(out, order, adjusted, axis=-1)
    return np.moveaxis(out, -1, axis)


def holm(p_values: dict[str, float], alpha: float) -> dict[str, dict]:
    """Holm's rule over a family of claims' p-values: id -> {rank, family, adjusted_p,
    rejected}. NaN p-values are left out of the family."""
    family = {k: float(p) for k, p in p_values.items() if np.isfinite(p)}
    if not family:
        return {}
    keys = sorted(family, key=lambda k: (family[k], k))
    adjusted = holm_adjusted(np.array([family[k] for k in keys]))
    return {
        key: {
            "rank": rank + 1,
            "family": len(keys),
            "adjusted_p": float(adj),
            "rejected": bool(adj <= alpha),
        }
        for rank, (key, adj) in enumerate(zip(keys, adjusted, strict=True))
    }


def minimum_detectable_effect(sd: float, k: int, delta: float, alpha_one_sided: float) -> float:
    """The smallest true effect (in the metric's units) that the one-sided t-test of k cluster
    means against +delta at level ``alpha_one_sided`` reads "supported" with POWER (80 %), for
    clusters whose means spread with standard deviation ``sd``: delta + nc sd / sqrt(k), nc the
    noncentrality at which scipy.stats.nct gives that power. NaN below 2 clusters or without a
    finite sd."""
    from scipy.optimize import brentq
    from scipy.stats import nct, t

    if k < 2 or not np.isfinite(sd):
        return float("nan")
    df = k - 1
    critical = t.isf(float(alpha_one_sided), df)
    upper = 10.0
    while nct.sf(critical, df, upper) < POWER:
        upper *= 2.0
    nc = brentq(lambda n: nct.sf(critical, df, n) - POWER, 0.0, upper)
    return float(abs(delta) + nc * float(sd) / math.sqrt(k))


def intersection_union(parts: list[dict]) -> dict[str, float]:
    """One-sided p-values of a conjunction ("every part holds") from its parts' band tests:
    supported and negligible are intersection-union tests (every part must hold, p = the largest
    part p-value, no correction needed); contradicted holds when any part is contradicted, a
    union-intersection test with Bonferroni's correction (p = number of parts times the smallest
    part p-value). All three are defined before any reading is known."""
    n = len(parts)
    sup = max(float(p["p_supported"]) for p in parts)
    neg = max(float(p["p_negligible"]) for p in parts)
    con = min(1.0, n * min(float(p["p_contradicted"]) for p in parts))
    return {
        "p_supported": sup,
        "p_contradicted": con,
        "p_negligible": neg,
        "p_value": float(claim_p_value(sup, con, neg)),
    }


def independent_bootstrap(x, y, n_boot: int, seed: int, alpha: float):
    """(mean(x) - mean(y), lo, hi, replicates): scipy.stats.bootstrap's percentile interval of
    a difference of means of two independent groups (each resampled at its own size). A CI only
    (eisbach.metrics.bootstrap_ci); no claim's p-value comes from resampling."""
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


def clustered_ci(groups: list, alpha: float):
    """(mean of cluster means, lo, hi): the (1 - alpha) t interval of the cluster means on
    k - 1 degrees of freedom, the interval the claims use (figures and controls draw the same);
    with one cluster, the t interval of its values, which covers value-to-value variation only.
    None below 2 finite values."""
    means, n = cluster_means(groups)
    if n < 2:
        return None
    if len(means) >= 2:
        values = means
    else:
        values = np.concatenate(
            [a[np.isfinite(a)] for a in (np.asarray(g, float).ravel() for g in groups)]
        )
    tests = band_test(values, 0.0, alpha)
    estimate = float(means.mean())
    if np.ptp(values) == 0:
        return estimate, estimate, estimate
    return estimate, float(tests["ci_low"]), float(tests["ci_high"])


def reading_of(tests: dict, alpha: float) -> str:
    """The reading of one claim's tests at level alpha, before any multiplicity adjustment."""
    p = float(tests["p_value"])
    return READINGS[int(reading_codes(tests, np.isfinite(p) and p <= alpha))]


def cluster_reading(groups, delta: float, alpha: float, higher_is_claim: bool = True) -> dict:
    """One claim's reading from per-cluster values (a dict or list of arrays: one per training
    seed, or per run where the run is the unit): the mean of cluster means in the data's units
    (``diff``), its (1 - alpha) t interval, the three one-sided p-values, the claim's p-value
    and its reading before Holm. ``higher_is_claim`` False: the claim is that the value is
    negative, so "supported" needs the interval below -delta. Fewer than 2 clusters read
    "inconclusive", saying why."""
    means, n = cluster_means(groups)
    out = {"units": n, "seeds": int(len(means)), "min_effect": float(abs(delta))}
    if len(means) == 0:
        return out | {"verdict": "inconclusive", "reason": f"{n} finite values"}
    out["diff"] = float(means.mean())
    if len(means) < 2:
        return out | {
            "verdict": "inconclusive",
            "reason": "one training seed: no spread between fine-tunes to test against",
        }
    sign = 1.0 if higher_is_claim else -1.0
    tests = {k: float(v) for k, v in band_test(sign * means, abs(delta), alpha).items()}
    lo, hi = sorted((sign * tests["ci_low"], sign * tests["ci_high"]))
    return out | {
        "ci_low": lo,
        "ci_high": hi,
        "seed_means": [float(m) for m in means],
        "seed_sd": float(np.std(means, ddof=1)),
        "p_supported": tests["p_supported"],
        "p_contradicted": tests["p_contradicted"],
        "p_negligible": tests["p_negligible"],
        "p_value": tests["p_value"],
        "verdict": reading_of(tests, alpha),
    }


def compound_reading(parts: dict[str, dict], alpha: float) -> dict:
    """The reading of a conjunction of claims (every part must hold) from its parts'
    cluster_reading: intersection_union's p-values, and the reading they give at alpha."""
    if any("p_value" not in p for p in parts.values()):
        missing = [name for name, p in parts.items() if "p_value" not in p]
        return {"verdict": "inconclusive", "reason": f"no test for {', '.join(missing)}"}
    tests = intersection_union(list(parts.values()))
    return tests | {"verdict": reading_of(tests, alpha)}
