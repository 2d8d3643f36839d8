"""The paper's section 9 predictions P1-P5, each a reading of eisbach.stats' one rule.

Every prediction is reduced to one number per training seed (the cluster) and tested with the
t-test of eisbach.stats against its band +-delta of negligible effects, which every claim states
in its quantity's units with where it comes from (``min_effect``, ``min_effect_source``):

* P1 (w against t) and P5 (corr(H, loss) against t) read the training logs: one statistic per
  barrier run (its low-t minus high-t value), averaged over the runs of each training seed. The
  logged training samples of a run share its adapter, so they are never the unit.
* P2 compares the Vendi score at a lambda fixed before the run (``evaluate.p2_lam``, default the
  Table 2 lambda, the paper's 0.5) with the lambdas above 0.8, paired by training seed and
  prompt; which lambda of the sweep is the most diverse is reported, never tested, as picking
  the best lambda from the data it is then tested on would inflate "supported".
* P3 is a conjunction (consistency and diversity both higher): eisbach.stats.compound_reading.
* P4 pairs each LoRA barrier sample with the DoRA barrier sample of the same training seed,
  prompt and sampling seed on PCA coverage.

The rules are written out in docs/metrics.md, "Inference".
"""

from __future__ import annotations

import numpy as np

from eisbach.stats import cluster_reading, clustered_ci, compound_reading

LOW_T, HIGH_T = 0.3, 0.7
P2_BAND = (0.3, 0.7)
P2_COLLAPSE = 0.8
# Cohen's small correlation: the band of a difference of correlations (P5), whose scale is its
# own; a band from data would need correlations of runs without the barrier, which differ only
# in the weight applied
SMALL_CORRELATION = 0.1


NO_BARRIER_RUN = {"verdict": "inconclusive", "reason": "the grid has no eisbach run with lam > 0"}


def alpha_of(cfg: dict) -> float:
    return float(cfg["alpha"])


def spread_band(name: str, values, what: str, cfg: dict) -> tuple[float, str]:
    """(delta, where it comes from) of a quantity: ``evaluate.min_effect[name]`` where given,
    else ``evaluate.min_effect_sd`` (0.2) standard deviations of ``values`` (``what`` says
    which), 0 where fewer than two values are finite."""
    fixed = cfg.get("min_effect", {})
    if name in fixed:
        return float(fixed[name]), f"evaluate.min_effect.{name}"
    scale = float(cfg.get("min_effect_sd", 0.2))
    v = np.asarray(list(values), float)
    v = v[np.isfinite(v)]
    if v.size < 2:
        return 0.0, f"no spread of {name} to scale by ({what}: {v.size} values); 0"
    return scale * float(np.std(v, ddof=1)), f"{scale:g} SD of {name} over {v.size} {what}"


def with_band(reading: dict, band: tuple[float, str]) -> dict:
    return reading | {"min_effect": band[0], "min_effect_source": band[1]}


def _run_bins(log: list[dict], key: str):
    t = np.array([r["t"] for r in log], float)
    v = np.array([r[key] for r in log], float)
    return v[t < LOW_T], v[t > HIGH_T]


def _per_seed(per_run: dict, runs: dict) -> dict:
    """training seed -> [statistic of each of its runs]."""
    out: dict = {}
    for rid, value in per_run.items():
        if np.isfinite(value):
            out.setdefault(runs[rid]["seed"], []).append(value)
    return out


def _runs_of(logs: dict, runs: dict, group_of, group: str) -> dict:
    return {rid: log for rid, log in logs.items() if group_of(runs[rid]) == group and log}


def p1(logs: dict, runs: dict, group_of, cfg: dict) -> dict:
    """w at t < 0.3 minus w at t > 0.7, one difference per barrier run, clustered by seed."""
    claim = {
        "id": "P1",
        "claim": f"w is higher at low noise (t<{LOW_T}) than at high noise (t>{HIGH_T})",
        "metric": "w (training log)",
        "unit": "w",
    }
    barrier = _runs_of(logs, runs, group_of, "barrier")
    if not barrier:
        return claim | NO_BARRIER_RUN
    per_run = {}
    for rid, log in barrier.items():
        low, high = _run_bins(log, "w")
        per_run[rid] = low.mean() - high.mean() if len(low) and len(high) else np.nan
    # w is logged for the baseline too (computed, not applied): its spread is that of w
    # without the barrier's weighting; the barrier runs' own logs where no baseline ran
    baseline = _runs_of(logs, runs, group_of, "baseline")
    source = baseline or barrier
    what = "logged samples of the " + ("baseline runs" if baseline else "barrier runs")
    band = spread_band("w", (r["w"] for log in source.values() for r in log), what, cfg)
    reading = cluster_reading(_per_seed(per_run, runs), band[0], alpha_of(cfg))
    return claim | {"runs": len(barrier)} | with_band(reading, band)


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 3 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def p5(logs: dict, runs: dict, group_of, cfg: dict) -> dict:
    """corr(H, loss) at t < 0.3 is positive (part "low_t") and exceeds that at t > 0.7 (part
    "drop"): per barrier run, clustered by training seed, both parts must hold."""
    claim = {
        "id": "P5",
        "claim": "corr(H, loss) is positive at low t and lower at high t",
        "metric": "corr(H, raw loss)",
        "unit": "correlation",
    }
    barrier = _runs_of(logs, runs, group_of, "barrier")
    if not barrier:
        return claim | NO_BARRIER_RUN
    low_corr, drop = {}, {}
    for rid, log in barrier.items():
        t = np.array([r["t"] for r in log], float)
        h = np.array([r["H"] for r in log], float)
        loss = np.array([r["raw_loss"] for r in log], float)
        lo, hi = t < LOW_T, t > HIGH_T
        low_corr[rid] = _corr(h[lo], loss[lo])
        drop[rid] = low_corr[rid] - _corr(h[hi], loss[hi])
    fixed = cfg.get("min_effect", {})
    band = (
        (float(fixed["corr_h_loss"]), "evaluate.min_effect.corr_h_loss")
        if "corr_h_loss" in fixed
        else (SMALL_CORRELATION, f"Cohen's small correlation, {SMALL_CORRELATION:g}")
    )
    parts = {
        "low_t": with_band(
            cluster_reading(_per_seed(low_corr, runs), band[0], alpha_of(cfg)), band
        ),
        "drop": with_band(cluster_reading(_per_seed(drop, runs), band[0], alpha_of(cfg)), band),
    }
    out = claim | {"runs": len(barrier)} | parts
    out |= {
        k: parts["drop"][k] for k in ("diff", "ci_low", "ci_high", "seeds") if k in parts["drop"]
    }
    out |= {"corr_low_t": parts["low_t"].get("diff"), "min_effect": band[0]}
    out["min_effect_source"] = band[1]
    return out | compound_reading(parts, alpha_of(cfg)) | _part_reasons(parts)


def _part_reasons(parts: dict) -> dict:
    reasons = [f"{n}: {x['reason']}" for n, x in parts.items() if x.get("reason")]
    return {"reason": "; ".join(reasons)} if reasons else {}


def _lam(row: dict) -> float:
    return 0.0 if row["group"] == "baseline" else float(row["lam"])


def diversity_band(name: str, prompt_rows: list[dict], adapter: str, cfg: dict):
    """The band of a per-prompt quantity (vendi, consistency): its spread over the baseline's
    (run, prompt) rows, the runs without the barrier."""
    values = [r[name] for r in prompt_rows if r["group"] == "baseline" and r["adapter"] == adapter]
    return spread_band(name, values, f"baseline (run, prompt) rows of {adapter}", cfg)


def p2(prompt_rows: list[dict], sample_rows: list[dict], adapter: str, cfg: dict) -> dict:
    """Vendi at the pre-set lambda (``evaluate.p2_lam``) minus the mean Vendi of the lambdas
    above 0.8, paired by training seed and prompt; by_lambda lists every lambda's readings."""
    from eisbach.metrics import METRICS

    fixed_lam = float(cfg.get("p2_lam", cfg.get("table2_lam", 0.5)))
    claim = {
        "id": "P2",
        "claim": "the best lambda is 0.3-0.7, with diversity collapse beyond 0.8",
        "metric": "vendi",
        "unit": "effective clips",
        "lambda_tested": fixed_lam,
        "lambda_selection": "fixed before the run (evaluate.p2_lam, default table2_lam); the "
        "most diverse lambda of the sweep is reported, not tested",
    }
    sweep = [
        r for r in prompt_rows if r["group"] in ("barrier", "baseline") and r["adapter"] == adapter
    ]
    lams = sorted({_lam(r) for r in sweep})
    by_lambda = []
    for lam in lams:
        at = [r for r in sweep if _lam(r) == lam]
        reading = {"lam": lam, "runs": sorted({r["run_id"] for r in at})}
        groups: dict = {}
        for r in at:
            groups.setdefault(r["train_seed"], []).append(r["vendi"])
        ci = clustered_ci(list(groups.values()), alpha_of(cfg))
        reading["vendi"] = None if ci is None else ci[0]
        reading["vendi_ci"] = [None, None] if ci is None else [ci[1], ci[2]]
        samples = [r for r in sample_rows if r["group"] in ("barrier", "baseline")]
        samples = [r for r in samples if r["adapter"] == adapter and _lam(r) == lam]
        for name, spec in METRICS.items():
            if spec.table2:
                values = np.array([r[name] for r in samples], float)
                reading[name] = float(np.nanmean(values)) if np.isfinite(values).any() else None
        by_lambda.append(reading)
    claim["by_lambda"] = by_lambda
    rated = [r for r in by_lambda if r["vendi"] is not None]
    if rated:
        claim["best_lambda"] = max(rated, key=lambda r: r["vendi"])["lam"]
    beyond = [r for r in rated if r["lam"] > P2_COLLAPSE]
    if fixed_lam not in {r["lam"] for r in rated} or not beyond:
        return claim | {
            "verdict": "inconclusive",
            "reason": f"needs sampled runs at lambda {fixed_lam:g} (evaluate.p2_lam) and one "
            f"above {P2_COLLAPSE}; this grid has lambda {lams}",
        }
    at_fixed = {
        (r["train_seed"], r["prompt_id"]): r["vendi"] for r in sweep if _lam(r) == fixed_lam
    }
    above: dict = {}
    for r in sweep:
        if _lam(r) > P2_COLLAPSE and (r["train_seed"], r["prompt_id"]) in at_fixed:
            above.setdefault((r["train_seed"], r["prompt_id"]), []).append(r["vendi"])
    diffs: dict = {}
    for (seed, prompt), values in above.items():
        diffs.setdefault(seed, []).append(at_fixed[(seed, prompt)] - float(np.mean(values)))
    band = diversity_band("vendi", prompt_rows, adapter, cfg)
    out = claim | with_band(cluster_reading(diffs, band[0], alpha_of(cfg)), band)
    out["claim_detail"] = (
        f"Vendi at lambda {fixed_lam:g} minus the mean Vendi above {P2_COLLAPSE}, paired by "
        "training seed and prompt"
    )
    return out


def p3(prompt_rows: list[dict], lam: float, adapter: str, cfg: dict) -> dict:
    """Barrier minus baseline on consistency AND diversity, paired by (training seed, prompt):
    a conjunction, read by eisbach.stats.compound_reading."""
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
        band = diversity_band(name, prompt_rows, adapter, cfg)
        parts[name] = with_band(cluster_reading(diffs, band[0], alpha_of(cfg)), band)
    out = claim | parts | {"min_effect_source": "each part's own (consistency, vendi)"}
    if any("p_value" not in p for p in parts.values()):
        return out | {
            "verdict": "inconclusive",
            "reason": "needs barrier and baseline samples of two or more training seeds; "
            + _part_reasons(parts).get("reason", ""),
        }
    return out | compound_reading(parts, alpha_of(cfg)) | _part_reasons(parts)


def p4(sample_rows: list[dict], lam: float, cfg: dict, band: tuple[float, str] = (0.0, "")) -> dict:
    """DoRA minus LoRA PCA coverage under the barrier, paired by training seed, prompt and
    sampling seed (the same initial noise); ``band``: Table 2's for pca_coverage."""
    claim = {
        "id": "P4",
        "claim": "LoRA-only covers less PCA area than DoRA with the barrier",
        "metric": "pca_coverage (DoRA - LoRA)",
        "unit": "dB^2",
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
    return claim | with_band(cluster_reading(diffs, band[0], alpha_of(cfg)), band)


def prediction_claims(
    logs, runs, prompt_rows, sample_rows, cfg, group_of, table2_bands: dict | None = None
) -> list[dict]:
    """P1-P5; ``table2_bands``: metric -> (delta, source) of Table 2, P4's pca_coverage band."""
    lam = float(cfg.get("table2_lam", 0.5))
    adapter = str(cfg.get("table2_adapter", "dora"))
    pca_band = (table2_bands or {}).get("pca_coverage", (0.0, "no Table 2 band given; 0"))
    return [
        p1(logs, runs, group_of, cfg),
        p2(prompt_rows, sample_rows, adapter, cfg),
        p3(prompt_rows, lam, adapter, cfg),
        p4(sample_rows, lam, cfg, pca_band),
        p5(logs, runs, group_of, cfg),
    ]
