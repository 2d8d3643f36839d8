"""A results tree with the shape of the smoke workflow's (manifest, runs with training logs,
sample WAVs, metrics, summary, the evaluate stage's analysis cache), written in a second from
known numbers, so that the figures and report stages run on it without training anything."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import soundfile as sf

from eisbach.evaluate import likeness, prompt_references
from eisbach.metrics import METRICS, Analysis
from eisbach.provenance import file_sha256, provenance
from eisbach.score_cache import ScoreCache

PROMPTS = {"piglet": "Little Piglet Prince", "seal": "Seal Lawyer"}
ADAPTER_RUNS = {
    "none_dora-r4_s0": ({"name": "none"}, "dora", 0),
    "none_dora-r4_s1": ({"name": "none"}, "dora", 1),
    "eisbach-l0.5_dora-r4_s0": ({"name": "eisbach", "lam": 0.5}, "dora", 0),
    "eisbach-l0.5_dora-r4_s1": ({"name": "eisbach", "lam": 0.5}, "dora", 1),
    "eisbach-l0.9_dora-r4_s0": ({"name": "eisbach", "lam": 0.9}, "dora", 0),
    "eisbach-l0.5_lora-r4_s0": ({"name": "eisbach", "lam": 0.5}, "lora", 0),
}
BASE_RUN = "base-tiny"
SAMPLING_SEEDS = (0, 1)
STEPS, BATCH = 40, 4
RECORD = provenance({"synthetic": True})


def group_of(scheme: dict) -> str:
    return "baseline" if scheme["name"] == "none" else "barrier"


def train_log(rng, lam: float) -> list[dict]:
    """H rises with t, as in the demo; the loss rises with t and, at low t, with H."""
    rows = []
    for step in range(STEPS):
        for b in range(BATCH):
            t = float(rng.uniform(0.01, 0.99))
            h = float(np.clip(0.9 + 0.08 * t + 0.02 * rng.standard_normal(), 0.5, 0.999))
            w = 1.0 / (1.0 - np.log(1.0 - h))
            loss = 0.5 + t + (0.5 - t) * (h - 0.9) + 0.01 * rng.standard_normal()
            rows.append(
                {
                    "step": step,
                    "sample_id": f"c{b}",
                    "t": t,
                    "raw_loss": loss,
                    "H": h,
                    "w": w,
                    "applied_weight": 1 - lam + lam * w,
                    "lr": 1e-3,
                }
            )
    return rows


def spread(log: list[dict]) -> list[dict]:
    stats = {
        k: {
            "mean": float(np.mean([r[k] for r in log])),
            "sd": float(np.std([r[k] for r in log])),
            "min": float(np.min([r[k] for r in log])),
            "max": float(np.max([r[k] for r in log])),
        }
        for k in ("H", "w")
    }
    return [{"t_lo": 0.0, "t_hi": 1.0, "n": len(log)} | stats]


def claim(cid: str, seeds: int, diff: float, verdict: str = "inconclusive", **extra) -> dict:
    return {
        "id": cid,
        "claim": f"the claim {cid}",
        "seeds": seeds,
        "units": 8,
        "pairs": 8,
        "diff": diff,
        "ci_low": diff - 0.1,
        "ci_high": diff + 0.1,
        "p_value": 0.3,
        "verdict": verdict,
        "verdict_unadjusted": verdict,
        "reason": "the CI includes the null",
    } | extra


def make_results(root: Path, prompts: dict[str, str] | None = None) -> dict[str, Path]:
    """Writes the tree under root/results; returns the paths the two stages take."""
    prompts = prompts or PROMPTS
    rng = np.random.default_rng(0)
    results = root / "results"
    runs_dir = results / "runs"
    cache = ScoreCache(results / "metrics/cache/analyses")
    run_dirs, per_sample, per_prompt, weight_spread = [], [], [], {}

    base = {"run_id": BASE_RUN, "kind": "base", "spread_by_t": [], "provenance": RECORD}
    base["config"] = {"backend": {"name": "tiny"}}
    all_runs = {BASE_RUN: (None, None, None)} | ADAPTER_RUNS
    for k, (rid, (scheme, adapter, seed)) in enumerate(all_runs.items()):
        d = runs_dir / rid
        d.mkdir(parents=True)
        run_dirs.append(d)
        if scheme is None:
            run, log = base, []
        else:
            log = train_log(rng, float(scheme.get("lam", 0.0)))
            run = {
                "run_id": rid,
                "kind": "adapter",
                "scheme": scheme,
                "adapter": {"type": adapter, "rank": 4, "alpha": 4},
                "seed": seed,
                "mean_applied_weight": float(np.mean([r["applied_weight"] for r in log])),
                "spread_by_t": spread(log),
                "provenance": RECORD,
                "config": {"backend": {"name": "tiny"}},
            }
            weight_spread[rid] = {
                "mean_applied_weight": run["mean_applied_weight"],
                "by_t": run["spread_by_t"],
            }
        (d / "run.json").write_text(json.dumps(run))
        schema = pa.schema(
            [(n, pa.int64() if n == "step" else pa.string() if n == "sample_id" else pa.float64())
             for n in ("step", "sample_id", "t", "raw_loss", "H", "w", "applied_weight", "lr")]
        )  # fmt: skip
        pq.write_table(pa.Table.from_pylist(log, schema=schema), d / "train_log.parquet")

        group = "base" if scheme is None else group_of(scheme)
        labels = {
            "group": group,
            "scheme": "base" if scheme is None else scheme["name"],
            "lam": None if scheme is None else scheme.get("lam"),
            "adapter": adapter,
            "train_seed": seed,
        }
        for j, (pid, text) in enumerate(sorted(prompts.items())):
            for s in SAMPLING_SEEDS:
                path = results / "samples" / rid / f"{pid}-s{s}.wav"
                path.parent.mkdir(parents=True, exist_ok=True)
                t = np.arange(8000) / 16000
                sf.write(path, 0.2 * np.sin(2 * np.pi * (220 + 40 * k + 20 * j + 5 * s) * t), 16000)
                metrics = {name: float(rng.uniform(1, 2)) for name in METRICS} | {
                    "static_clip": 0.0
                }
                sha = file_sha256(path)
                ssm = np.corrcoef(rng.standard_normal((64, 8)))
                cache.put(sha, Analysis(metrics, ssm, rng.standard_normal(8)))
                per_sample.append(
                    {"run_id": rid, "prompt_id": pid, "prompt": text, "seed": s,
                     "path": str(path), "sha256": sha} | labels | metrics
                )  # fmt: skip
            per_prompt.append(
                {"run_id": rid, "prompt_id": pid, "n_seeds": len(SAMPLING_SEEDS)}
                | labels
                | {"vendi": float(rng.uniform(1, 2)), "consistency": float(rng.uniform(0, 1))}
            )

    metrics_dir = results / "metrics"
    pq.write_table(pa.Table.from_pylist(per_sample), metrics_dir / "per_sample.parquet")
    pq.write_table(pa.Table.from_pylist(per_prompt), metrics_dir / "per_prompt.parquet")
    table2 = [
        claim(f"table2.{n}", 2, 0.01 * i, metric=n, unit=s.unit)
        for i, (n, s) in enumerate(METRICS.items())
        if s.table2
    ]
    predictions = [
        claim("P1", None, 0.02, "supported", metric="w (training log)"),
        claim("P2", 1, 0.0, reason="one training seed: the CI covers sample-to-sample variation"),
        {"id": "P3", "claim": "consistency | diversity", "verdict": "inconclusive",
         "consistency": claim("c", 2, 0.0), "vendi": claim("v", 2, 0.1), "p_value": 0.4},
        claim("P4", 1, 0.1, reason="one training seed"),
        claim("P5", None, -0.3, "contradicted"),
    ]  # fmt: skip
    summary = {
        "claims": table2 + predictions,
        "controls": [
            {
                "control": "none",
                "reference": "eisbach-l0.5",
                "adapter": "dora-r4",
                "seeds": 2,
                "units": 4,
                "control_loss": 0.9,
                "reference_loss": 0.89,
                "diff": 0.01,
                "ci_low": -0.01,
                "ci_high": 0.02,
                "reading": "inconclusive",
                "reason": "x",
                "diff_by_t": {"0.1": 0.01},
            }
        ],  # fmt: skip
        "weight_spread": weight_spread,
        "provenance": RECORD,
    }
    # clips: a training clip per prompt whose caption opens with it (a character's theme), one
    # eval clip, one clip that failed to download
    texts = [f"{text}'s theme. A piece." for _, text in sorted(prompts.items())]
    manifest = []
    for i, (caption, split, status) in enumerate(
        [(t, "train", "ok") for t in texts]
        + [("Another theme.", "eval", "ok"), ("Lost.", "train", "unavailable")]
    ):
        clip = {"id": f"c{i}", "caption": caption, "split": split, "status": status,
                "duration": None, "path": None, "sha256": None}  # fmt: skip
        if status == "ok":
            path = results / "data/audio" / f"c{i}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(
                path, 0.2 * np.sin(2 * np.pi * (330 + 30 * i) * np.arange(8000) / 16000), 16000
            )
            clip |= {"duration": 0.5, "path": str(path), "sha256": file_sha256(path)}
        manifest.append(clip)
    references = [
        {"id": c["id"], "split": c["split"], "path": c["path"]}
        | {name: float(rng.uniform(1, 2)) for name in METRICS}
        for c in manifest
        if c["status"] == "ok"
    ]
    summary["likeness"] = likeness(per_sample, references)
    summary["prompt_references"] = prompt_references(per_sample, manifest)
    (metrics_dir / "summary.json").write_text(json.dumps(summary))
    pq.write_table(pa.Table.from_pylist(manifest), results / "data/manifest.parquet")
    latents = results / "latents/tiny/latents_manifest.json"
    latents.parent.mkdir(parents=True)
    latents.write_text(json.dumps({"objective": "rectified_flow"}))
    return {
        "results": results,
        "summary": metrics_dir / "summary.json",
        "per_sample": metrics_dir / "per_sample.parquet",
        "per_prompt": metrics_dir / "per_prompt.parquet",
        "manifest": results / "data/manifest.parquet",
        "latents": latents,
        "runs": run_dirs,
        "cache": metrics_dir / "cache/analyses",
        "figures": results / "figures",
        "tables": results / "tables",
        "report": results / "report/index.html",
    }


def figures_argv(paths: dict) -> list[str]:
    return [
        "--summary", str(paths["summary"]), "--per-sample", str(paths["per_sample"]),
        "--per-prompt", str(paths["per_prompt"]), "--latents-manifest", str(paths["latents"]),
        "--runs", *map(str, paths["runs"]), "--figures-dir", str(paths["figures"]),
        "--tables-dir", str(paths["tables"]), "--analysis-cache", str(paths["cache"]),
    ]  # fmt: skip


def report_argv(paths: dict, profile: str = "test") -> list[str]:
    return [
        "--summary", str(paths["summary"]), "--per-sample", str(paths["per_sample"]),
        "--manifest", str(paths["manifest"]), "--figures-dir", str(paths["figures"]),
        "--tables-dir", str(paths["tables"]), "--runs", *map(str, paths["runs"]),
        "--profile", profile, "--out", str(paths["report"]),
    ]  # fmt: skip


def build_report(root: Path, prompts: dict[str, str] | None = None, profile: str = "test"):
    """The synthetic tree, then the figures and report stages on it; the paths."""
    from eisbach import figures, report

    paths = make_results(root, prompts)
    figures.main(figures_argv(paths))
    report.main(report_argv(paths, profile))
    return paths
