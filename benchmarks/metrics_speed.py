"""Clips per second of the evaluate stage, per metric family, against reading the clip's STFT.

The clips are eisbach.probe_signals material (sections, a drone, noise) written as WAVs at the
demo's 16 kHz and at 44.1 kHz. Each family is timed on the same clips, families interleaved
over --repeats passes so that load from other processes hits all alike; the median seconds per
clip are reported with the ratio to the baseline (read the WAV + resample + STFT, which every
family needs). The librosa/numba JIT is warmed by an untimed first pass; its one-off cost is
printed on its own.

    python benchmarks/metrics_speed.py                  # 12 clips of 6 s at 16 kHz and 44.1 kHz
    python benchmarks/metrics_speed.py --clips 24 --seconds 10 --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from eisbach import diversity, metrics, probe_signals
from eisbach.metrics import ANALYSIS_RATE, HOP_LENGTH, N_FFT, N_MELS


def make_clips(folder: Path, n: int, seconds: float) -> list[Path]:
    makers = [
        lambda r, k: probe_signals.sections(0.5 + k % 4, seconds, r, seed=k),
        lambda r, k: probe_signals.drone(seconds, r, f0=110.0 + 10 * k),
        lambda r, k: probe_signals.noise(seconds, r, seed=k, color="pink"),
    ]
    paths = []
    for k in range(n):
        rate = 16000 if k % 2 == 0 else 44100
        path = folder / f"clip{k}.wav"
        sf.write(path, makers[k % len(makers)](rate, k), rate)
        paths.append(path)
    return paths


def front_end(path: Path):
    """What every family needs: the clip at the analysis rate and its spectra."""
    import librosa

    audio, rate = sf.read(path, dtype="float32")
    y = metrics._prepare(audio, rate)
    magnitude = np.abs(librosa.stft(y, n_fft=N_FFT, hop_length=HOP_LENGTH)).astype(np.float64)
    power = magnitude**2
    mel = librosa.feature.melspectrogram(S=power, sr=ANALYSIS_RATE, n_fft=N_FFT, n_mels=N_MELS)
    mel_db = 10 * np.log10(np.maximum(mel, mel.max() * 1e-6))
    return y, power, mel_db


def families(clip) -> dict:
    import librosa

    y, power, mel_db = clip
    freqs = librosa.fft_frequencies(sr=ANALYSIS_RATE, n_fft=N_FFT)
    pairs = np.ones(mel_db.shape[1], bool)
    pairs[0] = False
    return {
        "block scale (chroma, Laplacian segmentation)": lambda: metrics._block_scale(
            librosa.feature.chroma_stft(S=power, sr=ANALYSIS_RATE, n_fft=N_FFT, tuning=0.0),
            mel_db,
        ),
        "consistency SSM (chroma, timbre)": lambda: metrics._self_similarity(
            librosa.feature.chroma_stft(S=power, sr=ANALYSIS_RATE, n_fft=N_FFT, tuning=0.0),
            mel_db,
            np.ones(mel_db.shape[1], bool),
        ),
        "loudness range (pyebur128)": lambda: metrics._loudness_range_lu(y),
        "spectral contrast": lambda: metrics._spectral_contrast_db(power, freqs),
        "flux sparsity": lambda: metrics._gini(metrics._flux(mel_db, pairs) + 0.5),
        "pca coverage": lambda: metrics._pca_coverage(mel_db),
        "dynamic range (RMS gate)": lambda: librosa.feature.rms(
            y=y, frame_length=N_FFT, hop_length=HOP_LENGTH
        ),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads, as the rule's")
    args = parser.parse_args(argv)
    from threadpoolctl import threadpool_limits

    threadpool_limits(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_clips(Path(tmp), args.clips, args.seconds)
        start = time.perf_counter()
        metrics.analyse(*sf.read(paths[0], dtype="float32"))
        warmup = time.perf_counter() - start

        times: dict[str, list[float]] = {}

        def timed(name, fn, n):
            t0 = time.perf_counter()
            out = fn()
            times.setdefault(name, []).append((time.perf_counter() - t0) / n)
            return out

        for _ in range(args.repeats):
            clips = timed(
                "baseline: read + resample + STFT",
                lambda: [front_end(p) for p in paths],
                len(paths),
            )
            for name in families(clips[0]):
                timed(name, lambda n=name, cs=clips: [families(c)[n]() for c in cs], len(paths))
            analyses = timed(
                "whole analyse() per clip",
                lambda: [metrics.analyse(*sf.read(p, dtype="float32")) for p in paths],
                len(paths),
            )
            timed(
                "diversity + consistency (per clip)",
                lambda found=analyses: (
                    diversity.vendi([a.embedding for a in found if a.embedding is not None]),
                    diversity.consistency([a.ssm for a in found if a.ssm is not None]),
                ),
                len(paths),
            )

    base = statistics.median(times["baseline: read + resample + STFT"])
    rows = []
    print(
        f"{args.clips} clips of {args.seconds:g} s (half 16 kHz, half 44.1 kHz), {args.repeats} passes"
    )
    print(f"one-off librosa/numba warm-up: {warmup:.2f} s")
    print(f"{'family':40s} {'s/clip':>8s} {'spread':>8s} {'clips/s':>8s} {'x baseline':>10s}")
    for name, ts in times.items():
        med = statistics.median(ts)
        spread = (max(ts) - min(ts)) / 2
        rows.append({"family": name, "s_per_clip": med, "spread": spread, "ratio": med / base})
        print(f"{name:40s} {med:8.4f} {spread:8.4f} {1 / med:8.1f} {med / base:10.2f}")
    if args.json:
        args.json.write_text(json.dumps({"warmup_s": warmup, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
