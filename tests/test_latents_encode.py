"""The latents stage on the tiny backend: the store's contract, and resume after kill -9."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from conftest import TINY_BACKEND

from eisbach.data import file_sha256
from eisbach.latents import PROGRESS, caption_key, load_latents, load_text, run
from eisbach.provenance import read_parquet_metadata

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKEND = TINY_BACKEND
LATENTS = {"rows_per_shard": 2, "row_group_rows": 1, "compression": "zstd", "dtype": "float32"}
CAPTIONS = ["a low organ drone", "a bright piano melody then strings", "a static marimba"]


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return write_manifest(tmp_path_factory.mktemp("data"))


def write_manifest(root):
    """9 clips of 0.3-0.7 s (8 ok, 1 quarantined), captions repeated: (path, rows)."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(9):
        n = 4800 + 800 * i
        audio = 0.3 * np.sin(2 * np.pi * (200 + 40 * i) * np.arange(n) / 16000)
        audio += 0.01 * rng.standard_normal(n)
        path = root / f"c{i}.wav"
        sf.write(path, audio.astype(np.float32), 16000)
        rows.append(
            {
                "id": f"c{i}",
                "split": "eval" if i in (2, 6) else "train",
                "status": "silent" if i == 4 else "ok",
                "path": str(path),
                "sha256": file_sha256(path),
                "caption": CAPTIONS[i % 3],
                "start_s": 30.0 + i,
                "duration": n / 16000,
            }
        )
    path = root / "manifest.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path, rows


@pytest.fixture(scope="module")
def encoded(manifest, tmp_path_factory):
    out = tmp_path_factory.mktemp("latents") / "tiny"
    return out, run(manifest[0], BACKEND, LATENTS, out)


def test_store_contract(manifest, encoded):
    import datasets

    from eisbach.backends import get_backend

    out, summary = encoded
    ok = [r for r in manifest[1] if r["status"] == "ok"]
    assert summary["clips"] == 8 and [s["rows"] for s in summary["shards"]] == [2, 2, 2, 2]
    for shard in summary["shards"]:
        assert file_sha256(out / shard["path"]) == shard["sha256"]
        assert pq.ParquetFile(out / shard["path"]).metadata.num_row_groups == 2
    assert summary["text"]["sha256"] == file_sha256(out / "text" / "text.parquet")
    # no wall-clock time in an artefact (issue 24): two runs of one commit write the same bytes
    assert summary["encode"] == {"clips": 8, "resumed_clips": 0}
    meta = read_parquet_metadata(out / summary["shards"][0]["path"])
    for key in ("backend", "backend_version", "latent_rate", "latent_scale", "config_hash"):
        assert key in meta, key
    assert {"packages", "git_commit"} <= set(meta) and meta["latent_dtype"] == "float32"

    rows = load_latents(out)
    assert [r["id"] for r in rows] == [r["id"] for r in ok]
    backend = get_backend("tiny", BACKEND, out)
    for row, clip in zip(rows, ok):
        audio, _ = sf.read(clip["path"], dtype="float32")
        np.testing.assert_array_equal(row["latent"], backend.encode_audio(audio, 16000))
        assert row["n_frames"] == row["latent_shape"][1] == row["latent"].shape[1]
        assert row["seconds_start"] == clip["start_s"] and row["audio_sha256"] == clip["sha256"]
    assert {r["id"] for r in load_latents(out, "eval")} == {"c2", "c6"}

    text = load_text(out)
    assert set(text) == {caption_key(c) for c in CAPTIONS}  # each caption once
    embeddings, _ = backend.encode_text(CAPTIONS)
    np.testing.assert_array_equal(text[caption_key(CAPTIONS[1])][0], embeddings[1])

    files = [str(out / s["path"]) for s in summary["shards"]]
    ds = datasets.load_dataset("parquet", data_files=files, split="train")
    assert ds.num_rows == 8 and np.shape(ds[0]["latent"]) == (16, ds[0]["n_frames"])


def store_content(out):
    """Everything in a store, read back as values."""
    summary = json.loads((out / "latents_manifest.json").read_text())
    tables = [pq.read_table(out / s["path"]) for s in summary["shards"]]
    metas = [read_parquet_metadata(out / s["path"]) for s in summary["shards"]]
    return (
        [t.replace_schema_metadata(None).to_pylist() for t in tables],
        metas,
        [(s["path"], s["rows"]) for s in summary["shards"]],
        pq.read_table(out / "text" / "text.parquet").replace_schema_metadata(None).to_pylist(),
    )


SLOW_ENCODE = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    import eisbach.latents as latents
    from eisbach.backends.tiny import TinyBackend

    encode = latents.encode_records

    def slow(*args, **kwargs):
        time.sleep(1.0)
        return encode(*args, **kwargs)

    latents.encode_records = slow
    # Killed long before the captions are encoded: skip importing the text encoder (~10 s).
    TinyBackend.build_text_encoder = lambda self, captions: None
    manifest, backend, config, out = sys.argv[1:]
    latents.run(Path(manifest), json.loads(backend), json.loads(config), Path(out))
    """
)


def test_killed_encode_resumes_at_first_unfinished_shard(manifest, encoded, tmp_path):
    out = tmp_path / "tiny"
    progress = out / PROGRESS
    argv = [sys.executable, "-c", SLOW_ENCODE, str(manifest[0])]
    argv += [json.dumps(BACKEND), json.dumps(LATENTS), str(out)]
    env = dict(os.environ, PYTHONPATH=REPO)
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and proc.poll() is None:
            if progress.exists() and len(json.loads(progress.read_text())["shards"]) >= 2:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    done = json.loads(progress.read_text())["shards"]
    assert 2 <= len(done) < 4 and not (out / "latents_manifest.json").exists()
    # a write that a kill left behind, and a finished shard that no longer matches its checksum:
    # the rerun keeps part-00000 and encodes again from part-00001
    (out / ".part-00003.parquet.abc123.parquet.tmp").write_bytes(b"partial")
    (out / "part-00001.parquet").write_bytes(b"damaged")
    kept = {"part-00000.parquet": (out / "part-00000.parquet").stat()}

    summary = run(manifest[0], BACKEND, LATENTS, out)
    assert summary["encode"]["resumed_clips"] == 2 * len(kept)
    for name, before in kept.items():
        after = (out / name).stat()
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns), name
    assert not list(out.glob(".part-*"))
    assert store_content(out) == store_content(encoded[0])

    # a finished store reruns without encoding anything; a new config encodes again
    again = run(manifest[0], BACKEND, LATENTS, out)
    assert again["encode"]["clips"] == 0 and again["encode"]["resumed_clips"] == 8
    changed = run(manifest[0], BACKEND, LATENTS | {"rows_per_shard": 3}, out)
    assert changed["encode"]["resumed_clips"] == 0
    assert sorted(p.name for p in out.glob("part-*.parquet")) == [
        "part-00000.parquet",
        "part-00001.parquet",
        "part-00002.parquet",
    ]
