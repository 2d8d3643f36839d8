"""The judge's readings on real music, as docs/metrics.md quotes them: boundaries of pieces built
from ../shared/data/music scored with mir_eval.segment, each metric's worst relative change
under gain, DC, MP3, source rate and time reversal, and the guards (drones, a sustained chord,
Vendi, consistency). It measures; tests/test_metrics_real_music.py asserts.

    python benchmarks/metrics_real_music.py [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from real_music import RATE, built_pieces, load_music, mp3_round_trip  # noqa: E402

from eisbach import probe_signals as P  # noqa: E402
from eisbach.metrics import METRICS, analyse  # noqa: E402

TABLE2 = [n for n, s in METRICS.items() if s.table2] + ["loudness_range_lu"]


def structure(music) -> list[dict]:
    import mir_eval

    rows = []
    for piece in built_pieces(music):
        a = analyse(piece["audio"], RATE)
        est, end = a.boundaries_s, piece["audio"].size / RATE
        estimated = np.stack([np.r_[0.0, est], np.r_[est, end]], axis=1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            f05, f3 = (
                mir_eval.segment.detection(piece["intervals"], estimated, window=w, trim=True)[2]
                for w in (0.5, 3.0)
            )
        lengths = np.diff(piece["intervals"], axis=1).ravel()
        truth = float(np.sum(lengths**2) / np.sum(lengths))
        rows.append(
            {
                "piece": piece["name"],
                "f05": round(float(f05), 2),
                "f3": round(float(f3), 2),
                "block_s": round(a.metrics["ssm_block_scale"], 2),
                "built_s": truth,
                "sections": int(a.metrics["n_sections"]),
            }
        )
        print(rows[-1], flush=True)
    return rows


def invariances(music) -> dict:
    out: dict = {}
    for name in sorted(music):
        y = music[name][10 * RATE : 20 * RATE]
        ref = analyse(y, RATE).metrics
        changes = {
            "gain -20 dB": (P.with_gain(y, -20.0), RATE),
            "gain -40 dB": (P.with_gain(y, -40.0), RATE),
            "DC offset 0.05": (y + np.float32(0.05), RATE),
            "MP3 ~64 kbps": (mp3_round_trip(y, RATE, 64)[0], RATE),
            "8 kHz source": (P.resampled(y, RATE, 8_000), 8_000),
            "48 kHz source": (P.resampled(y, RATE, 48_000), 48_000),
            "time reversal": (np.ascontiguousarray(y[::-1]), RATE),
            "6 s instead of 10 s": (y[: 6 * RATE], RATE),
        }
        for change, args in changes.items():
            got = analyse(*args).metrics
            row = out.setdefault(change, {})
            for m in TABLE2:
                if np.isfinite(ref[m]) and np.isfinite(got[m]):
                    rel = abs(got[m] - ref[m]) / abs(ref[m])
                    row[m] = max(row.get(m, 0.0), round(100 * rel, 1))
                elif np.isfinite(ref[m]) != np.isfinite(got[m]):
                    row[f"{m}_nan_flips"] = row.get(f"{m}_nan_flips", 0) + 1
        print(name, flush=True)
    return out


def guards(music) -> dict:
    from eisbach.atomic import write_wav
    from eisbach.diversity import consistency, vendi, vendi_cosine
    from eisbach.frechet import MUSICNN_VENV, musicnn_embeddings

    excerpts = {n: music[n][10 * RATE : 20 * RATE] for n in sorted(music)}
    real = {n: analyse(y, RATE) for n, y in excerpts.items()}
    chord = [P.harmonic(P.midi_hz(m), 160_000, 16_000, 8, 0.8) for m in (48, 55, 64)]
    organ = analyse(np.asarray(0.3 * sum(chord), np.float32), 16_000).metrics
    roots = (55.0, 82.4, 110.0, 146.8)
    drones = [analyse(P.drone(10.0, 16_000, f), 16_000) for f in roots]
    four = sorted(excerpts)[::2]
    out = {
        "real_contrast_median_db": float(
            np.median([a.metrics["spectral_contrast_db"] for a in real.values()])
        ),
        "organ_chord": {k: organ[k] for k in ("spectral_contrast_db", "static_clip")},
        "real_static": int(sum(a.metrics["static_clip"] for a in real.values())),
        "vendi_spectral_drones": vendi([d.embedding for d in drones]),
        "vendi_spectral_real": vendi([real[n].embedding for n in four]),
    }
    # consistency: a clip with itself at -20 dB; one built form on different tracks
    y = excerpts[four[1]]
    out["consistency_self_-20dB"] = consistency(
        [real[four[1]].ssm, analyse(P.with_gain(y, -20.0), RATE).ssm]
    )
    pieces = [p for p in built_pieces(music) if p["name"] == "ABAB 4s across"]
    rng = np.random.default_rng(1)
    names = sorted(music)
    forms = []
    for _ in range(3):
        a, b = rng.choice(len(names), 2, replace=False)
        cuts = {"A": (music[names[a]], 5.0), "B": (music[names[b]], 20.0)}
        forms.append(analyse(P.built_piece(cuts, "ABAB", 4.0, RATE)[0], RATE).ssm)
    out["consistency_same_form_other_tracks"] = consistency(forms)
    other = analyse(P.built_piece(cuts, "AABA", 4.0, RATE)[0], RATE).ssm
    out["consistency_ABAB_vs_AABA"] = consistency([forms[-1], other])
    del pieces
    if (MUSICNN_VENV / "bin" / "python").exists():
        with tempfile.TemporaryDirectory() as tmp:
            paths = []
            for i, n in enumerate(four):
                paths.append(Path(tmp) / f"real{i}.wav")
                write_wav(paths[-1], excerpts[n], RATE)
            for f in roots:
                paths.append(Path(tmp) / f"drone{f:g}.wav")
                write_wav(paths[-1], P.drone(10.0, 16_000, f), 16_000)
            emb = musicnn_embeddings(paths, Path(tmp) / "cache", threads=2)
        out["vendi_musicnn_real"] = vendi_cosine(list(emb[:4]))
        out["vendi_musicnn_drones"] = vendi_cosine(list(emb[4:]))
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    music = load_music()
    report = {"structure": structure(music)}
    s = report["structure"]
    report["structure_summary"] = {
        "f3_mean": float(np.mean([r["f3"] for r in s])),
        "f05_mean": float(np.mean([r["f05"] for r in s])),
        "block_within_25pct": float(
            np.mean([abs(r["block_s"] / r["built_s"] - 1) <= 0.25 for r in s])
        ),
    }
    report["invariances_worst_pct"] = invariances(music)
    report["guards"] = guards(music)
    text = json.dumps(report, indent=1, default=float)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
