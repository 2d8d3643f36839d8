"""The paper's section 9 predictions P1-P5, each computed with a CI, a p-value and a verdict.

* P1, P5 read the training logs of the barrier runs (w, H and the raw loss against t).
* P2 reads the Vendi score (eisbach.diversity) and the Table 2 metrics against lambda.
* P3 pairs each barrier (run, prompt) with its baseline twin on consistency and diversity.
* P4 pairs each LoRA barrier sample with the DoRA barrier sample of the same training seed,
  prompt and sampling seed on PCA coverage.

CIs of paired differences are two-stage bootstraps clustered by training seed
(eisbach.stats); a claim that rests on one training seed is "inconclusive" whatever its CI.
The rules are written out in docs/metrics.md.
"""

from __future__ import annotations

import numpy as np

from eisbach.metrics import METRICS
from eisbach.stats import bootstrap_p, clustered_bootstrap, independent_bootstrap, verdict

LOW_T, HIGH_T = 0.3, 0.7
P2_BAND = (0.3, 0.7)
P2_COLLAPSE = 0.8


def _interval(boots, alpha: float) -> tuple[float, float]:
    lo, hi = np.quantile(boots, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def clustered_reading(groups: dict, higher_is_better: bool, cfg: dict) -> dict:
    """Mean of seed means of per-seed values (or paired differences) with its clustered CI,
    p-value and verdict; ``groups`` maps a training seed to its values."""
    finite = {k: np.asarray(v, float) for k, v in groups.items()}
    finite = {k: v[np.isfinite(v)] for k, v in finite.items()}
    finite = {k: v for k, v in finite.items() if v.size}
    n = int(sum(v.size for v in finite.values()))
    result = clustered_bootstrap(list(finite.values()), cfg["n_boot"], cfg["seed"])
    if result is None:
        return {"units": n, "seeds": len(finite), "verdict": "inconclusive",
                "reason": f"{n} finite values"}  # fmt: skip
    estimate, boots = result
    lo, hi = _interval(boots, float(cfg["alpha"]))
    out = {"units": n, "seeds": len(finite), "diff": estimate, "ci_low": lo, "ci_high": hi}
    out["p_value"] = bootstrap_p(boots)
    if len(finite) < 2:
        return out | {
            "verdict": "inconclusive",
            "reason": "one training seed: the CI covers sample-to-sample variation only",
        }
    return out | {"verdict": verdict(lo, hi, higher_is_better)}


def _barrier_log(logs: dict, runs: dict, group_of) -> list[dict]:
    return [r for rid, log in logs.items() if group_of(runs[rid]) == "barrier" for r in log]


def p1(log: list[dict], cfg: dict) -> dict:
    claim = {
        "id": "P1",
        "claim": f"w is higher at low noise (t<{LOW_T}) than at high noise (t>{HIGH_T})",
        "metric": "w (training log)",
    }
    t = np.array([r["t"] for r in log])
    w = np.array([r["w"] for r in log])
    low, high = w[t < LOW_T], w[t > HIGH_T]
    if len(low) < 2 or len(high) < 2:
        return claim | {
            "verdict": "inconclusive",
            "reason": f"too few logged samples per t-bin (low {len(low)}, high {len(high)})",
        }
    diff, lo, hi, boots = independent_bootstrap(
        low, high, cfg["n_boot"], cfg["seed"], float(cfg["alpha"])
    )
    return claim | {
        "barrier_mean": float(low.mean()),
        "baseline_mean": float(high.mean()),
        "n_barrier": int(len(low)),
        "n_baseline": int(len(high)),
        "diff": diff,
        "ci_low": lo,
        "ci_high": hi,
        "p_value": bootstrap_p(boots),
        "verdict": verdict(lo, hi, True),
    }


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 3 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def p5(log: list[dict], cfg: dict) -> dict:
    """corr(H, loss) at low t minus at high t, with scipy.stats.bootstrap over the log rows of
    each t-bin (resampled independently)."""
    from scipy.stats import bootstrap

    claim = {"id": "P5", "claim": "corr(H, loss) is positive at low t and lower at high t"}
    t = np.array([r["t"] for r in log])
    h = np.array([r["H"] for r in log])
    loss = np.array([r["raw_loss"] for r in log])
    idx_low, idx_high = np.flatnonzero(t < LOW_T), np.flatnonzero(t > HIGH_T)
    if len(idx_low) < 3 or len(idx_high) < 3:
        return claim | {"verdict": "inconclusive", "reason": "too few logged samples per t-bin"}
    c_low, c_high = _corr(h[idx_low], loss[idx_low]), _corr(h[idx_high], loss[idx_high])
    if not (np.isfinite(c_low) and np.isfinite(c_high)):
        return claim | {"verdict": "inconclusive", "reason": "H or loss is constant in a t-bin"}

    def statistic(a, b):
        a, b = a.astype(int), b.astype(int)
        return _corr(h[a], loss[a]) - _corr(h[b], loss[b])

    res = bootstrap(
        (idx_low.astype(float), idx_high.astype(float)),
        statistic,
        n_resamples=int(cfg["n_boot"]),
        confidence_level=1 - float(cfg["alpha"]),
        method="percentile",
        vectorized=False,
        random_state=np.random.default_rng(int(cfg["seed"])),
    )
    boots = res.bootstrap_distribution
    lo, hi = _interval(boots[np.isfinite(boots)], float(cfg["alpha"]))
    v = verdict(lo, hi, True)
    reason = None
    if v == "supported" and not c_low > 0:
        v, reason = "inconclusive", "corr(H, loss) at low t is not positive"
    out = claim | {
        "corr_low_t": c_low,
        "corr_high_t": c_high,
        "diff": c_low - c_high,
        "ci_low": lo,
        "ci_high": hi,
        "p_value": bootstrap_p(boots),
        "verdict": v,
    }
    return out | ({"reason": reason} if reason else {})


def _lam(row: dict) -> float:
    return 0.0 if row["group"] == "baseline" else float(row["lam"])


def p2(prompt_rows: list[dict], sample_rows: list[dict], adapter: str, cfg: dict) -> dict:
    """Diversity collapse beyond lambda 0.8, and the best lambda in 0.3-0.7."""
    claim = {
        "id": "P2",
        "claim": "the best lambda is 0.3-0.7, with diversity collapse beyond 0.8",
        "metric": "vendi",
    }
    sweep = [
        r for r in prompt_rows if r["group"] in ("barrier", "baseline") and r["adapter"] == adapter
    ]
    lams = sorted({_lam(r) for r in sweep})
    by_lambda = []
    for lam in lams:
        at = [r for r in sweep if _lam(r) == lam]
        seeds = sorted({r["train_seed"] for r in at})
        reading = {"lam": lam, "runs": sorted({r["run_id"] for r in at})}
        vendi = clustered_reading(
            {s: [r["vendi"] for r in at if r["train_seed"] == s] for s in seeds}, True, cfg
        )
        reading["vendi"] = vendi.get("diff")
        reading["vendi_ci"] = [vendi.get("ci_low"), vendi.get("ci_high")]
        samples = [r for r in sample_rows if r["group"] in ("barrier", "baseline")]
        samples = [r for r in samples if r["adapter"] == adapter and _lam(r) == lam]
        for name, spec in METRICS.items():
            if spec.table2:
                values = np.array([r[name] for r in samples], float)
                reading[name] = float(np.nanmean(values)) if np.isfinite(values).any() else None
        by_lambda.append(reading)
    claim["by_lambda"] = by_lambda
    band = [r for r in by_lambda if P2_BAND[0] <= r["lam"] <= P2_BAND[1] and r["vendi"] is not None]
    beyond = [r for r in by_lambda if r["lam"] > P2_COLLAPSE and r["vendi"] is not None]
    if not band or not beyond:
        return claim | {
            "verdict": "inconclusive",
            "reason": f"needs sampled runs at a lambda in {list(P2_BAND)} and one above "
            f"{P2_COLLAPSE}; this grid has lambda {lams}",
        }
    best = max(band, key=lambda r: r["vendi"])
    overall = max((r for r in by_lambda if r["vendi"] is not None), key=lambda r: r["vendi"])
    band_rows = {
        (r["train_seed"], r["prompt_id"]): r["vendi"] for r in sweep if _lam(r) == best["lam"]
    }
    diffs: dict = {}
    for r in sweep:
        if _lam(r) > P2_COLLAPSE and (r["train_seed"], r["prompt_id"]) in band_rows:
            diffs.setdefault(r["train_seed"], []).append(
                band_rows[(r["train_seed"], r["prompt_id"])] - r["vendi"]
            )
    reading = clustered_reading(diffs, True, cfg)
    out = claim | reading | {"best_lambda_in_band": best["lam"], "best_lambda": overall["lam"]}
    out["claim_detail"] = (
        f"Vendi at lambda {best['lam']:g} minus Vendi above {P2_COLLAPSE}, paired by training "
        "seed and prompt"
    )
    if reading["verdict"] == "supported" and not P2_BAND[0] <= overall["lam"] <= P2_BAND[1]:
        out |= {
            "verdict": "inconclusive",
            "reason": f"diversity drops above {P2_COLLAPSE}, but the most diverse lambda is "
            f"{overall['lam']:g}, outside {list(P2_BAND)}",
        }
    return out


def p3(prompt_rows: list[dict], lam: float, adapter: str, cfg: dict) -> dict:
    """Barrier minus baseline on consistency AND diversity, paired by (training seed, prompt)."""
    claim = {
        "id": "P3",
        "claim": "higher cross-seed structural consistency with higher detail diversity",
        "metric": "consistency, vendi",
    }
    base = {
        (r["train_seed"], r["prompt_id"]): r
        for r in prompt_rows
        if r["group"] == "baseline" and r["adapter"] == adapter
    }
    parts = {}
    for name in ("consistency", "vendi"):
        diffs: dict = {}
        for r in prompt_rows:
            twin = base.get((r["train_seed"], r["prompt_id"]))
            if r["group"] != "barrier" or r["adapter"] != adapter or twin is None:
                continue
            if float(r["lam"]) == lam:
                diffs.setdefault(r["train_seed"], []).append(r[name] - twin[name])
        parts[name] = clustered_reading(diffs, True, cfg)
    out = claim | {"consistency": parts["consistency"], "vendi": parts["vendi"]}
    if any("ci_low" not in p for p in parts.values()):
        return out | {
            "verdict": "inconclusive",
            "reason": "needs barrier and baseline samples with two or more seeds per prompt",
        }
    verdicts = [p["verdict"] for p in parts.values()]
    ps = [p["p_value"] for p in parts.values()]
    if "contradicted" in verdicts:
        v, p = (
            "contradicted",
            min(p for p, x in zip(ps, verdicts, strict=True) if x == "contradicted"),
        )
    elif all(x == "supported" for x in verdicts):
        v, p = "supported", max(ps)  # intersection-union: both must hold
    else:
        v, p = "inconclusive", max(ps)
    out |= {"verdict": v, "p_value": p}
    reasons = [f"{n}: {x['reason']}" for n, x in parts.items() if x.get("reason")]
    return out | ({"reason": "; ".join(reasons)} if reasons else {})


def p4(sample_rows: list[dict], lam: float, cfg: dict) -> dict:
    """DoRA minus LoRA PCA coverage under the barrier, paired by training seed, prompt and
    sampling seed (the same initial noise)."""
    claim = {
        "id": "P4",
        "claim": "LoRA-only covers less PCA area than DoRA with the barrier",
        "metric": "pca_coverage (DoRA - LoRA)",
    }
    barrier = [r for r in sample_rows if r["group"] == "barrier" and float(r["lam"]) == lam]
    dora = {
        (r["train_seed"], r["prompt_id"], r["seed"]): r for r in barrier if r["adapter"] == "dora"
    }
    diffs: dict = {}
    for r in barrier:
        twin = dora.get((r["train_seed"], r["prompt_id"], r["seed"]))
        if r["adapter"] == "lora" and twin is not None:
            diffs.setdefault(r["train_seed"], []).append(twin["pca_coverage"] - r["pca_coverage"])
    if not diffs:
        adapters = sorted({r["adapter"] for r in barrier})
        return claim | {
            "verdict": "inconclusive",
            "reason": f"needs sampled LoRA and DoRA barrier runs at lambda {lam:g}; this grid "
            f"has {adapters}",
        }
    return claim | clustered_reading(diffs, True, cfg)


def prediction_claims(logs, runs, prompt_rows, sample_rows, cfg, group_of) -> list[dict]:
    lam = float(cfg.get("table2_lam", 0.5))
    adapter = str(cfg.get("table2_adapter", "dora"))
    log = _barrier_log(logs, runs, group_of)
    if not log:
        reason = "the grid has no eisbach run with lam > 0"
        return [{"id": p, "verdict": "inconclusive", "reason": reason} for p in ("P1", "P5")] + [
            p2(prompt_rows, sample_rows, adapter, cfg),
            p3(prompt_rows, lam, adapter, cfg),
            p4(sample_rows, lam, cfg),
        ]
    return [
        p1(log, cfg),
        p2(prompt_rows, sample_rows, adapter, cfg),
        p3(prompt_rows, lam, adapter, cfg),
        p4(sample_rows, lam, cfg),
        p5(log, cfg),
    ]
