"""The latent store as a standard Parquet dataset (issue 13, point 3): a glob over the folder
loads with ``datasets`` (one schema: the text table lives in text/), the latent comes back as a
nested [C, T] array, and the dataset card carries the latent rate, scale and offset."""

import datasets
import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import TINY_BACKEND
from test_latents_encode import LATENTS, write_manifest

from eisbach.backends import get_backend
from eisbach.latent_store import CARD, TEXT_FILE, StoreFormat, load_store, read_card, write_store
from eisbach.latents import run


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    """The latents stage tests' manifest: 9 clips (8 ok), captions repeated."""
    return write_manifest(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def encoded(manifest, tmp_path_factory):
    """What the latents stage writes for it (2 rows per shard): (folder, summary)."""
    out = tmp_path_factory.mktemp("latents") / "tiny"
    return out, run(manifest[0], BACKEND, LATENTS, out)


BACKEND = TINY_BACKEND


def test_the_folder_glob_loads_with_datasets_as_nested_latents(encoded):
    out, summary = encoded
    assert sorted(p.name for p in out.glob("*.parquet")) == [s["path"] for s in summary["shards"]]
    ds = datasets.load_dataset("parquet", data_files=str(out / "*.parquet"), split="train")
    assert ds.num_rows == summary["clips"] == 8
    feature = ds.features["latent"]
    inner = getattr(feature, "feature", None) or feature[0]  # Sequence or list, by version
    assert "float32" in repr(inner)
    ours = {r["id"]: r for r in load_store(out)}
    for row in ds:
        latent = np.asarray(row["latent"], np.float32)
        assert list(latent.shape) == row["latent_shape"] == list(ours[row["id"]]["latent"].shape)
        np.testing.assert_array_equal(latent, ours[row["id"]]["latent"])
        assert row["n_frames"] == latent.shape[1]


def test_the_card_holds_rate_scale_offset_and_the_configs(encoded):
    out, summary = encoded
    backend = get_backend("tiny", BACKEND, out)
    card = read_card(out)
    info = card["eisbach"]
    assert info["latent_rate"] == pytest.approx(backend.latent_rate)
    assert info["latent_scale"] == BACKEND["tiny"]["latent_scale"]
    assert info["latent_offset"] == BACKEND["tiny"]["latent_offset"]
    assert info["latent_channels"] == BACKEND["tiny"]["n_mels"]
    assert (info["backend"], info["clips"], info["shards"]) == ("tiny", 8, 4)
    assert (info["latent_dtype"], info["latent_column"]) == ("float32", "list")
    names = {c["config_name"]: c["data_files"] for c in card["configs"]}
    assert names == {"latents": "part-*.parquet", "text": "text/*.parquet"}

    # datasets reads the card's configs when given the folder itself
    rows = datasets.load_dataset(str(out), "latents", split="train")
    assert rows.num_rows == 8
    text = datasets.load_dataset(str(out), "text", split="train")
    assert text.num_rows == summary["text"]["rows"] == 3
    assert set(text["caption_key"]) == set(rows["caption_key"])
    assert (out / TEXT_FILE).is_file() and (out / CARD).read_text().startswith("---\n")


def test_the_latent_decodes_to_the_backends_log_mel_with_the_cards_values(encoded, manifest):
    import soundfile as sf
    import torch

    out, _ = encoded
    info = read_card(out)["eisbach"]
    backend = get_backend("tiny", BACKEND, out)
    clip = next(r for r in manifest[1] if r["status"] == "ok")
    ds = datasets.load_dataset("parquet", data_files=str(out / "*.parquet"), split="train")
    row = next(r for r in ds if r["id"] == clip["id"])
    audio, _ = sf.read(clip["path"], dtype="float32")
    log_mel = np.asarray(row["latent"], np.float32) * info["latent_scale"] + info["latent_offset"]
    mel = backend._mel_transform()(torch.from_numpy(audio))
    expected = torch.log(mel.clamp(min=1e-5)).numpy()  # what the tiny backend encodes
    np.testing.assert_allclose(log_mel, expected[:, : log_mel.shape[1]], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("column", ["list", "binary"])
def test_write_store_leaves_the_same_layout(tmp_path, column):
    rng = np.random.default_rng(0)
    records = [
        {
            "id": f"r{i}",
            "split": "train",
            "latent": rng.standard_normal((3, 5 + i)).astype(np.float32),
            "caption": "x",
            "seconds_start": 0.0,
            "seconds_total": 1.0,
            "audio_sha256": "0" * 64,
        }
        for i in range(5)
    ]
    meta = {b"eisbach.latent_rate": b"62.5", b"eisbach.backend": b"fake"}
    write_store(tmp_path, records, StoreFormat(column=column), rows_per_shard=2, metadata=meta)
    info = read_card(tmp_path)["eisbach"]
    assert (info["latent_rate"], info["backend"], info["latent_column"]) == (62.5, "fake", column)
    schema = pq.read_schema(tmp_path / "part-00000.parquet")
    assert str(schema.field("latent").type) == (
        "list<element: list<element: float>>" if column == "list" else "binary"
    )
    for row, rec in zip(load_store(tmp_path), records, strict=True):
        np.testing.assert_array_equal(row["latent"], rec["latent"])


def test_a_store_of_the_flat_layout_still_reads(tmp_path):
    """Stores written before the nested layout held the latent as one flat list."""
    import pyarrow as pa

    latent = np.arange(12, dtype=np.float32).reshape(3, 4)
    table = pa.table(
        {
            "id": ["a"],
            "split": ["train"],
            "latent": pa.array([latent.reshape(-1)], pa.list_(pa.float32())),
            "latent_shape": pa.array([[3, 4]], pa.list_(pa.int32())),
            "n_frames": pa.array([4], pa.int32()),
            "caption": ["x"],
            "caption_key": ["k"],
            "seconds_start": [0.0],
            "seconds_total": [1.0],
            "audio_sha256": ["0" * 64],
        }
    )
    pq.write_table(table, tmp_path / "old.parquet")
    from eisbach.latent_store import read_rows

    np.testing.assert_array_equal(read_rows(tmp_path / "old.parquet")[0]["latent"], latent)


def test_a_rerun_removes_the_old_top_level_text_table(manifest, tmp_path):
    out = tmp_path / "tiny"
    out.mkdir()
    pq.write_table(pq.read_table(manifest[0]), out / "text.parquet")  # the old layout's place
    run(manifest[0], BACKEND, LATENTS, out)
    assert not (out / "text.parquet").exists() and (out / TEXT_FILE).is_file()
