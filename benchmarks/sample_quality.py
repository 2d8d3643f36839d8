"""Do the samples sound like the training music? Readings of a results folder, and a picture.

For the training clips (results/data/audio, split train), optionally their round trip through
the backend's latents and decoder (``--roundtrip CONFIG``: what the decoder alone can give), and
the samples of every run (results/samples/index.parquet), it prints per group the median and
inter-quartile range over clips of:

  peak     onset-strength peakiness: p95 / median of librosa.onset.onset_strength. Note onsets
           give a spiky envelope (training clips ~20); a noise-like smear gives ~2.
  flat     median spectral flatness (0 = pure tones / harmonic lines, 1 = white noise).
  aba      section contrast: mean cosine distance of the mean log-mel of the middle third to the
           outer thirds, minus that of the two outer thirds to each other (A-B-A pieces > 0,
           drones ~0).

``--png`` renders log-mel spectrograms side by side: a row per group (training clips, round
trip, then base, none, eisbach, ... samples of the same prompts and seeds), a column per clip.

    python benchmarks/sample_quality.py results --png /tmp/quality.png
    python benchmarks/sample_quality.py /tmp/demo-wt/results --roundtrip config/config.yaml
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import soundfile as sf

N_FFT, HOP = 1024, 256


def onset_peakiness(y: np.ndarray, sr: int) -> float:
    import librosa

    env = librosa.onset.onset_strength(y=np.asarray(y, np.float32), sr=sr)
    return float(np.percentile(env, 95) / max(float(np.median(env)), 1e-8))


def log_mel(y: np.ndarray, sr: int, n_mels: int = 96) -> np.ndarray:
    import librosa

    mel = librosa.feature.melspectrogram(
        y=np.asarray(y, np.float32), sr=sr, n_fft=N_FFT, hop_length=HOP, n_mels=n_mels
    )
    return librosa.power_to_db(mel, ref=np.max, top_db=80.0)


def flatness(y: np.ndarray) -> float:
    import librosa

    return float(np.median(librosa.feature.spectral_flatness(y=y, n_fft=N_FFT, hop_length=HOP)))


def aba_contrast(y: np.ndarray, sr: int) -> float:
    mel = log_mel(y, sr) + 80.0  # non-negative
    a1, b, a2 = (part.mean(axis=1) for part in np.array_split(mel, 3, axis=1))

    def dist(u, v):
        return 1.0 - float(u @ v / max(np.linalg.norm(u) * np.linalg.norm(v), 1e-8))

    return 0.5 * (dist(a1, b) + dist(b, a2)) - dist(a1, a2)


def readings(y: np.ndarray, sr: int) -> dict:
    return {"peak": onset_peakiness(y, sr), "flat": flatness(y), "aba": aba_contrast(y, sr)}


def load(path) -> tuple[np.ndarray, int]:
    y, sr = sf.read(str(path), dtype="float32", always_2d=True)
    return y.mean(axis=1), sr


def training_clips(results: Path, split: str = "train") -> list[dict]:
    import pyarrow.parquet as pq

    manifest = pq.read_table(results / "data" / "manifest.parquet").to_pylist()
    return [
        {"id": r["id"], "path": results / "data" / "audio" / f"{r['id']}.wav"}
        for r in manifest
        if r["split"] == split and r["status"] == "ok"
    ]


def roundtrip(results: Path, config_path: Path, ids: list[str]) -> dict[str, np.ndarray]:
    """Training clips decoded from their stored latents by the config's backend."""
    import torch
    import yaml

    from eisbach.backends import get_backend
    from eisbach.latents import load_latents

    backend_cfg = yaml.safe_load(config_path.read_text())["backend"]
    latents_dir = results / "latents" / backend_cfg["name"]
    backend = get_backend(backend_cfg["name"], backend_cfg, latents_dir)
    rows = {r["id"]: r for r in load_latents(latents_dir)}
    out = {}
    for clip_id in ids:
        latent = torch.from_numpy(np.asarray(rows[clip_id]["latent"], np.float32))
        out[clip_id] = backend.decode(latent[None])[0]
    return out, backend.sample_rate


def summarize(values: list[float]) -> str:
    q1, med, q3 = np.percentile(values, [25, 50, 75])
    return f"{med:7.3g} [{q1:.3g}, {q3:.3g}]"


def render(groups: dict[str, list[tuple[str, np.ndarray, int]]], png: Path, columns: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [g for g, clips in groups.items() if clips]
    fig, axes = plt.subplots(
        len(names), columns, figsize=(2.6 * columns, 1.9 * len(names)), squeeze=False
    )
    for i, name in enumerate(names):
        for j in range(columns):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j >= len(groups[name]):
                ax.axis("off")
                continue
            label, y, sr = groups[name][j]
            ax.imshow(log_mel(y, sr), origin="lower", aspect="auto", cmap="magma", vmin=-80)
            ax.set_title(f"{name}: {label}", fontsize=7)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("results", type=Path, help="a results folder of the workflow")
    parser.add_argument("--roundtrip", type=Path, help="config whose backend decodes latents")
    parser.add_argument("--runs", nargs="*", help="run ids to read (default: every sampled run)")
    parser.add_argument("--png", type=Path, help="write the spectrogram grid here")
    parser.add_argument("--columns", type=int, default=6, help="clips per row of the grid")
    parser.add_argument("--json", type=Path, help="also write the readings here")
    args = parser.parse_args(argv)

    groups: dict[str, list[tuple[str, np.ndarray, int]]] = {}
    train = training_clips(args.results)
    groups["train"] = [(c["id"], *load(c["path"])) for c in train]
    if args.roundtrip:
        decoded, sr = roundtrip(args.results, args.roundtrip, [c["id"] for c in train])
        groups["roundtrip"] = [(k, y, sr) for k, y in decoded.items()]
    index = args.results / "samples" / "index.parquet"
    if index.exists():
        import pyarrow.parquet as pq

        rows = sorted(pq.read_table(index).to_pylist(), key=lambda r: (r["prompt_id"], r["seed"]))
        run_ids = args.runs or sorted(
            {r["run_id"] for r in rows}, key=lambda r: (r[:4] != "base", r)
        )
        for rid in run_ids:
            # index paths are relative to the workflow's directory, the parent of results/
            groups[rid] = [
                (f"{r['prompt_id'][:14]}-s{r['seed']}", *load(args.results.parent / r["path"]))
                for r in rows
                if r["run_id"] == rid
            ]
    result = {}
    print(f"{'group':<34}{'n':>4}  {'peak p95/median':^24}  {'flatness':^24}  {'aba contrast':^24}")
    for name, clips in groups.items():
        if not clips:
            continue
        read = [readings(y, sr) for _, y, sr in clips]
        result[name] = {k: [r[k] for r in read] for k in ("peak", "flat", "aba")}
        print(
            f"{name:<34}{len(read):>4}  "
            + "  ".join(f"{summarize(result[name][k]):^24}" for k in ("peak", "flat", "aba"))
        )
    if args.png:
        render(groups, args.png, args.columns)
        print(f"spectrograms -> {args.png}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
