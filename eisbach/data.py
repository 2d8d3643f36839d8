"""Data stage: clips on disk and the manifest that records every clip's fate.

The demo source renders music with known structure offline (eisbach.demo_music). MusicCaps
download and local-folder modes plug in here (issue 4) and write the same manifest.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa

from eisbach import provenance
from eisbach.atomic import write_parquet, write_wav

MANIFEST_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("source", pa.string()),
        ("ytid", pa.string()),
        ("start_s", pa.float64()),
        ("end_s", pa.float64()),
        ("caption", pa.string()),
        ("aspect_list", pa.list_(pa.string())),
        ("split", pa.string()),
        ("status", pa.string()),
        ("reason", pa.string()),
        ("attempts", pa.int32()),
        ("duration", pa.float64()),
        ("sample_rate", pa.int32()),
        ("sha256", pa.string()),
        ("path", pa.string()),
    ]
)

STATUSES = (
    "ok",
    "unavailable",
    "private",
    "bot_check",
    "transient",
    "corrupt",
    "silent",
    "too_short",
    "clipped",
    "missing",
)


def validate_clip(audio: np.ndarray, sample_rate: int, rules: dict) -> tuple[str, str]:
    """(status, reason) for decoded mono audio, by the thresholds under data.validation."""
    duration = len(audio) / sample_rate
    if duration < rules["min_seconds"]:
        return "too_short", f"{duration:.2f} s < data.validation.min_seconds={rules['min_seconds']}"
    rms_db = 20 * np.log10(np.sqrt(np.mean(np.square(audio, dtype=np.float64))) + 1e-12)
    if rms_db < rules["silence_rms_db"]:
        return "silent", f"RMS {rms_db:.1f} dBFS < data.validation.silence_rms_db"
    clipped = float(np.mean(np.abs(audio) >= 0.999))
    if clipped > rules["max_clipped_fraction"]:
        return "clipped", f"{clipped:.2%} full-scale samples > data.validation.max_clipped_fraction"
    return "ok", ""


def file_sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def demo_rows(config: dict, audio_dir: Path, sample_rate: int) -> list[dict]:
    from eisbach.demo_music import render_demo_clips

    demo = config["demo"]
    clips = render_demo_clips(
        n_clips=int(demo["n_clips"]),
        seconds=float(demo["seconds"]),
        sample_rate=sample_rate,
        seed=int(demo["seed"]),
    )
    rng = np.random.default_rng(int(demo["seed"]))
    n_eval = int(round(len(clips) * float(demo["eval_fraction"])))
    eval_ids = set(rng.choice([c.id for c in clips], size=n_eval, replace=False).tolist())
    clip_provenance = provenance.provenance({"data": config, "sample_rate": sample_rate})
    rows = []
    for clip in clips:
        path = audio_dir / f"{clip.id}.wav"
        status, reason = validate_clip(clip.audio, clip.sample_rate, config["validation"])
        if status == "ok":
            write_wav(path, clip.audio, clip.sample_rate, clip_provenance)
        rows.append(
            {
                "id": clip.id,
                "source": "demo",
                "ytid": None,
                "start_s": 0.0,
                "end_s": len(clip.audio) / clip.sample_rate,
                "caption": clip.caption,
                "aspect_list": list(clip.aspect_list),
                "split": "eval" if clip.id in eval_ids else "train",
                "status": status,
                "reason": reason or f"demo {clip.kind}; sections {json.dumps(clip.sections)}",
                "attempts": 1,
                "duration": len(clip.audio) / clip.sample_rate,
                "sample_rate": clip.sample_rate,
                "sha256": file_sha256(path) if status == "ok" else None,
                "path": str(path) if status == "ok" else None,
            }
        )
    return rows


def build_manifest(config: dict, sample_rate: int, out: Path) -> pa.Table:
    audio_dir = out.parent / "audio"
    source = config["source"]
    if source == "demo":
        rows = demo_rows(config, audio_dir, sample_rate)
    else:
        raise NotImplementedError(
            f"data.source: {source!r} (MusicCaps download / local folder) is issue 4; "
            "only 'demo' is built so far"
        )
    table = pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)
    meta = provenance.parquet_metadata(
        {"data": config, "sample_rate": sample_rate}, stage="data", source=source
    )
    table = table.replace_schema_metadata(meta)
    write_parquet(out, table)
    return table


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config-json", required=True, help="the `data` config section, as JSON")
    parser.add_argument("--sample-rate", type=int, required=True, help="the backend's rate")
    parser.add_argument("--out", type=Path, required=True, help="manifest.parquet to write")
    args = parser.parse_args(argv)
    table = build_manifest(json.loads(args.config_json), args.sample_rate, args.out)
    counts = dict(zip(*np.unique(table["status"].to_numpy(), return_counts=True), strict=True))
    print(f"manifest: {table.num_rows} clips, by status {counts} -> {args.out}")
