"""Evaluate stage: Table 2 metrics per sample, and a verdict per claim computed from them.

Table 2 compares the barrier runs (scheme ``eisbach`` at ``evaluate.table2_lam``, 0.5, with
``evaluate.table2_adapter``, DoRA: the paper's setting) against the baseline runs (``none``) sample
by sample: a barrier sample pairs with the baseline sample of the same adapter, training seed,
prompt and sampling seed, which share their initial noise. The CI of the mean difference is a
two-stage bootstrap over training seeds and then pairs (eisbach.stats). A verdict is "supported"
when that CI lies beyond the smallest effect of interest in the paper's direction (by default
0.2 standard deviations of the metric over the training clips: ``evaluate.min_effect_sd``, or
``evaluate.min_effect`` per metric), "contradicted" when it lies beyond it the other way, and
"inconclusive" otherwise: inside or across that band, with one training seed, or when the grid
lacks what a claim needs. The predictions P1-P5 are eisbach.predictions; every verdict is then
adjusted across all claims by Holm's rule (eisbach.stats.holm). The controls are compared on the
held-out loss (eisbach.controls). Each clip is analysed once: analyses are cached by the clip's
sha256 (eisbach.score_cache), so a rerun scores only new clips. docs/metrics.md has the
definitions.
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

from eisbach import diversity, provenance
from eisbach.atomic import write_json, write_parquet
from eisbach.controls import control_comparisons
from eisbach.integrity import verify_file
from eisbach.metrics import METRICS, analyse
from eisbach.predictions import prediction_claims
from eisbach.score_cache import ScoreCache, metrics_version
from eisbach.stats import bootstrap_p, clustered_bootstrap, holm, verdict


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


def analyse_clip(path, cache: ScoreCache, stats: dict, recorded=None):
    """(sha256, Analysis) of one WAV, from the cache when this clip was scored before.

    recorded: (sha256, record, rule) that wrote it; the WAV is checked against that sha256.
    """
    if recorded is not None and recorded[0]:
        sha = verify_file(path, recorded[0], record=recorded[1], rule=recorded[2])
    else:
        sha = provenance.file_sha256(path)
    found = cache.get(sha)
    if found is None:
        audio, rate = sf.read(path, dtype="float32", always_2d=True)
        found = analyse(audio.mean(axis=1), rate)
        cache.put(sha, found)
        stats["scored"] += 1
    else:
        stats["cached"] += 1
    return sha, found


def score_samples(
    index: list[dict], runs: dict[str, dict], cache: ScoreCache, stats: dict, index_path=None
):
    rows, analyses = [], {}
    for entry in tqdm(index, desc="metrics", unit="clip", mininterval=2):
        recorded = (entry.get("sha256"), index_path or "the sample index", "sample_run")
        sha, found = analyse_clip(entry["path"], cache, stats, recorded)
        analyses[sha] = found
        run = runs.get(entry["run_id"])
        rows.append(
            entry
            | {
                "sha256": sha,
                "group": group_of(run),
                "scheme": "base" if run is None else run["scheme"]["name"],
                "lam": None if run is None else run["scheme"].get("lam"),
                "adapter": None if run is None else run["adapter"]["type"],
                "train_seed": None if run is None else run["seed"],
            }
            | found.metrics
        )
    return pa.Table.from_pylist(rows), analyses


def score_references(
    manifest: list[dict], cache: ScoreCache, stats: dict, manifest_path=None
) -> list[dict]:
    """The metrics of the training and eval clips (status ok), to read the samples against."""
    rows = []
    for clip in manifest:
        if clip["status"] != "ok" or not clip.get("path"):
            continue
        recorded = (clip.get("sha256"), manifest_path or "the manifest", "data_shard")
        sha, found = analyse_clip(clip["path"], cache, stats, recorded)
        rows.append(
            {"id": clip["id"], "split": clip["split"], "path": clip["path"]} | found.metrics
        )
    return rows


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


def min_effects(references: list[dict], cfg: dict) -> dict[str, float]:
    """Per Table 2 metric, the smallest barrier - baseline difference that counts as an effect:
    ``evaluate.min_effect[metric]`` where given, else ``evaluate.min_effect_sd`` (0.2, a small
    effect in Cohen's terms) times the metric's standard deviation over the training clips,
    the spread of the music the runs learn from; 0 where that spread is unknown."""
    fixed = cfg.get("min_effect", {})
    scale = float(cfg.get("min_effect_sd", 0.2))
    train = [r for r in references if r.get("split") == "train"]
    out = {}
    for name, spec in METRICS.items():
        if not spec.table2:
            continue
        values = np.array([r[name] for r in train], float)
        values = values[np.isfinite(values)]
        spread = float(np.std(values, ddof=1)) if len(values) >= 2 else 0.0
        out[name] = float(fixed[name]) if name in fixed else scale * spread
    return out


def paired_claim(
    pairs: dict, name: str, higher_is_barrier: bool, cfg: dict, min_effect: float = 0.0
) -> dict:
    """Barrier - baseline of one metric over the pairs, with a CI clustered by training seed."""
    finite = {
        cluster: [
            (x[name], y[name]) for x, y in ps if np.isfinite(x[name]) and np.isfinite(y[name])
        ]
        for cluster, ps in pairs.items()
    }
    finite = {cluster: ps for cluster, ps in finite.items() if ps}
    values = [v for ps in finite.values() for v in ps]
    boot = clustered_bootstrap(
        [np.array([x - y for x, y in ps]) for ps in finite.values()], cfg["n_boot"], cfg["seed"]
    )
    result = {"pairs": len(values), "seeds": len(finite)}
    dropped = sum(len(ps) for ps in pairs.values()) - len(values)
    if dropped:
        result["nan_pairs"] = dropped
    if boot is None:
        return result | {"verdict": "inconclusive", "reason": f"{len(values)} finite pairs"}
    diff, boots = boot
    alpha = float(cfg["alpha"])
    lo, hi = (float(q) for q in np.quantile(boots, [alpha / 2, 1 - alpha / 2]))
    result |= {
        "p_value": bootstrap_p(boots),
        "barrier_mean": float(np.mean([x for x, _ in values])),
        "baseline_mean": float(np.mean([y for _, y in values])),
        "diff": diff,
        "ci_low": lo,
        "ci_high": hi,
        "min_effect": float(min_effect),
    }
    if len(finite) < 2:
        return result | {
            "verdict": "inconclusive",
            "reason": "one training seed: the CI covers sample-to-sample variation only",
        }
    decided = verdict(lo, hi, higher_is_barrier, min_effect)
    if decided == "inconclusive" and verdict(lo, hi, higher_is_barrier) != "inconclusive":
        return result | {
            "verdict": decided,
            "reason": f"the CI excludes 0 but not every negligible effect (|diff| <= "
            f"{min_effect:.3g} {METRICS[name].unit}, the smallest effect of interest)",
        }
    return result | {"verdict": decided}


def table2_claims(
    per_sample: list[dict], runs: dict[str, dict], cfg: dict, references: list[dict] = ()
) -> list[dict]:
    lam, adapter_type = table2_selection(cfg)
    pairs = table2_pairs(per_sample, runs, cfg)
    deltas = min_effects(list(references), cfg)
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
        claims.append(claim | paired_claim(pairs, name, spec.higher_is_barrier, cfg, deltas[name]))
    claims.append(dynamic_range_levels(pairs, cfg))
    return claims


def dynamic_range_levels(pairs: dict, cfg: dict) -> dict:
    """The paper's absolute levels: barrier > 40 dB while baseline < 25 dB. Its p-value is that
    of the weaker of the two one-sided tests (both must hold)."""
    claim = {
        "id": "table2.dynamic_range_levels",
        "claim": "barrier dynamic range > 40 dB and baseline < 25 dB",
        "metric": "dynamic_range_db",
        "unit": "dB",
    }
    args = (cfg["n_boot"], cfg["seed"])
    barrier = clustered_bootstrap(
        [[x["dynamic_range_db"] for x, _ in ps] for ps in pairs.values()], *args
    )
    baseline = clustered_bootstrap(
        [[y["dynamic_range_db"] for _, y in ps] for ps in pairs.values()], *args
    )
    if barrier is None or baseline is None:
        return claim | {"verdict": "inconclusive", "reason": "too few finite values"}
    alpha = float(cfg["alpha"])
    (bm, bboots), (cm, cboots) = barrier, baseline
    blo, bhi = (float(q) for q in np.quantile(bboots, [alpha / 2, 1 - alpha / 2]))
    clo, chi = (float(q) for q in np.quantile(cboots, [alpha / 2, 1 - alpha / 2]))
    p_supported = max(bootstrap_p(bboots, 40.0, "greater"), bootstrap_p(cboots, 25.0, "less"))
    p_contradicted = min(bootstrap_p(bboots, 40.0, "less"), bootstrap_p(cboots, 25.0, "greater"))
    p_value = p_supported
    if len(pairs) < 2:
        v = "inconclusive"
    elif blo > 40 and chi < 25:
        v = "supported"
    elif bhi < 40 or clo > 25:
        v, p_value = "contradicted", p_contradicted
    else:
        v = "inconclusive"
    return claim | {
        "barrier_mean": bm,
        "baseline_mean": cm,
        "ci_low": blo,
        "ci_high": bhi,
        "baseline_ci": [clo, chi],
        "p_value": p_value,
        "verdict": v,
        "reason": "CIs are of each group's mean level (clustered by training seed), not of the "
        "difference" + ("; one training seed" if len(pairs) < 2 else ""),
    }


def adjust_for_multiple_claims(claims: list[dict], alpha: float) -> list[dict]:
    """Holm's step-down rule over every claim with a p-value: a "supported" or "contradicted"
    verdict whose p-value Holm does not reject becomes "inconclusive", saying why."""
    decisions = holm({c["id"]: c.get("p_value", float("nan")) for c in claims}, alpha)
    out = []
    for claim in claims:
        decision = decisions.get(claim["id"])
        claim = dict(claim, verdict_unadjusted=claim["verdict"])
        if decision is not None:
            claim["holm"] = decision
            if claim["verdict"] in ("supported", "contradicted") and not decision["rejected"]:
                claim["verdict"] = "inconclusive"
                why = (
                    f"{claim['verdict_unadjusted']} before Holm's adjustment; p = "
                    f"{claim['p_value']:.3g} > {decision['threshold']:.3g} (rank "
                    f"{decision['rank']} of {decision['family']} claims)"
                )
                claim["reason"] = why + (f"; {claim['reason']}" if claim.get("reason") else "")
        if claim["verdict"] == "inconclusive" and not claim.get("reason"):
            claim["reason"] = "the CI includes the null" if "p_value" in claim else "not tested"
        out.append(claim)
    return out


def fd_group_label(row: dict) -> str:
    """Samples pooled over training seeds: base, or the run id without its seed."""
    return "base" if row["group"] == "base" else row["run_id"].rsplit("_s", 1)[0]


def embedding_distances(
    rows: list[dict], references: list[dict], cfg: dict, cache_dir: Path, threads: int = 1
):
    """FD-musicnn of every sample group against the training and eval clips, and the paper
    profile's anchors; each says why when it is skipped."""
    fd_cfg = cfg.get("fd", {"enabled": False})
    out = {}
    refs = {
        split: [Path(r["path"]) for r in references if r["split"] == split]
        for split in sorted({r["split"] for r in references})
    }
    if fd_cfg.get("enabled", False):
        from eisbach.frechet import fd_table

        groups: dict[str, list[Path]] = {}
        for row in rows:
            groups.setdefault(fd_group_label(row), []).append(Path(row["path"]))
        fd_cfg = {**cfg, "fd": {"threads": threads, **fd_cfg}}
        out["fd_musicnn"] = fd_table(groups, refs, fd_cfg, cache_dir / "musicnn")
    else:
        out["fd_musicnn"] = [{"skipped": True, "reason": "evaluate.fd.enabled is false"}]
    anchors_cfg = cfg.get("anchors")
    if anchors_cfg:
        from eisbach.anchors import anchor_table

        out["anchors"] = anchor_table(rows, refs, anchors_cfg)
    else:
        out["anchors"] = [{"skipped": True, "reason": "no evaluate.anchors in this profile"}]
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--index", type=Path, required=True)
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--runs", type=Path, nargs="+", required=True, help="run folders")
    parser.add_argument("--evaluate-json", required=True)
    parser.add_argument("--out-dir", type=Path, required=True)
    parser.add_argument(
        "--cache-dir", type=Path, help="analyses kept between runs (default OUT_DIR/cache)"
    )
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads (the rule's)")
    args = parser.parse_args(argv)
    from threadpoolctl import threadpool_limits

    # numpy's BLAS would start a thread per core for 64 x 64 matrices, and oversubscribed
    # cores made one small eigendecomposition 13x slower than on one thread (measured)
    threadpool_limits(args.threads)
    cfg = json.loads(args.evaluate_json)
    cache_dir = args.cache_dir or args.out_dir / "cache"
    cache = ScoreCache(cache_dir / "analyses")

    runs = {d.name: json.loads((d / "run.json").read_text()) for d in args.runs}
    logs = {d.name: pq.read_table(d / "train_log.parquet").to_pylist() for d in args.runs}
    heldout = {d.name: pq.read_table(d / "heldout_loss.parquet").to_pylist() for d in args.runs}
    index = pq.read_table(args.index).to_pylist()
    stats = {"scored": 0, "cached": 0}
    per_sample, analyses = score_samples(index, runs, cache, stats, args.index)
    manifest = pq.read_table(args.manifest).to_pylist()
    references = score_references(manifest, cache, stats, args.manifest)
    rows = per_sample.to_pylist()
    prompt_rows = diversity.per_prompt(rows, analyses)

    stage_config = {"evaluate": cfg, "runs": sorted(runs), "metrics_version": metrics_version()}
    meta = provenance.parquet_metadata(stage_config, stage="evaluate")
    write_parquet(args.out_dir / "per_sample.parquet", per_sample.replace_schema_metadata(meta))
    write_parquet(
        args.out_dir / "per_prompt.parquet",
        pa.Table.from_pylist(prompt_rows).replace_schema_metadata(meta),
    )
    write_parquet(
        args.out_dir / "reference.parquet",
        pa.Table.from_pylist(references).replace_schema_metadata(meta),
    )

    claims = table2_claims(rows, runs, cfg, references) + prediction_claims(
        logs, runs, prompt_rows, rows, cfg, group_of
    )
    summary = {
        "claims": adjust_for_multiple_claims(claims, float(cfg["alpha"])),
        "multiple_comparisons": {
            "method": "holm",
            "alpha": float(cfg["alpha"]),
            "family": sum(1 for c in claims if np.isfinite(c.get("p_value", np.nan))),
        },
        "controls": control_comparisons(runs, heldout, cfg),
        "metrics": {name: asdict(spec) for name, spec in METRICS.items()},
        "groups": {
            g: sorted({r["run_id"] for r in rows if r["group"] == g})
            for g in ("barrier", "baseline", "base", "control")
        },
        "static_clips": {
            g: {
                "static": int(sum(r["static_clip"] == 1 for r in rows if r["group"] == g)),
                "clips": int(sum(1 for r in rows if r["group"] == g)),
            }
            for g in sorted({r["group"] for r in rows})
        },
        "references": reference_summary(references),
        "likeness": likeness(rows, references),
        "prompt_references": prompt_references(rows, manifest),
        "embedding_distances": embedding_distances(rows, references, cfg, cache_dir, args.threads),
        "weight_spread": {
            rid: {"mean_applied_weight": run["mean_applied_weight"], "by_t": run["spread_by_t"]}
            for rid, run in runs.items()
        },
        "scoring": stats | {"metrics_version": metrics_version()},
        "provenance": provenance.provenance(stage_config),
    }
    write_json(args.out_dir / "summary.json", summary)
    print(f"scored {stats['scored']} clips, {stats['cached']} from the cache")
    for claim in summary["claims"]:
        print(f"{claim['id']}: {claim['verdict']}")
    for c in summary["controls"]:
        print(f"control {c['control']} vs {c['reference']} ({c['adapter']}): {c['reading']}")


# What the samples are read against the training music by (docs/metrics.md): onsets, change
# that comes in peaks, harmonic lines, sections, and the share of clips without any.
LIKENESS_METRICS = (
    "onset_peakiness",
    "flux_sparsity",
    "spectral_contrast_db",
    "ssm_block_scale",
    "static_clip",
)
SAMPLE_GROUPS = ("base", "baseline", "barrier", "control")


def prompt_references(per_sample: list[dict], manifest: list[dict], per_prompt: int = 2):
    """Per prompt, the clips of the music it asks for, to set beside its samples: an eval
    caption's own clip (prompt id ``cap-<clip id>``), else the training clips whose caption
    opens with the prompt (a character's theme: "Seal Lawyer" -> "Seal Lawyer's theme. ..."),
    the first ``per_prompt`` by id. A prompt that matches no caption gets none."""
    clips = sorted((c for c in manifest if c["status"] == "ok"), key=lambda c: c["id"])
    by_id = {c["id"]: c for c in clips}
    prompts = {r["prompt_id"]: r["prompt"] for r in per_sample}
    out = {}
    for pid, text in sorted(prompts.items()):
        if pid.startswith("cap-") and pid[4:] in by_id:
            found = [by_id[pid[4:]]]
        else:
            key = text.strip().lower()
            found = [
                c
                for c in clips
                if c["split"] == "train" and key and (c["caption"] or "").lower().startswith(key)
            ][:per_prompt]
        out[pid] = [{k: c[k] for k in ("id", "split", "path", "caption", "sha256")} for c in found]
    return out


def likeness(rows: list[dict], references: list[dict]) -> list[dict]:
    """Per group (training clips, eval clips, then the samples of base, baseline, barrier and
    control runs), the median and quartiles of each metric of LIKENESS_METRICS over its clips;
    ``static_clip`` as the share of static clips. Samples that sound like the training music
    read like the training clips."""
    groups = [("training clips", [r for r in references if r["split"] == "train"])]
    groups += [("eval clips", [r for r in references if r["split"] == "eval"])]
    groups += [(f"{g} samples", [r for r in rows if r["group"] == g]) for g in SAMPLE_GROUPS]
    out = []
    for label, clips in groups:
        if not clips:
            continue
        entry = {"group": label, "clips": len(clips)}
        for name in LIKENESS_METRICS:
            values = np.array([c[name] for c in clips], float)
            values = values[np.isfinite(values)]
            if name == "static_clip":
                entry[name] = float(values.mean()) if values.size else None
                continue
            if not values.size:
                entry[name] = None
                continue
            q1, med, q3 = np.percentile(values, [25, 50, 75])
            entry[name] = {
                "median": float(med),
                "q1": float(q1),
                "q3": float(q3),
                "n": int(values.size),
            }
        out.append(entry)
    return out


def reference_summary(references: list[dict]) -> dict:
    """Mean of each metric over the training and the eval clips."""
    out = {}
    for split in sorted({r["split"] for r in references}):
        clips = [r for r in references if r["split"] == split]
        out[split] = {"clips": len(clips)} | {
            name: (float(np.nanmean(v)) if np.isfinite(v).any() else None)
            for name in METRICS
            for v in [np.array([r[name] for r in clips], float)]
        }
    return out
