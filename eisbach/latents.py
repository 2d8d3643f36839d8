"""Latents stage: pre-encode every valid clip to sharded Parquet, and each caption once.

Layout under results/latents/<backend>/:
  part-00000.parquet ...   one row per clip (latent, shape, n_frames, caption, sha256, ...)
  text.parquet             text conditioning, one row per distinct caption (keyed by its sha256)
  latents_manifest.json    the shards with their row counts and sha256, and provenance
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import soundfile as sf
from tqdm import tqdm

from eisbach import provenance
from eisbach.atomic import write_json, write_parquet
from eisbach.backends import get_backend
from eisbach.data import file_sha256

LATENT_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("split", pa.string()),
        ("latent", pa.list_(pa.float32())),
        ("latent_shape", pa.list_(pa.int32())),
        ("n_frames", pa.int32()),
        ("caption", pa.string()),
        ("caption_key", pa.string()),
        ("seconds_start", pa.float64()),
        ("seconds_total", pa.float64()),
        ("audio_sha256", pa.string()),
    ]
)

TEXT_SCHEMA = pa.schema(
    [
        ("caption_key", pa.string()),
        ("caption", pa.string()),
        ("embedding", pa.list_(pa.float32())),
        ("embedding_shape", pa.list_(pa.int32())),
        ("mask", pa.list_(pa.bool_())),
    ]
)


def caption_key(caption: str) -> str:
    return hashlib.sha256(caption.encode()).hexdigest()


def load_clip(path: str, expected_sha256: str, sample_rate: int) -> np.ndarray:
    if file_sha256(path) != expected_sha256:
        raise ValueError(f"{path}: sha256 differs from the manifest; rerun the data stage")
    audio, rate = sf.read(path, dtype="float32", always_2d=True)
    if rate != sample_rate:
        raise ValueError(f"{path}: {rate} Hz, the backend expects {sample_rate} Hz")
    return audio.mean(axis=1)


def encode_shard(backend, rows: list[dict]) -> pa.Table:
    records = []
    for row in rows:
        audio = load_clip(row["path"], row["sha256"], backend.sample_rate)
        latent = backend.encode_audio(audio, backend.sample_rate)
        records.append(
            {
                "id": row["id"],
                "split": row["split"],
                "latent": latent.reshape(-1),
                "latent_shape": list(latent.shape),
                "n_frames": latent.shape[-1],
                "caption": row["caption"],
                "caption_key": caption_key(row["caption"]),
                "seconds_start": float(row["start_s"]),
                "seconds_total": float(row["duration"]),
                "audio_sha256": row["sha256"],
            }
        )
    return pa.Table.from_pylist(records, schema=LATENT_SCHEMA)


def encode_text_table(backend, captions: list[str]) -> pa.Table:
    unique = sorted(set(captions))
    embeddings, masks = backend.encode_text(unique)
    return pa.Table.from_pylist(
        [
            {
                "caption_key": caption_key(c),
                "caption": c,
                "embedding": e.reshape(-1),
                "embedding_shape": list(e.shape),
                "mask": m.tolist(),
            }
            for c, e, m in zip(unique, embeddings, masks, strict=True)
        ],
        schema=TEXT_SCHEMA,
    )


def run(manifest_path: Path, backend_config: dict, latents_config: dict, out_dir: Path) -> dict:
    manifest = pq.read_table(manifest_path).to_pylist()
    ok_rows = [r for r in manifest if r["status"] == "ok"]
    if not ok_rows:
        raise ValueError(f"{manifest_path}: no clip has status ok; nothing to encode")
    backend = get_backend(backend_config["name"], backend_config, out_dir)
    stage_config = {"backend": backend_config, "latents": latents_config}
    meta = provenance.parquet_metadata(stage_config, stage="latents", **backend.describe())

    if hasattr(backend, "build_text_encoder"):
        backend.build_text_encoder([r["caption"] for r in ok_rows if r["split"] == "train"])

    per_shard = int(latents_config["rows_per_shard"])
    shards = []
    chunks = [ok_rows[i : i + per_shard] for i in range(0, len(ok_rows), per_shard)]
    for index, chunk in enumerate(tqdm(chunks, desc="encode shards", unit="shard")):
        path = out_dir / f"part-{index:05d}.parquet"
        table = encode_shard(backend, chunk).replace_schema_metadata(meta)
        write_parquet(path, table, compression="zstd")
        shards.append({"path": path.name, "rows": table.num_rows, "sha256": file_sha256(path)})

    text = encode_text_table(backend, [r["caption"] for r in ok_rows])
    write_parquet(out_dir / "text.parquet", text.replace_schema_metadata(meta), compression="zstd")

    summary = {
        "shards": shards,
        "text": {"path": "text.parquet", "rows": text.num_rows},
        "clips": len(ok_rows),
        **backend.describe(),
        "provenance": provenance.provenance(stage_config),
    }
    write_json(out_dir / "latents_manifest.json", summary)
    return summary


def load_latents(latents_dir, split: str | None = None) -> list[dict]:
    """All rows of the store as dicts with ``latent`` reshaped to [C, T]."""
    latents_dir = Path(latents_dir)
    summary = json.loads((latents_dir / "latents_manifest.json").read_text())
    rows = []
    for shard in summary["shards"]:
        for row in pq.read_table(latents_dir / shard["path"]).to_pylist():
            if split is None or row["split"] == split:
                row["latent"] = np.asarray(row["latent"], np.float32).reshape(row["latent_shape"])
                rows.append(row)
    return rows


def load_text(latents_dir) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """caption_key -> (embedding [L, D], mask [L])."""
    table = pq.read_table(Path(latents_dir) / "text.parquet").to_pylist()
    return {
        r["caption_key"]: (
            np.asarray(r["embedding"], np.float32).reshape(r["embedding_shape"]),
            np.asarray(r["mask"], bool),
        )
        for r in table
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--backend-json", required=True, help="the `backend` config section")
    parser.add_argument("--latents-json", required=True, help="the `latents` config section")
    parser.add_argument("--out-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    summary = run(
        args.manifest, json.loads(args.backend_json), json.loads(args.latents_json), args.out_dir
    )
    print(f"latents: {summary['clips']} clips in {len(summary['shards'])} shards -> {args.out_dir}")
