"""Evaluate stage: Table 2 metrics per sample, and a verdict per claim computed from them.

Table 2 compares the barrier runs (scheme ``eisbach`` at ``evaluate.table2_lam``, 0.5, with
``evaluate.table2_adapter``, DoRA: the paper's setting) against the baseline runs (``none``) sample
by sample: a barrier sample pairs with the baseline sample of the same adapter, training seed,
prompt and sampling seed, which share their initial noise. Each claim is reduced to one mean
difference per training seed and tested over seeds with eisbach.stats' one rule: "supported" when
the t interval lies beyond the smallest effect of interest delta in the paper's direction (by
default 0.2 standard deviations of the metric over the training clips: ``evaluate.min_effect_sd``,
or ``evaluate.min_effect`` per metric), "contradicted" beyond -delta, "negligible" inside +-delta
(an equivalence test), "inconclusive" otherwise, with one training seed, or when the grid lacks
what a claim needs. The predictions P1-P5 are eisbach.predictions; every claim's p-value is
then adjusted across all claims by Holm's rule (eisbach.stats.holm). The controls are compared on the
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
from eisbach.stats import (
    cluster_reading,
    compound_reading,
    holm,
    minimum_detectable_effect,
)


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


def min_effects(references: list[dict], cfg: dict) -> dict[str, tuple[float, str]]:
    """Per Table 2 metric, (delta, where it comes from): the smallest barrier - baseline
    difference that counts as an effect, ``evaluate.min_effect[metric]`` where given, else
    ``evaluate.min_effect_sd`` (0.2, a small effect in Cohen's terms) times the metric's standard
    deviation over the training clips, the spread of the music the runs learn from; 0 where
    that spread is unknown."""
    fixed = cfg.get("min_effect", {})
    scale = float(cfg.get("min_effect_sd", 0.2))
    train = [r for r in references if r.get("split") == "train"]
    out = {}
    for name, spec in METRICS.items():
        if not spec.table2:
            continue
        if name in fixed:
            out[name] = (float(fixed[name]), f"evaluate.min_effect.{name}")
            continue
        values = np.array([r[name] for r in train], float)
        values = values[np.isfinite(values)]
        if len(values) < 2:
            out[name] = (0.0, f"{len(values)} training clips with a finite {name}; 0")
            continue
        spread = float(np.std(values, ddof=1))
        out[name] = (scale * spread, f"{scale:g} SD of {name} over {len(values)} training clips")
    return out


def paired_claim(
    pairs: dict, name: str, higher_is_barrier: bool, cfg: dict, band: tuple[float, str] = (0, "")
) -> dict:
    """Barrier - baseline of one metric: the mean difference of each training seed's pairs,
    tested over seeds (eisbach.stats.cluster_reading) against the band +-delta. Pairs where
    either clip is static (eisbach.metrics: no onset, a drone) are left out and counted, with
    each group's share of static clips beside the reading, so a model that drifts toward drones
    cannot win a claim by them."""
    shares = static_shares(pairs)
    static = sum(1 for ps in pairs.values() for x, y in ps if _is_static(x) or _is_static(y))
    finite = {
        cluster: [
            (x[name], y[name])
            for x, y in ps
            if np.isfinite(x[name])
            and np.isfinite(y[name])
            and not (_is_static(x) or _is_static(y))
        ]
        for cluster, ps in pairs.items()
    }
    finite = {cluster: ps for cluster, ps in finite.items() if ps}
    values = [v for ps in finite.values() for v in ps]
    result = {"pairs": len(values), "static_pairs": static} | shares
    dropped = sum(len(ps) for ps in pairs.values()) - len(values) - static
    if dropped:
        result["nan_pairs"] = dropped
    if values:
        result |= {
            "barrier_mean": float(np.mean([x for x, _ in values])),
            "baseline_mean": float(np.mean([y for _, y in values])),
        }
    diffs = [np.array([x - y for x, y in ps]) for ps in finite.values()]
    reading = cluster_reading(diffs, band[0], float(cfg["alpha"]), higher_is_barrier)
    reading.pop("units", None)
    return result | reading | {"min_effect_source": band[1]}


def _is_static(row: dict) -> bool:
    return bool(row.get("static_clip", 0.0) == 1.0)


def static_shares(pairs: dict) -> dict:
    """The share of static clips among the paired barrier and the paired baseline samples."""
    rows = [xy for ps in pairs.values() for xy in ps]
    if not rows:
        return {}
    return {
        f"{side}_static_share": float(np.mean([_is_static(xy[i]) for xy in rows]))
        for i, side in enumerate(("barrier", "baseline"))
    }


def table2_claims(
    per_sample: list[dict], runs: dict[str, dict], cfg: dict, references: list[dict] = ()
) -> list[dict]:
    lam, adapter_type = table2_selection(cfg)
    pairs = table2_pairs(per_sample, runs, cfg)
    bands = min_effects(list(references), cfg)
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
        claims.append(claim | paired_claim(pairs, name, spec.higher_is_barrier, cfg, bands[name]))
    claims.append(dynamic_range_levels(pairs, cfg, bands["dynamic_range_db"], references))
    return claims


LEVELS = {"barrier_above": 40.0, "baseline_below": 25.0}  # the paper's dB levels (Table 2)
# The measured range of dynamic_range_db on real music (docs/metrics.md): 102 windows of 10 s of
# CC-licensed recordings, none above this
REAL_RECORDINGS_MAX_DB = 36.7


def dynamic_range_levels(
    pairs: dict, cfg: dict, band: tuple[float, str] = (0.0, ""), references: list[dict] = ()
) -> dict:
    """The paper's absolute levels, barrier > 40 dB AND baseline < 25 dB: a conjunction of two
    per-seed tests (barrier level - 40 dB, 25 dB - baseline level), each against the dynamic
    range band, read by eisbach.stats.compound_reading. The thresholds are set against the
    metric's measured range on real recordings and on this run's training clips."""
    claim = {
        "id": "table2.dynamic_range_levels",
        "claim": "barrier dynamic range > 40 dB and baseline < 25 dB",
        "metric": "dynamic_range_db",
        "unit": "dB",
        "min_effect": band[0],
        "min_effect_source": band[1],
    }
    train = np.array(
        [r["dynamic_range_db"] for r in references if r.get("split") == "train"], float
    )
    train = train[np.isfinite(train)]
    top = float(train.max()) if train.size else None
    claim["threshold_range"] = {
        "real_recordings_max_db": REAL_RECORDINGS_MAX_DB,
        "training_clips_max_db": top,
        "barrier_threshold_in_range": bool(
            LEVELS["barrier_above"] <= REAL_RECORDINGS_MAX_DB
            and (top is None or LEVELS["barrier_above"] <= top)
        ),
    }
    above = [
        [x["dynamic_range_db"] - LEVELS["barrier_above"] for x, _ in ps] for ps in pairs.values()
    ]
    below = [
        [LEVELS["baseline_below"] - y["dynamic_range_db"] for _, y in ps] for ps in pairs.values()
    ]
    alpha = float(cfg["alpha"])
    parts = {
        "barrier_above_40": cluster_reading(above, band[0], alpha),
        "baseline_below_25": cluster_reading(below, band[0], alpha),
    }
    out = claim | parts
    levels = (
        [np.mean([x["dynamic_range_db"] for x, _ in ps]) for ps in pairs.values() if ps],
        [np.mean([y["dynamic_range_db"] for _, y in ps]) for ps in pairs.values() if ps],
    )
    if levels[0]:
        out |= {
            "barrier_mean": float(np.mean(levels[0])),
            "baseline_mean": float(np.mean(levels[1])),
        }
    range_note = (
        f"the 40 dB threshold lies above every measured level of this metric (real recordings "
        f"max {REAL_RECORDINGS_MAX_DB} dB"
        + (f", this run's training clips max {top:.1f} dB" if top is not None else "")
        + "): a contradicted reading says as much about the metric's range as about the runs"
    )
    reasons = [f"{n}: {p['reason']}" for n, p in parts.items() if p.get("reason")]
    if not claim["threshold_range"]["barrier_threshold_in_range"]:
        reasons.append(range_note)
    out |= compound_reading(parts, alpha)
    if reasons:
        out["reason"] = "; ".join(reasons)
    return out


INFERENCE_RULE = (
    "per claim, one mean per training seed; one-sided t-tests on k-1 df against +-delta "
    "(supported, contradicted) and TOST (negligible), each at alpha/2; claim p-value 2 min of "
    "the three; Holm over the claims' p-values; compound claims by intersection-union tests"
)


def adjust_for_multiple_claims(claims: list[dict], alpha: float) -> list[dict]:
    """Holm's step-down rule over every claim's p-value (eisbach.stats.holm): a reading whose
    Holm-adjusted p-value exceeds alpha becomes "inconclusive", saying why. Every inconclusive
    or negligible claim then states its minimum detectable effect (``mde``)."""
    decisions = holm({c["id"]: c.get("p_value", float("nan")) for c in claims}, alpha)
    family = len(decisions)
    out = []
    for claim in claims:
        decision = decisions.get(claim["id"])
        claim = dict(claim, verdict_unadjusted=claim["verdict"])
        if decision is not None:
            claim["holm"] = decision
            if claim["verdict"] != "inconclusive" and not decision["rejected"]:
                claim["verdict"] = "inconclusive"
                why = (
                    f"{claim['verdict_unadjusted']} before Holm's adjustment; Holm-adjusted p = "
                    f"{decision['adjusted_p']:.3g} > alpha {alpha:g} ({family} claims)"
                )
                claim["reason"] = why + (f"; {claim['reason']}" if claim.get("reason") else "")
        if claim["verdict"] in ("inconclusive", "negligible") and family:
            claim |= detectable(claim, alpha / (2 * family))
        if claim["verdict"] == "inconclusive" and not claim.get("reason"):
            claim["reason"] = (
                "the CI reaches across the band's edge" if "p_value" in claim else "not tested"
            )
        out.append(claim)
    return out


def detectable(claim: dict, alpha_one_sided: float) -> dict:
    """The minimum effect the design detects with 80 % power, at Holm's first (Bonferroni)
    level so that the claim is decided whatever the others read, from the seed means' spread:
    ``mde`` in the claim's units; a compound claim takes its least detectable part."""
    parts = [p for p in claim.values() if isinstance(p, dict) and "seed_sd" in p]
    parts = parts or ([claim] if "seed_sd" in claim else [])
    values = [
        minimum_detectable_effect(
            p["seed_sd"], p["seeds"], p.get("min_effect", 0.0), alpha_one_sided
        )
        for p in parts
    ]
    values = [v for v in values if np.isfinite(v)]
    if not values:
        return {"mde": None, "mde_reason": "fewer than 2 training seeds: no spread to size it by"}
    return {"mde": max(values), "mde_alpha_one_sided": alpha_one_sided, "mde_power": 0.8}


def learned_embeddings(rows: list[dict], cfg: dict, cache_dir: Path) -> dict | None:
    """sha256 -> musicnn embedding of every sample, for the Vendi score on a learned embedding
    (eisbach.diversity.vendi_cosine); None when evaluate.fd is off or its env is not built."""
    fd_cfg = cfg.get("fd", {"enabled": False})
    if not fd_cfg.get("enabled", False):
        return None
    from eisbach.frechet import DEFAULT_MODEL, MusicnnEnvMissing, musicnn_embeddings

    try:
        matrix = musicnn_embeddings(
            [r["path"] for r in rows],
            cache_dir / "musicnn",
            model=fd_cfg.get("model", DEFAULT_MODEL),
            threads=int(fd_cfg.get("threads", 0)),
            python=fd_cfg.get("python"),
        )
    except MusicnnEnvMissing as exc:
        print(f"vendi_musicnn: NaN ({exc})")
        return None
    return {r["sha256"]: emb for r, emb in zip(rows, matrix, strict=True)}


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
    from eisbach.anchors import ANCHORS, anchor_table, skipped

    anchors_cfg = cfg.get("anchors")
    if anchors_cfg:
        out["anchors"] = anchor_table(
            rows, references, anchors_cfg, cache_dir / "anchors", fd_group_label
        )
    else:
        out["anchors"] = {name: skipped("no evaluate.anchors in this profile") for name in ANCHORS}
    out["anchors"]["paper_reported"] = (anchors_cfg or {}).get("paper_reported", {})
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
    prompt_rows = diversity.per_prompt(rows, analyses, learned_embeddings(rows, cfg, cache_dir))

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
        logs, runs, prompt_rows, rows, cfg, group_of, min_effects(references, cfg)
    )
    summary = {
        "claims": adjust_for_multiple_claims(claims, float(cfg["alpha"])),
        "multiple_comparisons": {
            "method": "holm",
            "alpha": float(cfg["alpha"]),
            "family": sum(1 for c in claims if np.isfinite(c.get("p_value", np.nan))),
            "test": INFERENCE_RULE,
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
