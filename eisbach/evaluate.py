"""Evaluate stage: Table 2 metrics per sample, and a verdict per claim computed from them.

Table 2 compares the barrier runs (scheme ``eisbach`` at ``evaluate.table2_lam``, 0.5, with
``evaluate.table2_adapter``, DoRA: the paper's setting) against the baseline runs (``none``) sample
by sample: a barrier sample pairs with the baseline sample of the same adapter, training seed,
prompt and sampling seed, which share their initial noise. The CI of the mean difference is a
two-stage bootstrap over training seeds and then pairs (eisbach.stats). A verdict is "supported"
when that CI excludes 0 in the paper's direction, "contradicted" when it excludes 0 the other
way, and "inconclusive" otherwise, with one training seed, or when the grid lacks what a claim
needs. The controls are compared on the held-out loss (eisbach.controls).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import soundfile as sf
from tqdm import tqdm

from eisbach import provenance
from eisbach.atomic import write_json, write_parquet
from eisbach.controls import control_comparisons
from eisbach.metrics import METRICS, bootstrap_ci, compute_metrics, verdict
from eisbach.stats import clustered_ci

LOW_T, HIGH_T = 0.3, 0.7


def group_of(run: dict | None) -> str:
    """barrier / baseline / base / control, from a run.json (None for the base model)."""
    if run is None or run.get("kind") == "base":
        return "base"
    scheme = run["scheme"]
    if scheme["name"] == "none" or (scheme["name"] == "eisbach" and scheme.get("lam", 0.5) == 0):
        return "baseline"
    if scheme["name"] == "eisbach":
        return "barrier"
    return "control"


def score_samples(index: list[dict], runs: dict[str, dict]) -> pa.Table:
    rows = []
    for entry in tqdm(index, desc="metrics", unit="clip", mininterval=2):
        audio, rate = sf.read(entry["path"], dtype="float32", always_2d=True)
        run = runs.get(entry["run_id"])
        rows.append(
            entry
            | {
                "group": group_of(run),
                "scheme": "base" if run is None else run["scheme"]["name"],
                "lam": None if run is None else run["scheme"].get("lam"),
                "adapter": None if run is None else run["adapter"]["type"],
                "train_seed": None if run is None else run["seed"],
            }
            | compute_metrics(audio.mean(axis=1), rate)
        )
    return pa.Table.from_pylist(rows)


def compare(x, y, higher_is_barrier: bool, cfg: dict) -> dict:
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    x, y = x[np.isfinite(x)], y[np.isfinite(y)]
    if len(x) < 2 or len(y) < 2:
        return {
            "verdict": "inconclusive",
            "reason": f"too few finite values (barrier {len(x)}, baseline {len(y)})",
        }
    diff, lo, hi = bootstrap_ci(
        x, y, n_boot=int(cfg["n_boot"]), seed=int(cfg["seed"]), alpha=float(cfg["alpha"])
    )
    return {
        "barrier_mean": float(x.mean()),
        "baseline_mean": float(y.mean()),
        "n_barrier": int(len(x)),
        "n_baseline": int(len(y)),
        "diff": diff,
        "ci_low": lo,
        "ci_high": hi,
        "verdict": verdict(lo, hi, higher_is_barrier),
    }


def table2_selection(cfg: dict) -> tuple[float, str]:
    """The paper's Table 2 run: eisbach at lambda 0.5 with DoRA, unless the config says else."""
    return float(cfg.get("table2_lam", 0.5)), str(cfg.get("table2_adapter", "dora"))


def table2_pairs(per_sample: list[dict], runs: dict[str, dict], cfg: dict) -> dict:
    """(adapter, training seed) -> [(barrier sample, baseline sample)]: each sample of an eisbach
    run at the Table 2 lambda and adapter type, with the sample of the baseline run of the same
    adapter and training seed for the same prompt and sampling seed (the same noise)."""
    lam, adapter_type = table2_selection(cfg)
    barrier, baseline = [], {}
    for row in per_sample:
        run = runs.get(row["run_id"])
        if run is None or run.get("kind") == "base" or run["adapter"]["type"] != adapter_type:
            continue
        cluster = (json.dumps(run["adapter"], sort_keys=True), run["seed"])
        if row["group"] == "baseline":
            baseline[(cluster, row["prompt_id"], row["seed"])] = row
        elif row["group"] == "barrier" and float(run["scheme"]["lam"]) == lam:
            barrier.append((cluster, row))
    pairs: dict = {}
    for cluster, row in barrier:
        match = baseline.get((cluster, row["prompt_id"], row["seed"]))
        if match is not None:
            pairs.setdefault(cluster, []).append((row, match))
    return pairs


def paired_claim(pairs: dict, name: str, higher_is_barrier: bool, cfg: dict) -> dict:
    """Barrier - baseline of one metric over the pairs, with a CI clustered by training seed."""
    finite = {
        cluster: [
            (x[name], y[name]) for x, y in ps if np.isfinite(x[name]) and np.isfinite(y[name])
        ]
        for cluster, ps in pairs.items()
    }
    finite = {cluster: ps for cluster, ps in finite.items() if ps}
    values = [v for ps in finite.values() for v in ps]
    ci = clustered_ci(
        [np.array([x - y for x, y in ps]) for ps in finite.values()],
        cfg["n_boot"],
        cfg["seed"],
        float(cfg["alpha"]),
    )
    result = {"pairs": len(values), "seeds": len(finite)}
    if ci is None:
        return result | {"verdict": "inconclusive", "reason": f"{len(values)} finite pairs"}
    diff, lo, hi = ci
    result |= {
        "barrier_mean": float(np.mean([x for x, _ in values])),
        "baseline_mean": float(np.mean([y for _, y in values])),
        "diff": diff,
        "ci_low": lo,
        "ci_high": hi,
    }
    if len(finite) < 2:
        return result | {
            "verdict": "inconclusive",
            "reason": "one training seed: the CI covers sample-to-sample variation only",
        }
    return result | {"verdict": verdict(lo, hi, higher_is_barrier)}


def table2_claims(per_sample: list[dict], runs: dict[str, dict], cfg: dict) -> list[dict]:
    lam, adapter_type = table2_selection(cfg)
    pairs = table2_pairs(per_sample, runs, cfg)
    barrier = f"barrier (eisbach lambda {lam:g}, {adapter_type})"
    claims = []
    for name, spec in METRICS.items():
        if not spec.table2:
            continue
        claim = {
            "id": f"table2.{name}",
            "claim": f"{barrier} {'>' if spec.higher_is_barrier else '<'} baseline: {spec.description}",
            "metric": name,
            "unit": spec.unit,
        }
        if not pairs:
            claims.append(
                claim
                | {
                    "verdict": "inconclusive",
                    "reason": f"no sample of eisbach at lambda {lam:g} with {adapter_type} pairs "
                    "with a baseline sample (same adapter, training seed, prompt, sampling seed)",
                }
            )
            continue
        claims.append(claim | paired_claim(pairs, name, spec.higher_is_barrier, cfg))
    claims.append(dynamic_range_levels(pairs, cfg))
    return claims


def dynamic_range_levels(pairs: dict, cfg: dict) -> dict:
    """The paper's absolute levels: barrier > 40 dB while baseline < 25 dB."""
    claim = {
        "id": "table2.dynamic_range_levels",
        "claim": "barrier dynamic range > 40 dB and baseline < 25 dB",
        "metric": "dynamic_range_db",
        "unit": "dB",
    }
    args = (cfg["n_boot"], cfg["seed"], float(cfg["alpha"]))
    barrier = clustered_ci([[x["dynamic_range_db"] for x, _ in ps] for ps in pairs.values()], *args)
    baseline = clustered_ci(
        [[y["dynamic_range_db"] for _, y in ps] for ps in pairs.values()], *args
    )
    if barrier is None or baseline is None:
        return claim | {"verdict": "inconclusive", "reason": "too few finite values"}
    (bm, blo, bhi), (cm, clo, chi) = barrier, baseline
    if len(pairs) < 2:
        v = "inconclusive"
    elif blo > 40 and chi < 25:
        v = "supported"
    elif bhi < 40 or clo > 25:
        v = "contradicted"
    else:
        v = "inconclusive"
    return claim | {
        "barrier_mean": bm,
        "baseline_mean": cm,
        "ci_low": blo,
        "ci_high": bhi,
        "baseline_ci": [clo, chi],
        "verdict": v,
        "reason": "CIs are of each group's mean level (clustered by training seed), not of the "
        "difference" + ("; one training seed" if len(pairs) < 2 else ""),
    }


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 3 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def prediction_claims(logs: dict[str, list[dict]], runs: dict[str, dict], cfg: dict) -> list[dict]:
    barrier_log = [r for rid, log in logs.items() if group_of(runs[rid]) == "barrier" for r in log]
    claims = []
    if not barrier_log:
        reason = "the grid has no eisbach run with lam > 0"
        return [
            {"id": p, "verdict": "inconclusive", "reason": reason}
            for p in ("P1", "P2", "P3", "P4", "P5")
        ]
    t = np.array([r["t"] for r in barrier_log])
    w = np.array([r["w"] for r in barrier_log])
    h = np.array([r["H"] for r in barrier_log])
    loss = np.array([r["raw_loss"] for r in barrier_log])
    low, high = t < LOW_T, t > HIGH_T
    p1 = compare(w[low], w[high], True, cfg)
    claims.append(
        {
            "id": "P1",
            "claim": f"w is higher at low noise (t<{LOW_T}) than at high noise (t>{HIGH_T})",
            "metric": "w (training log)",
            **p1,
        }
    )

    rng = np.random.default_rng(int(cfg["seed"]))
    idx_low, idx_high = np.flatnonzero(low), np.flatnonzero(high)
    p5 = {"id": "P5", "claim": "corr(H, loss) is positive at low t and lower at high t"}
    if len(idx_low) >= 3 and len(idx_high) >= 3:
        c_low, c_high = correlation(h[low], loss[low]), correlation(h[high], loss[high])
        boots = []
        for _ in range(int(cfg["n_boot"])):
            bl = rng.choice(idx_low, len(idx_low))
            bh = rng.choice(idx_high, len(idx_high))
            boots.append(correlation(h[bl], loss[bl]) - correlation(h[bh], loss[bh]))
        boots = np.asarray(boots)
        boots = boots[np.isfinite(boots)]
        if len(boots) and np.isfinite(c_low):
            alpha = float(cfg["alpha"])
            lo, hi = np.quantile(boots, [alpha / 2, 1 - alpha / 2])
            v = verdict(float(lo), float(hi), True)
            if v == "supported" and not c_low > 0:
                v = "inconclusive"
            p5 |= {"corr_low_t": c_low, "corr_high_t": c_high, "diff": c_low - c_high}
            p5 |= {"ci_low": float(lo), "ci_high": float(hi), "verdict": v}
        else:
            p5 |= {"verdict": "inconclusive", "reason": "H or loss is constant within a t-bin"}
    else:
        p5 |= {"verdict": "inconclusive", "reason": "too few logged samples per t-bin"}
    claims.append(p5)

    lams = sorted(
        {runs[rid]["scheme"].get("lam") for rid in logs if group_of(runs[rid]) == "barrier"}
    )
    adapters = sorted({runs[rid]["adapter"]["type"] for rid in logs})
    claims.append(
        {
            "id": "P2",
            "claim": "the best lambda is 0.3-0.7, with diversity collapse beyond 0.8",
            "verdict": "inconclusive",
            "reason": f"needs a lambda sweep; this grid has lambda {lams}",
        }
    )
    claims.append(
        {
            "id": "P3",
            "claim": "higher cross-seed structural consistency with higher detail diversity",
            "verdict": "inconclusive",
            "reason": "the cross-seed consistency and diversity metrics are not built yet",
        }
    )
    claims.append(
        {
            "id": "P4",
            "claim": "LoRA-only covers less PCA area than DoRA with the barrier",
            "verdict": "inconclusive",
            "reason": f"needs both LoRA and DoRA runs; this grid has {adapters}",
        }
    )
    return claims


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--index", type=Path, required=True)
    parser.add_argument("--runs", type=Path, nargs="+", required=True, help="run folders")
    parser.add_argument("--evaluate-json", required=True)
    parser.add_argument("--out-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    cfg = json.loads(args.evaluate_json)

    runs = {d.name: json.loads((d / "run.json").read_text()) for d in args.runs}
    logs = {d.name: pq.read_table(d / "train_log.parquet").to_pylist() for d in args.runs}
    heldout = {d.name: pq.read_table(d / "heldout_loss.parquet").to_pylist() for d in args.runs}
    index = pq.read_table(args.index).to_pylist()
    per_sample = score_samples(index, runs)
    stage_config = {"evaluate": cfg, "runs": sorted(runs)}
    meta = provenance.parquet_metadata(stage_config, stage="evaluate")
    write_parquet(args.out_dir / "per_sample.parquet", per_sample.replace_schema_metadata(meta))

    rows = per_sample.to_pylist()
    summary = {
        "claims": table2_claims(rows, runs, cfg) + prediction_claims(logs, runs, cfg),
        "controls": control_comparisons(runs, heldout, cfg),
        "metrics": {name: asdict(spec) for name, spec in METRICS.items()},
        "groups": {
            g: sorted({r["run_id"] for r in rows if r["group"] == g})
            for g in ("barrier", "baseline", "base", "control")
        },
        "weight_spread": {
            rid: {"mean_applied_weight": run["mean_applied_weight"], "by_t": run["spread_by_t"]}
            for rid, run in runs.items()
        },
        "provenance": provenance.provenance(stage_config),
    }
    write_json(args.out_dir / "summary.json", summary)
    for claim in summary["claims"]:
        print(f"{claim['id']}: {claim['verdict']}")
    for c in summary["controls"]:
        print(f"control {c['control']} vs {c['reference']} ({c['adapter']}): {c['reading']}")
