"""Latents stage: pre-encode every valid clip to sharded Parquet, and each caption once.

Layout under results/latents/<backend>/ (the format is described in eisbach.latent_store):
  part-00000.parquet ...   one row per clip (latent, shape, n_frames, caption, sha256, ...)
  text/text.parquet        text conditioning, one row per distinct caption (keyed by its sha256)
  latents_manifest.json    the shards with their row counts and sha256, the format, provenance
  README.md                the dataset card: datasets configs, latent rate, scale and offset
  latents_progress.json    the shards finished so far, so that a killed encode resumes

The workflow encodes in a work folder beside the store (``--work-dir``) and publishes the
finished store into the declared output folder: Snakemake empties a declared folder before it
reruns the job, so the work folder is what a killed encode resumes from.

Encoding goes shard by shard. Each finished shard is written atomically and then recorded, with
its sha256 and the key of what went into it, in latents_progress.json. A rerun keeps the leading
shards whose file still has the recorded checksum and whose key is unchanged, and encodes again
from the first one that is not.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import soundfile as sf
from tqdm import tqdm

from eisbach import provenance
from eisbach.atomic import link_or_copy, write_json, write_parquet
from eisbach.backends import get_backend
from eisbach.data import file_sha256
from eisbach.integrity import verify_file
from eisbach.latent_store import (
    MANIFEST,
    SHARD_GLOB,
    TEXT_FILE,
    StoreFormat,
    TextTable,
    caption_key,
    latent_table,
    load_store,
    text_table,
    write_card,
    write_shard,
)

PROGRESS = "latents_progress.json"
TEXT_BATCH = 64
__all__ = ["caption_key", "load_latents", "load_text", "main", "run"]


def load_clip(
    path: str, expected_sha256: str, sample_rate: int, manifest=None, channels: int = 1
) -> np.ndarray:
    """The verified clip: mono [n] for a mono backend, [channels, n] for a stereo one (a mono
    clip on both sides, as Stable Audio 3's trainer forces stereo; a stereo clip as it is)."""
    verify_file(path, expected_sha256, record=manifest or "the data manifest", rule="data_shard")
    audio, rate = sf.read(path, dtype="float32", always_2d=True)
    if rate != sample_rate:
        raise ValueError(f"{path}: {rate} Hz, the backend expects {sample_rate} Hz")
    if channels == 1:
        return audio.mean(axis=1)
    if audio.shape[1] == 1:
        audio = np.repeat(audio, channels, axis=1)
    return np.ascontiguousarray(audio[:, :channels].T)


def encode_latents(backend, rows: list[dict], progress=None, manifest=None) -> list[np.ndarray]:
    """The latents of a shard's clips: batched when the backend can (``encode_audio_batch``,
    e.g. on a GPU), else clip by clip."""
    channels = int(getattr(backend, "audio_channels", 1))
    batched = getattr(backend, "encode_audio_batch", None)
    if batched is not None:
        audio = [
            load_clip(r["path"], r["sha256"], backend.sample_rate, manifest, channels) for r in rows
        ]
        latents = batched(audio, backend.sample_rate)
        if progress is not None:
            progress.update(len(rows))
        return latents
    latents = []
    for row in rows:
        audio = load_clip(row["path"], row["sha256"], backend.sample_rate, manifest, channels)
        latents.append(backend.encode_audio(audio, backend.sample_rate))
        if progress is not None:
            progress.update(1)
    return latents


def encode_records(backend, rows: list[dict], progress=None, manifest=None) -> list[dict]:
    records = []
    latents = encode_latents(backend, rows, progress, manifest)
    for row, latent in zip(rows, latents, strict=True):
        records.append(
            {
                "id": row["id"],
                "split": row["split"],
                "latent": latent,
                "n_frames": latent.shape[-1],
                "caption": row["caption"],
                "caption_key": caption_key(row["caption"]),
                "seconds_start": float(row["start_s"]),
                "seconds_total": float(row["duration"]),
                "audio_sha256": row["sha256"],
            }
        )
    return records


def encode_text_table(backend, captions: list[str], batch: int = TEXT_BATCH):
    unique = sorted(set(captions))
    embeddings, masks = [], []
    for start in tqdm(range(0, len(unique), batch), desc="encode captions", unit="batch"):
        e, m = backend.encode_text(unique[start : start + batch])
        embeddings.extend(e)
        masks.extend(m)
    return text_table([(caption_key(c), c) for c in unique], embeddings, masks)


def shard_key(stage_hash: str, backend_info: dict, index: int, rows: list[dict]) -> str:
    """What determines a shard's content: the stage config, the backend and the clips in it."""
    clips = [
        [r["id"], r["split"], r["sha256"], r["caption"], float(r["start_s"]), float(r["duration"])]
        for r in rows
    ]
    record = {"config": stage_hash, "backend": backend_info, "index": index, "clips": clips}
    return provenance.config_hash(record)


def finished_shards(out_dir: Path, names: list[str], keys: list[str]) -> list[dict]:
    """The leading shards that need no work: recorded with the same key and checksum."""
    path = out_dir / PROGRESS
    try:
        recorded = json.loads(path.read_text()).get("shards", {})
    except (FileNotFoundError, json.JSONDecodeError, AttributeError):
        recorded = {}
    done = []
    for name, key in zip(names, keys, strict=True):
        entry = recorded.get(name)
        shard = out_dir / name
        if not entry or entry.get("key") != key or not shard.exists():
            break
        if file_sha256(shard) != entry["sha256"]:
            break
        done.append(entry | {"path": name})
    return done


def remove_debris(out_dir: Path, keep: set[str]) -> None:
    """Temporary files of killed writes, and shards that the current plan does not have."""
    for tmp in out_dir.glob(".part-*.tmp"):
        tmp.unlink(missing_ok=True)
    # The text table of the layout before text/: it would break a *.parquet glob's schema.
    (out_dir / "text.parquet").unlink(missing_ok=True)
    for shard in out_dir.glob(SHARD_GLOB):
        if shard.name not in keep:
            shard.unlink()


def run(manifest_path: Path, backend_config: dict, latents_config: dict, out_dir: Path) -> dict:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = pq.read_table(manifest_path).to_pylist()
    ok_rows = [r for r in manifest if r["status"] == "ok"]
    if not ok_rows:
        raise ValueError(f"{manifest_path}: no clip has status ok; nothing to encode")
    fmt = StoreFormat.from_config(latents_config)
    backend = get_backend(backend_config["name"], backend_config, out_dir)
    stage_config = {"backend": backend_config, "latents": latents_config}
    meta = provenance.parquet_metadata(stage_config, stage="latents", **backend.describe())

    if hasattr(backend, "build_text_encoder"):
        backend.build_text_encoder([r["caption"] for r in ok_rows if r["split"] == "train"])

    per_shard = int(latents_config["rows_per_shard"])
    chunks = [ok_rows[i : i + per_shard] for i in range(0, len(ok_rows), per_shard)]
    names = [f"part-{i:05d}.parquet" for i in range(len(chunks))]
    stage_hash = provenance.config_hash(stage_config)
    keys = [shard_key(stage_hash, backend.describe(), i, c) for i, c in enumerate(chunks)]
    remove_debris(out_dir, keep=set(names))
    shards = finished_shards(out_dir, names, keys)
    record = {"shards": {s["path"]: {k: s[k] for k in ("key", "rows", "sha256")} for s in shards}}
    write_json(out_dir / PROGRESS, record)
    if shards:
        print(f"resuming: {len(shards)} of {len(chunks)} shards are finished and verified")

    skipped = sum(len(c) for c in chunks[: len(shards)])
    started = time.perf_counter()
    bar = tqdm(total=len(ok_rows), initial=skipped, desc="encode clips", unit="clip")
    with bar:
        for index in range(len(shards), len(chunks)):
            bar.set_postfix(shard=f"{index + 1}/{len(chunks)}")
            records = encode_records(backend, chunks[index], bar, manifest_path)
            table = latent_table(records, fmt)
            path = out_dir / names[index]
            write_shard(path, table, fmt, meta)
            entry = {"key": keys[index], "rows": table.num_rows, "sha256": file_sha256(path)}
            record["shards"][names[index]] = entry
            write_json(out_dir / PROGRESS, record)
            shards.append(entry | {"path": names[index]})
    seconds = time.perf_counter() - started

    text = encode_text_table(backend, [r["caption"] for r in ok_rows])
    write_parquet(out_dir / TEXT_FILE, text.replace_schema_metadata(meta), compression="zstd")

    new_clips = len(ok_rows) - skipped
    # the rate goes to the log (and Snakemake's benchmark file), not into the manifest: the
    # manifest is an artefact whose bytes two runs of one commit must share
    if new_clips and seconds:
        audio_s = sum(float(r["duration"]) for r in ok_rows[skipped:])
        print(
            f"encoded {new_clips} clips in {seconds:.2f} s ({new_clips / seconds:.2f} clips/s, "
            f"{audio_s / seconds:.2f} s of audio per s)"
        )
    summary = {
        "shards": [{k: s[k] for k in ("path", "rows", "sha256")} for s in shards],
        "text": {
            "path": TEXT_FILE,
            "rows": text.num_rows,
            "sha256": file_sha256(out_dir / TEXT_FILE),
        },
        "clips": len(ok_rows),
        "format": {"rows_per_shard": per_shard, **vars(fmt)},
        "encode": {"clips": new_clips, "resumed_clips": skipped},
        **backend.describe(),
        "provenance": provenance.provenance(stage_config),
    }
    info = backend.describe() | {
        "latent_offset": float(getattr(backend, "latent_offset", 0.0)),
        "config_hash": stage_hash,
    }
    write_card(out_dir, info, fmt, summary["shards"], text.num_rows)
    write_json(out_dir / MANIFEST, summary)
    return summary


def publish(work_dir: Path, out_dir: Path) -> None:
    """The finished store of work_dir, hard-linked (else copied) into out_dir, each file
    atomically and the store's manifest last, so that a store with a manifest is whole."""
    work_dir, out_dir = Path(work_dir), Path(out_dir)
    files = [p for p in work_dir.rglob("*") if p.is_file() and not p.name.startswith(".")]
    for src in sorted(files, key=lambda p: (p.name == MANIFEST, str(p))):
        link_or_copy(src, out_dir / src.relative_to(work_dir))


def load_latents(latents_dir, split: str | None = None) -> list[dict]:
    """All rows of the store as dicts with ``latent`` a float32 [C, T] array."""
    return load_store(latents_dir, split)


def load_text(latents_dir) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """caption_key -> (embedding [L, D], mask [L])."""
    table = TextTable(latents_dir)
    return {key: table.get(key) for key in table.keys}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--backend-json", required=True, help="the `backend` config section")
    parser.add_argument("--latents-json", required=True, help="the `latents` config section")
    parser.add_argument("--out-dir", type=Path, required=True)
    parser.add_argument(
        "--work-dir",
        type=Path,
        help="encode here, resumably, then publish the store into --out-dir (default: encode "
        "in --out-dir itself)",
    )
    parser.add_argument("--threads", type=int, default=1, help="CPU threads torch may use")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    work_dir = args.work_dir or args.out_dir
    summary = run(
        args.manifest, json.loads(args.backend_json), json.loads(args.latents_json), work_dir
    )
    if work_dir != args.out_dir:
        publish(work_dir, args.out_dir)
    print(
        f"latents: {summary['clips']} clips in {len(summary['shards'])} shards -> {args.out_dir}"
        f" ({summary['encode']['clips']} encoded now)"
    )
