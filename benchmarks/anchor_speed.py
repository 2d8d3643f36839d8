"""Clips per second of each anchor metric on CPU, against the Table 2 analysis of the same clips,
and the GPU cost of 1,000 clips from each anchor's counted FLOPs.

Each anchor runs its library's network at the real architecture (eisbach.anchors.<name>.build(),
random weights: speed does not depend on the weights; CLAP's roberta-base is a 2-layer stand-in,
and text is encoded once per prompt, so it barely counts). Clips are 10 s, 44.1 kHz stereo, the
paper profile's. Anchors and the baseline (eisbach.metrics.analyse, which every clip gets anyway)
are timed on the same clips, interleaved over --repeats passes so that load from other processes
hits all alike; a first untimed clip warms JITs (resampy's numba kernel, librosa's). FLOPs per
clip are counted by torch.utils.flop_counter on one clip's forward passes; the GPU cost is
FLOPs / (peak x MFU) at eisbach.cloud's assumptions (989 TFLOP/s, MFU 2-25 %, $3/GPU-hour), which
are for bf16 and so flatter these fp32 models, and leaves out loading and per-job overhead.

    python benchmarks/anchor_speed.py                       # 3 clips, 2 passes
    python benchmarks/anchor_speed.py --clips 8 --repeats 3 --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from torch.utils.flop_counter import FlopCounterMode

from eisbach import metrics
from eisbach.anchors import clap, openl3, passt
from eisbach.cloud import ASSUMPTIONS

RATE = 44100


def make_clips(folder: Path, n: int, seconds: float) -> list[Path]:
    rng = np.random.default_rng(0)
    t = np.arange(int(RATE * seconds)) / RATE
    paths = []
    for i in range(n):
        notes = np.sin(2 * np.pi * (220 + 55 * i) * t * (1 + 0.5 * (t % 2 > 1)))
        wave = 0.3 * notes[:, None] + 0.02 * rng.standard_normal((t.size, 2))
        paths.append(folder / f"clip{i}.wav")
        sf.write(paths[-1], wave.astype(np.float32), RATE)
    return paths


def build_all(hf_cache: Path) -> dict:
    """name -> per-clip function, all on CPU."""
    torch.manual_seed(0)
    l3 = openl3.build().eval()
    pa = passt.build().eval()
    cl = clap.build("cpu", hf_cache)
    cl.eval()

    def analyse(path):
        audio, rate = sf.read(path, dtype="float32", always_2d=True)
        return metrics.analyse(audio.mean(axis=1), rate)

    return {
        "baseline (Table 2 analyse)": analyse,
        "FD-openl3 embedding": lambda p: openl3.embed(p, l3, "cpu"),
        "KL-PaSST probabilities": lambda p: passt.probabilities(p, pa, "cpu"),
        "CLAP audio embedding": lambda p: clap.audio_embedding(p, cl),
    }


def count_flops(fn, path) -> float:
    with FlopCounterMode(display=False) as counter:
        fn(path)
    return float(counter.get_total_flops())


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clips", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    # the stand-in weights the tests use: speed does not depend on the weights' values
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from anchor_standins import hf_roberta_cache

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clips = make_clips(tmp, args.clips + 1, args.seconds)
        fns = build_all(hf_roberta_cache(tmp / "hf"))
        warm, timed = clips[0], clips[1:]
        for fn in fns.values():
            fn(warm)
        flops = {name: count_flops(fn, warm) for name, fn in fns.items() if "baseline" not in name}
        seconds = {name: [] for name in fns}
        for _ in range(args.repeats):
            for path in timed:
                for name, fn in fns.items():
                    start = time.perf_counter()
                    fn(path)
                    seconds[name].append(time.perf_counter() - start)
    a = ASSUMPTIONS
    base = statistics.median(seconds["baseline (Table 2 analyse)"])
    out = {"clip_seconds": args.seconds, "clips": args.clips, "threads": args.threads, "rows": []}
    print(
        f"{'anchor':28s} {'s/clip':>8s} {'clips/s':>8s} {'x baseline':>10s} {'GFLOP/clip':>10s} "
        f"{'$/1000 clips GPU (MFU 25%-2%)':>30s}"
    )
    for name, values in seconds.items():
        med = statistics.median(values)
        row = {"anchor": name, "s_per_clip": med, "clips_per_s": 1 / med, "ratio": med / base}
        line = f"{name:28s} {med:8.3f} {1 / med:8.2f} {med / base:10.1f}"
        if name in flops:
            gpu_s = {m: flops[name] / (a.peak_tflops * 1e12 * m) for m in (a.mfu_high, a.mfu_low)}
            usd = {m: 1000 * s / 3600 * a.usd_per_gpu_hour for m, s in gpu_s.items()}
            row |= {"gflop_per_clip": flops[name] / 1e9, "usd_per_1000_clips": usd}
            line += f" {flops[name] / 1e9:10.1f} {usd[a.mfu_high]:14.5f} - {usd[a.mfu_low]:.5f}"
        out["rows"].append(row)
        print(line)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
