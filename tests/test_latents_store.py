"""The latent store's formats and its streaming loader, on synthetic stores (no backend)."""

import json
from collections import Counter

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from eisbach.latent_store import (
    LatentStream,
    StoreFormat,
    TextTable,
    caption_key,
    load_store,
    make_loader,
    text_table,
    write_store,
)
from eisbach.provenance import read_parquet_metadata

CAPTIONS = ["a low organ drone", "a bright piano melody", "fast drums", "strings swell"]
C = 4


def records(n=23, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        frames = int(rng.integers(5, 13))  # clips of different lengths
        out.append(
            {
                "id": f"clip{i:03d}",
                "split": "eval" if i % 5 == 0 else "train",
                "latent": rng.standard_normal((C, frames)).astype(np.float32),
                "caption": CAPTIONS[i % len(CAPTIONS)],
                "seconds_start": float(i),
                "seconds_total": 10.0 + i,
                "audio_sha256": f"{i:064x}",
            }
        )
    return out


def text():
    rng = np.random.default_rng(1)
    keyed = [(caption_key(c), c) for c in CAPTIONS]
    embeddings = rng.standard_normal((len(CAPTIONS), 3, 2)).astype(np.float32)
    masks = np.array([[True, True, False]] * len(CAPTIONS))
    return text_table(keyed, embeddings, masks)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("store")
    recs = records()
    write_store(path, recs, StoreFormat(row_group_rows=3), rows_per_shard=7, text=text())
    return path, {r["id"]: r for r in recs}


FORMATS = [
    StoreFormat(dtype="float32", compression="zstd", column="list"),
    StoreFormat(dtype="float16", compression="none", column="list"),
    StoreFormat(dtype="float32", compression="none", column="binary"),
    StoreFormat(dtype="float16", compression="zstd", column="binary"),
]


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f"{f.column}-{f.dtype}-{f.compression}")
def test_formats_round_trip_and_load_with_datasets(tmp_path, fmt):
    import datasets

    recs = records(9)
    meta = {b"eisbach.backend": b"fake"}
    summary = write_store(tmp_path, recs, fmt, rows_per_shard=4, metadata=meta)
    assert [s["rows"] for s in summary["shards"]] == [4, 4, 1]
    tol = 0 if fmt.dtype == "float32" else 2e-3
    loaded = load_store(tmp_path)
    assert [r["id"] for r in loaded] == [r["id"] for r in recs]
    for row, rec in zip(loaded, recs):
        assert row["latent"].dtype == np.float32
        np.testing.assert_allclose(row["latent"], rec["latent"], atol=tol, rtol=tol)
        assert row["latent_shape"] == list(rec["latent"].shape)
        assert row["n_frames"] == rec["latent"].shape[1]
        assert row["caption_key"] == caption_key(rec["caption"])
    assert [r["id"] for r in load_store(tmp_path, "eval")] == ["clip000", "clip005"]

    meta = read_parquet_metadata(tmp_path / "part-00000.parquet")
    assert meta["backend"] == "fake"
    assert (meta["latent_dtype"], meta["latent_column"]) == (fmt.dtype, fmt.column)
    column = pq.ParquetFile(tmp_path / "part-00000.parquet").metadata.row_group(0).column(2)
    assert column.compression == ("ZSTD" if fmt.compression == "zstd" else "UNCOMPRESSED")

    files = [str(tmp_path / s["path"]) for s in summary["shards"]]
    ds = datasets.load_dataset("parquet", data_files=files, split="train")
    assert ds.num_rows == 9
    row = ds[3]
    shape = row["latent_shape"]
    if fmt.column == "list":
        values = np.asarray(row["latent"], np.float32)
    else:
        values = np.frombuffer(row["latent"], fmt.dtype).astype(np.float32)
    np.testing.assert_allclose(values.reshape(shape), recs[3]["latent"], atol=tol, rtol=tol)


def test_bad_format_is_named():
    with pytest.raises(ValueError, match="latents.compression"):
        StoreFormat(compression="gzip")
    with pytest.raises(ValueError, match="latents.column"):
        StoreFormat.from_config({"rows_per_shard": 3, "column": "tensor"})


def collect(loader):
    return [
        (b.ids, b.latents.clone(), b.mask.clone(), b.caption_keys, b.seconds_start.clone())
        for b in loader
    ]


def check_batch(ids, latents, mask, by_id):
    frames = [by_id[i]["latent"].shape[1] for i in ids]
    assert latents.dtype == torch.float32 and latents.shape == (len(ids), C, max(frames))
    assert mask.dtype == torch.bool and mask.shape == (len(ids), max(frames))
    for b, (sample_id, n) in enumerate(zip(ids, frames)):
        assert torch.equal(latents[b, :, :n], torch.from_numpy(by_id[sample_id]["latent"]))
        assert not latents[b, :, n:].any()
        assert mask[b, :n].all() and not mask[b, n:].any()


@pytest.mark.parametrize("workers", [0, 2])
def test_stream_is_one_padded_shuffled_epoch_and_deterministic(store, workers):
    path, by_id = store
    train = {i for i, r in by_id.items() if r["split"] == "train"}

    def loader(seed):
        stream = LatentStream(path, batch_size=4, split="train", seed=seed, shuffle_row_groups=2)
        return make_loader(stream, num_workers=workers)

    first = collect(loader(0))
    seen = [i for ids, *_ in first for i in ids]
    assert Counter(seen) == Counter(train), "not every training clip exactly once"
    for ids, latents, mask, keys, start in first:
        check_batch(ids, latents, mask, by_id)
        assert keys == [caption_key(by_id[i]["caption"]) for i in ids]
        assert start.tolist() == [by_id[i]["seconds_start"] for i in ids]
    assert seen != sorted(seen), "the stream is not shuffled"
    again = collect(loader(0))
    assert [b[0] for b in again] == [b[0] for b in first]
    assert all(torch.equal(a[1], b[1]) for a, b in zip(first, again))
    other = [i for ids, *_ in collect(loader(1)) for i in ids]
    assert other != seen and sorted(other) == sorted(seen)


def test_ranks_partition_the_data(store):
    path, by_id = store
    seen = []
    for rank in range(2):
        stream = LatentStream(
            path, batch_size=3, split=None, seed=5, rank=rank, world_size=2, drop_last=False
        )
        seen.append([i for ids, *_ in collect(make_loader(stream)) for i in ids])
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == sorted(by_id)


@pytest.mark.parametrize("workers", [0, 2])
def test_endless_stream_resumes_at_a_batch(store, workers):
    path, _ = store

    def ids(start_batch, n):
        stream = LatentStream(path, batch_size=3, seed=2, epochs=None, start_batch=start_batch)
        out = []
        for batch in make_loader(stream, num_workers=workers):
            assert len(batch.ids) == 3  # endless streams never yield a short batch
            out.append(batch.ids)
            if len(out) == n:
                return out

    unbroken = ids(0, 14)  # 18 training clips: 14 batches run into a third epoch
    assert ids(5, 9) == unbroken[5:]


def test_endless_stream_draws_every_clip_once_per_epoch(store):
    """A shuffle pool that could hold several epochs of a small store still drains each epoch
    before the next one comes in."""
    path, by_id = store
    train = sorted(i for i, r in by_id.items() if r["split"] == "train")
    stream = LatentStream(path, batch_size=3, seed=4, epochs=None, shuffle_row_groups=64)
    loader = iter(make_loader(stream))
    seen = [i for _ in range(3 * len(train) // 3) for i in next(loader).ids]
    for epoch in range(3):
        assert sorted(seen[epoch * len(train) : (epoch + 1) * len(train)]) == train
    assert seen[: len(train)] != seen[len(train) : 2 * len(train)]


def test_a_rank_without_row_groups_is_refused(store):
    path, _ = store
    groups = len(LatentStream(path, batch_size=1, split="train").units)
    with pytest.raises(ValueError, match=f"cannot feed rank {groups} of {groups + 1}"):
        LatentStream(path, batch_size=1, split="train", rank=groups, world_size=groups + 1)


def test_text_conditioning_and_float16_batches(store):
    path, by_id = store
    table = TextTable(path)
    assert len(table) == len(CAPTIONS)
    stream = LatentStream(path, batch_size=5, split="eval", dtype=torch.float16, shuffle=False)
    (batch,) = list(make_loader(stream, with_text=True))
    assert batch.ids == ["clip000", "clip005", "clip010", "clip015", "clip020"]
    assert batch.latents.dtype == torch.float16
    for b, sample_id in enumerate(batch.ids):
        embedding, mask = table.get(caption_key(by_id[sample_id]["caption"]))
        assert torch.equal(batch.cond[b], torch.from_numpy(embedding))
        assert torch.equal(batch.cond_mask[b], torch.from_numpy(mask))
    assert batch.cond.shape == (5, 3, 2) and batch.cond_mask.shape == (5, 3)


def test_manifest_lists_checksums(store):
    from eisbach.data import file_sha256

    path, _ = store
    summary = json.loads((path / "latents_manifest.json").read_text())
    assert len(summary["shards"]) == 4
    for shard in summary["shards"]:
        assert file_sha256(path / shard["path"]) == shard["sha256"]
        assert pq.ParquetFile(path / shard["path"]).metadata.num_row_groups == -(
            -shard["rows"] // 3
        )


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # stable_audio_tools' regex strings
def test_benchmark_runs(tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "latent_loader.py"
    spec = importlib.util.spec_from_file_location("latent_loader_bench", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    argv = ["--n", "40", "--channels", "4", "--frames", "8", "--batch-size", "8"]
    argv += ["--workers", "0", "--repeats", "1", "--rows-per-shard", "20", "--row-group-rows", "10"]
    argv += ["--stores", "list-zstd,binary-none", "--json", str(tmp_path / "out.json")]
    results = bench.main(argv)
    layouts = {r["layout"]: r for r in results["runs"]}
    assert set(layouts) == {"sat", "list-zstd", "binary-none"}
    # 2 shards, the manifest and the dataset card
    assert layouts["sat"]["files"] == 80 and layouts["list-zstd"]["files"] == 4
    assert all(r["samples_per_s"] > 0 for r in results["runs"])
    assert "ratio" in capsys.readouterr().out
