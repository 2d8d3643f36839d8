"""GPU-hours and cost of a grid on cloud GPUs, computed from the config and benchmark figures.

Every number here is either read from the config (grid size, steps, batch, sampling steps and
seeds, prompts), counted (parameters of SA3 Medium's DiT, built from stable_audio_3's own
classes on the meta device: eisbach.backends.sa3_medium; jobs of the DAG), measured (MFU, when a
scripts/gpu_check.sh result is given) or an assumption named in ``ASSUMPTIONS`` and printed with
the table. FLOPs follow the usual dense-transformer count: 2 N per token for a forward pass of a
model with N parameters; an adapter step with a frozen base runs the forward and the activation
gradients (2 N + 2 N) but no weight gradients of the base, so 4 N per token.

    python scripts/cloud_cost.py --config config/paper.yaml [--gpu-check gpu_check.json]
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

# benchmarks/weight_overhead.py's sa3-medium preset. The hub's model_config.json is gated and not
# readable here; the shape is that of public code written against the released checkpoint (read
# for reference): the MLX port's pack config for stable-audio-3-medium (depth 24, head width 64,
# 64 memory tokens) and diffusers' SA3 transformer test config "from stabilityai/
# stable-audio-3-medium model_config.json" (io_channels 256, embed_dim 1536, depth 24,
# num_heads 24, cond_token_dim 768). shaped_dit builds a stable-audio-tools DiT of this shape
# for the timing benchmarks, not SA3's own classes: it lacks the memory tokens, differential
# attention and adaLN conditioning, and so has 1.14 B parameters against Medium's 1.45 B; the
# cost and memory models count Medium itself (dit_parameters).
SA3_MEDIUM = {"embed_dim": 1536, "depth": 24, "num_heads": 24, "io_channels": 256, "cond_dim": 768}
# SAME-L: ~10.77 latent frames per second of audio (measured on SAME-L); MusicCaps clips are 10 s.
LATENT_RATE = 44100 / 4096


@dataclass(frozen=True)
class Assumptions:
    clip_seconds: float = 10.0  # MusicCaps clips (all 10 s), also the sample length
    clips: int = 5521  # MusicCaps rows (musiccaps-public.csv); the download keeps fewer
    eval_clips: int = 2858  # is_audioset_eval=True rows: the held-out split
    mfu_low: float = 0.02  # batch 4 x 108 frames: launch-bound, a small share of the peak
    mfu_high: float = 0.25  # a well-fed bf16 DiT step
    peak_tflops: float = 989.0  # H100/H200 SXM dense bf16
    overhead_min_per_gpu_job: float = 5.0  # pod/container start, loading SA3 + T5Gemma + SAME-L
    # pretrain_base of a pretrained backend loads and checks the model, then copies its weights
    # (~2.9 GB in bf16 for 1.45 B parameters) into results/base: the overhead plus this
    base_copy_min: float = 2.0
    autoencoder_realtime: float = 200.0  # SAME-L encode or decode, seconds of audio per second
    usd_per_gpu_hour: float = 3.0  # on-demand H100-class price; pass the provider's own
    # The downloads are bound by YouTube's rate limit on one session (~300 videos an hour,
    # data.sleep_s's comment), not by CPU or by data.workers: run them on a small CPU machine
    # (make data), not on the rented GPU.
    downloads_per_hour: float = 300.0
    usd_per_cpu_hour: float = 0.10  # a 2-4 vCPU on-demand instance
    # evaluate, one CPU job: per 10 s clip, analyse() (0.13 s, benchmarks/metrics_speed.py on
    # 2 shared cores here) and the musicnn embedding of FD-musicnn (~5 s per 6 s
    # clip on CPU, scaled to 10 s); its threads' speedup has not been measured
    analyse_s_per_clip: float = 0.13
    musicnn_s_per_clip: float = 5.0 * 10 / 6
    evaluate_threads_speedup: float = 4.0
    margin: float = 3.0  # runtime limits declared = estimate at mfu_low x margin


ASSUMPTIONS = Assumptions()


def shaped_dit(shape: dict, **options):
    """A stable-audio-tools rectified-flow DiT of that shape (embed_dim, depth, num_heads,
    io_channels, cond_dim): what the cost model counts and the weight-overhead benchmark times."""
    from stable_audio_tools.models.diffusion import DiTWrapper

    return DiTWrapper(
        diffusion_objective="rectified_flow",
        io_channels=shape["io_channels"],
        embed_dim=shape["embed_dim"],
        depth=shape["depth"],
        num_heads=shape["num_heads"],
        cond_token_dim=shape["cond_dim"],
        project_cond_tokens=True,
        transformer_type="continuous_transformer",
        **options,
    )


def dit_parameters() -> int:
    """Parameters of SA3 Medium's DiT, as counted on stable_audio_3's own classes at full size
    (eisbach.backends.sa3_medium; tests/test_sa3_medium.py recounts them)."""
    from eisbach.backends.sa3_medium import MEDIUM_DIT_PARAMETERS

    return MEDIUM_DIT_PARAMETERS


def grid_jobs(config: dict) -> dict:
    from eisbach.grid import expand_grid
    from eisbach.musiccaps import n_shards

    runs = expand_grid(config["grid"])
    sampled = 1 + sum(1 for r in runs.values() if r["sample"])  # + the base model
    return {
        "finetune": len(runs),
        "sample_run": sampled,
        "data_shard": n_shards(config["data"]),
        # data_metadata, manifest, latents, pretrain_base, sample_index, evaluate, figures,
        # report_html, all
        "other": 9,
    }


def estimate(config: dict, n_params: int, a: Assumptions = ASSUMPTIONS, mfu: float | None = None):
    """Per-stage GPU-hours at mfu_low and mfu_high (or at a measured mfu for both)."""
    jobs = grid_jobs(config)
    train, sample = config["train"], config["sample"]
    heldout_t = len(train.get("heldout", {}).get("t", [0.1, 0.3, 0.5, 0.7, 0.9]))
    frames = a.clip_seconds * LATENT_RATE
    per_train_job = 4 * n_params * frames * int(train["batch_size"]) * int(train["steps"])
    per_train_job += 2 * n_params * frames * a.eval_clips * heldout_t  # held-out loss
    n_samples = (len(sample["prompts"]) + int(sample["captions_from_eval"])) * len(sample["seeds"])
    cfg_passes = 2 if float(sample["cfg_scale"]) != 1.0 else 1
    per_sample_job = 2 * n_params * frames * cfg_passes * int(sample["steps"]) * n_samples
    decode_s = n_samples * a.clip_seconds / a.autoencoder_realtime
    encode_s = a.clips * a.clip_seconds / a.autoencoder_realtime
    overhead_h = a.overhead_min_per_gpu_job / 60
    mfus = {"low": mfu or a.mfu_low, "high": mfu or a.mfu_high}
    rows = []
    for name, count, flops, extra_s in (
        ("latents", 1, 0.0, encode_s),
        ("pretrain_base", 1, 0.0, 60 * a.base_copy_min),
        ("finetune", jobs["finetune"], per_train_job, 0.0),
        ("sample_run", jobs["sample_run"], per_sample_job, decode_s),
    ):
        row = {"stage": name, "jobs": count, "tflop_per_job": flops / 1e12}
        for label, m in mfus.items():
            job_h = flops / (a.peak_tflops * 1e12 * m) / 3600 + extra_s / 3600 + overhead_h
            row[f"job_minutes_{label}"] = 60 * job_h
            row[f"gpu_hours_{label}"] = count * job_h
        rows.append(row)
    total = {label: sum(r[f"gpu_hours_{label}"] for r in rows) for label in mfus} | {
        "jobs": sum(jobs.values())
    }
    return {
        "n_params": n_params,
        "frames_per_clip": frames,
        "samples_per_run": n_samples,
        "jobs": jobs,
        "mfu": mfus,
        "stages": rows,
        "total_gpu_hours": {k: total[k] for k in mfus},
        "total_usd": {k: total[k] * a.usd_per_gpu_hour for k in mfus},
        "total_jobs": total["jobs"],
        "evaluate_cpu_hours": evaluate_cpu_hours(jobs["sample_run"] * n_samples, a),
        "downloads": download_cost(config, a),
        "assumptions": asdict(a),
    }


def download_cost(config: dict, a: Assumptions = ASSUMPTIONS) -> dict:
    """Hours of the MusicCaps downloads and what they cost on a CPU machine against on the GPU
    machine; nothing for a local or generated source."""
    data = config.get("data", {})
    clips = 0
    if data.get("source") == "musiccaps":
        clips = min(a.clips, data.get("limit") or a.clips)
    hours = clips / a.downloads_per_hour
    return {
        "clips": clips,
        "hours": hours,
        "usd_on_cpu_machine": hours * a.usd_per_cpu_hour,
        "usd_on_gpu_machine": hours * a.usd_per_gpu_hour,
    }


def evaluate_cpu_hours(samples: int, a: Assumptions = ASSUMPTIONS) -> float:
    """One thread's hours for evaluate: every sample analysed and embedded, and every reference
    clip (the MusicCaps clips, FD-musicnn's reference sets) embedded."""
    return (
        samples * (a.analyse_s_per_clip + a.musicnn_s_per_clip) + a.clips * a.musicnn_s_per_clip
    ) / 3600


def declared_runtimes(est: dict, a: Assumptions = ASSUMPTIONS) -> dict[str, int]:
    """Runtime limits (minutes) to declare: the pessimistic estimate times the margin, rounded
    up to 15 minutes (evaluate: its one-thread hours over the assumed speedup of its threads)."""
    minutes = {r["stage"]: r["job_minutes_low"] for r in est["stages"]}
    minutes["evaluate"] = 60 * est["evaluate_cpu_hours"] / a.evaluate_threads_speedup
    return {stage: int(15 * math.ceil(m * a.margin / 15)) for stage, m in minutes.items()}


def markdown(est: dict) -> str:
    a, dl = est["assumptions"], est["downloads"]
    lines = [
        f"DiT parameters (counted): {est['n_params'] / 1e9:.2f} B; {est['frames_per_clip']:.0f} "
        f"latent frames per {a['clip_seconds']:g} s clip; {est['samples_per_run']} samples per "
        f"sampled run; {est['total_jobs']} jobs in the DAG "
        f"({est['jobs']['finetune']} fine-tunes, {est['jobs']['sample_run']} sampling jobs).",
        "",
        f"| stage | jobs | TFLOP/job | min/job (MFU {est['mfu']['low']:.0%}) | GPU-h "
        f"(MFU {est['mfu']['low']:.0%}) | min/job (MFU {est['mfu']['high']:.0%}) | GPU-h "
        f"(MFU {est['mfu']['high']:.0%}) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in est["stages"]:
        lines.append(
            f"| {r['stage']} | {r['jobs']} | {r['tflop_per_job']:,.0f} | "
            f"{r['job_minutes_low']:.1f} | {r['gpu_hours_low']:.1f} | "
            f"{r['job_minutes_high']:.1f} | {r['gpu_hours_high']:.1f} |"
        )
    low, high = est["total_gpu_hours"]["low"], est["total_gpu_hours"]["high"]
    lines += [
        f"| **total** | {est['total_jobs']} | | | **{low:.1f}** | | **{high:.1f}** |",
        "",
        f"Cost at ${a['usd_per_gpu_hour']:.2f}/GPU-hour: **${est['total_usd']['low']:,.0f}** "
        f"(MFU {est['mfu']['low']:.0%}) to **${est['total_usd']['high']:,.0f}** "
        f"(MFU {est['mfu']['high']:.0%}).",
        "",
        f"Not in the GPU cost: evaluate, one CPU job of {est['evaluate_cpu_hours']:.0f} "
        "single-thread hours (analysis and FD-musicnn embeddings), and the downloads: "
        f"{dl['clips']:,} clips at {a['downloads_per_hour']:g} an hour, {dl['hours']:.1f} h, "
        f"${dl['usd_on_cpu_machine']:,.2f} on a CPU machine at ${a['usd_per_cpu_hour']:.2f}/h "
        f"(make data) against ${dl['usd_on_gpu_machine']:,.0f} if they hold the GPU machine.",
        "",
        "Assumptions: " + "; ".join(f"{k}={v}" for k, v in a.items()) + ".",
    ]
    return "\n".join(lines)


def measured_mfu(result: dict) -> float:
    """The MFU of the eisbach step from benchmarks/weight_overhead.py's JSON (what
    scripts/gpu_check.sh writes), refused unless it ran the sa3-medium shape on a GPU."""
    shape = result.get("shape", {})
    full = {k: shape.get(k) for k in SA3_MEDIUM} == SA3_MEDIUM
    if result.get("device", "cpu") == "cpu" or result.get("preset") != "sa3-medium" or not full:
        raise SystemExit(
            "--gpu-check: the result is not the sa3-medium shape on a GPU "
            f"(device {result.get('device')!r}, preset {result.get('preset')!r}); "
            "its MFU says nothing about the paper grid"
        )
    if "mfu" not in result:
        raise SystemExit("--gpu-check: the result has no MFU (unknown GPU: pass --peak-tflops)")
    return float(result["mfu"]["eisbach"])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("config/paper.yaml"))
    parser.add_argument("--gpu-check", type=Path, help="scripts/gpu_check.sh's JSON: its MFU")
    parser.add_argument("--usd-per-gpu-hour", type=float)
    parser.add_argument("--json", type=Path, help="also write the estimate here")
    args = parser.parse_args(argv)
    config = yaml.safe_load(args.config.read_text())
    a = ASSUMPTIONS
    if args.usd_per_gpu_hour:
        a = Assumptions(**(asdict(a) | {"usd_per_gpu_hour": args.usd_per_gpu_hour}))
    mfu = None
    if args.gpu_check:
        mfu = measured_mfu(json.loads(args.gpu_check.read_text()))
    est = estimate(config, dit_parameters(), a, mfu)
    est["declared_runtime_min"] = declared_runtimes(est, a)
    print(markdown(est))
    print("\nRuntime limits to declare (min):", est["declared_runtime_min"])
    if args.json:
        args.json.write_text(json.dumps(est, indent=2))
    return est
