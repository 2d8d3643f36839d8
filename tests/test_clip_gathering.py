"""The manifest job gathers every shard's clips into results/data/audio/<id>.wav (the path
the results layout fixes), checked against the sha256 each shard recorded, and names a damaged clip."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from eisbach.atomic import write_wav
from eisbach.data import MANIFEST_SCHEMA, merge_shards
from eisbach.integrity import IntegrityError
from eisbach.provenance import file_sha256

DATA = {"source": "demo"}
SR = 8000


def shard(tmp_path, k: int, ids: list[str]):
    folder = tmp_path / f"results/data/shards/audio-{k}"
    rows = []
    for i, cid in enumerate(ids):
        path = folder / f"{cid}.wav"
        write_wav(path, np.sin(np.arange(SR) * (i + 1) / 50).astype(np.float32), SR)
        rows.append({"id": cid, "status": "ok", "path": str(path), "sha256": file_sha256(path)})
    rows.append({"id": f"gone-{k}", "status": "failed", "path": None, "sha256": None})
    table = pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)
    out = tmp_path / f"results/data/shards/shard-{k}.parquet"
    pq.write_table(table, out)
    return out, folder


def test_clips_of_every_shard_are_gathered_into_one_folder(tmp_path):
    (s0, a0), (s1, a1) = shard(tmp_path, 0, ["a", "b"]), shard(tmp_path, 1, ["c"])
    audio = tmp_path / "results/data/audio"
    out = tmp_path / "results/data/manifest.parquet"
    table = merge_shards(DATA, SR, [s0, s1], out, audio, [a0, a1])
    rows = {r["id"]: r for r in table.to_pylist()}
    assert sorted(p.name for p in audio.iterdir()) == ["a.wav", "b.wav", "c.wav"]
    for cid in "abc":
        assert rows[cid]["path"] == str(audio / f"{cid}.wav")
        assert file_sha256(rows[cid]["path"]) == rows[cid]["sha256"]
    assert (audio / "c.wav").stat().st_ino == (a1 / "c.wav").stat().st_ino  # linked, not copied
    assert rows["gone-0"]["path"] is None and rows["gone-1"]["status"] == "failed"
    assert pq.read_table(out).to_pylist() == table.to_pylist()


def test_a_damaged_clip_is_named_and_no_manifest_is_written(tmp_path):
    s0, a0 = shard(tmp_path, 0, ["a", "b"])
    damaged = a0 / "b.wav"
    data = bytearray(damaged.read_bytes())
    data[-10] ^= 0xFF
    damaged.write_bytes(bytes(data))
    out = tmp_path / "results/data/manifest.parquet"
    with pytest.raises(IntegrityError, match=r"b\.wav.*shard-0\.parquet.*data_shard"):
        merge_shards(DATA, SR, [s0], out, tmp_path / "results/data/audio", [a0])
    assert not out.exists()


def test_shards_and_their_folders_must_pair(tmp_path):
    s0, a0 = shard(tmp_path, 0, ["a"])
    with pytest.raises(ValueError, match="1 shards but 0 shard audio folders"):
        merge_shards(DATA, SR, [s0], tmp_path / "m.parquet", tmp_path / "audio", [])
