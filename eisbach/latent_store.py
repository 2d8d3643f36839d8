"""The latent store: sharded Parquet, written atomically, read whole or streamed to training.

A store is a folder (results/latents/<backend>/) holding:

  part-NNNNN.parquet       one row per clip; row groups of ``row_group_rows`` rows
  text/text.parquet        text conditioning, one row per distinct caption, keyed by its sha256;
                           in a folder of its own, so that ``part-*.parquet`` / ``*.parquet``
                           globs see the latent rows only (one schema)
  latents_manifest.json    the shards and text table with their row counts and sha256, the
                           format, provenance (readers verify every file against it)
  README.md                a Hugging Face dataset card: YAML front matter with the ``datasets``
                           configs (latents, text) and the latent rate, scale and offset

Row columns: id, split, latent (the [C, T] latent), latent_shape ([C, T]), n_frames (the valid
frames, <= T), caption, caption_key (sha256 of the caption; the key of the text table),
seconds_start, seconds_total, audio_sha256. Each file's schema metadata holds ``eisbach.*`` keys:
backend, backend_version, latent_rate, latent_scale, config_hash, packages, git_commit, and the
store format (latent_dtype, latent_column, latent_compression).

The ``latent`` column is either ``list<list<float32|float16>>`` (``column: list``; the nested
[C, T] array that ``datasets.load_dataset("parquet", ...)`` gives as C lists of T numbers) or
``binary`` holding the raw little-endian values (``column: binary``; decoded with
``np.frombuffer(row["latent"], dtype).reshape(row["latent_shape"])``, the dtype is in the
field's and the file's metadata and in the card). Both are decoded here a record batch at a time
(offsets + one flat buffer), with no Python per row; binary decodes faster because Parquet stores
no repetition/definition levels for it (see benchmarks/latent_loader.py). Stores written before
the nested layout (a flat ``list<float>``) are still read.

Readers: ``load_store`` / ``read_rows`` (everything in memory), ``TextTable`` (conditioning by
caption key) and ``LatentStream`` + ``make_loader`` (a seeded, sharded, shuffled stream of padded
batches through torch DataLoader workers).
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from itertools import count
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from eisbach.integrity import verify_file

MANIFEST = "latents_manifest.json"
TEXT_FILE = "text/text.parquet"
CARD = "README.md"
SHARD_GLOB = "part-*.parquet"
DTYPES = {"float32": np.float32, "float16": np.float16}
ARROW_DTYPES = {"float32": pa.float32(), "float16": pa.float16()}
COLUMNS = ("list", "binary")
COMPRESSIONS = ("zstd", "none")
# Parquet leaf columns other than the latent: small, so always zstd.
SMALL_COLUMNS = (
    "id",
    "split",
    "latent_shape.list.element",
    "n_frames",
    "caption",
    "caption_key",
    "seconds_start",
    "seconds_total",
    "audio_sha256",
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
if sys.byteorder != "little":  # pragma: no cover - the binary column is little-endian
    raise ImportError("eisbach.latent_store assumes a little-endian machine")


def caption_key(caption: str) -> str:
    """The key of a caption's row in text.parquet: the sha256 of its UTF-8 bytes."""
    return hashlib.sha256(caption.encode()).hexdigest()


@dataclass(frozen=True)
class StoreFormat:
    """How latents are laid out on disk; the ``latents`` config section minus rows_per_shard."""

    dtype: str = "float32"  # float32 | float16
    compression: str = "zstd"  # zstd | none, for the latent column
    column: str = "list"  # list | binary
    row_group_rows: int = 64

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise ValueError(f"latents.dtype: {self.dtype!r} is not one of {sorted(DTYPES)}")
        if self.compression not in COMPRESSIONS:
            raise ValueError(f"latents.compression: {self.compression!r} not in {COMPRESSIONS}")
        if self.column not in COLUMNS:
            raise ValueError(f"latents.column: {self.column!r} is not one of {COLUMNS}")
        if int(self.row_group_rows) < 1:
            raise ValueError("latents.row_group_rows must be at least 1")

    @classmethod
    def from_config(cls, latents_config: dict) -> StoreFormat:
        names = ("dtype", "compression", "column", "row_group_rows")
        return cls(**{k: latents_config[k] for k in names if k in latents_config})

    def latent_field(self) -> pa.Field:
        if self.column == "list":
            return pa.field("latent", pa.list_(pa.list_(ARROW_DTYPES[self.dtype])))
        return pa.field("latent", pa.binary(), metadata={"dtype": self.dtype})

    def schema(self) -> pa.Schema:
        return pa.schema(
            [
                ("id", pa.string()),
                ("split", pa.string()),
                self.latent_field(),
                ("latent_shape", pa.list_(pa.int32())),
                ("n_frames", pa.int32()),
                ("caption", pa.string()),
                ("caption_key", pa.string()),
                ("seconds_start", pa.float64()),
                ("seconds_total", pa.float64()),
                ("audio_sha256", pa.string()),
            ]
        )

    def latent_path(self) -> str:
        """The Parquet column path of the latent values."""
        return "latent.list.element.list.element" if self.column == "list" else "latent"

    def write_options(self) -> dict:
        """pq.write_table options: zstd on small columns; the latent plain, unless compressed."""
        latent = self.latent_path()
        compression = {name: "zstd" for name in SMALL_COLUMNS} | {latent: self.compression}
        options = {
            "compression": compression,
            # Dictionaries and min/max statistics are useless on float noise and slow the writer.
            "use_dictionary": ["id", "split", "caption", "caption_key", "audio_sha256"],
            "write_statistics": ["id", "split", "n_frames", "seconds_start", "seconds_total"],
            "row_group_size": int(self.row_group_rows),
        }
        if self.compression == "zstd" and self.column == "list":
            # Byte-stream split groups the exponent bytes, which is what zstd can compress
            # (Parquet allows it on float columns, not on binary ones).
            options["use_byte_stream_split"] = [latent]
        return options

    def metadata(self) -> dict[bytes, bytes]:
        return {
            b"eisbach.latent_dtype": self.dtype.encode(),
            b"eisbach.latent_column": self.column.encode(),
            b"eisbach.latent_compression": self.compression.encode(),
        }


# --- writing ------------------------------------------------------------------------------------
def latent_array(latents: list[np.ndarray], fmt: StoreFormat) -> pa.Array:
    """The ``latent`` column for a list of [C, T] arrays, built from one flat buffer."""
    dtype = DTYPES[fmt.dtype]
    sizes = np.array([a.size for a in latents], np.int64)
    offsets = np.zeros(len(latents) + 1, np.int64)
    np.cumsum(sizes, out=offsets[1:])
    flat = np.empty(int(offsets[-1]), dtype)
    for a, start, stop in zip(latents, offsets[:-1], offsets[1:], strict=True):
        flat[start:stop] = a.reshape(-1)
    if fmt.dtype == "float16" and not np.isfinite(flat).all():
        raise ValueError("latents overflow float16 (or are not finite); use latents.dtype: float32")
    if flat.size * flat.itemsize >= 2**31:
        raise ValueError("a shard's latents exceed 2 GiB; lower latents.rows_per_shard")
    if fmt.column == "list":
        # [C, T] as C lists of T values: row offsets count channels, channel offsets values.
        channels = np.array([a.shape[0] for a in latents], np.int64)
        frames = np.repeat(np.array([a.shape[1] for a in latents], np.int64), channels)
        row_offsets = np.zeros(len(latents) + 1, np.int64)
        np.cumsum(channels, out=row_offsets[1:])
        channel_offsets = np.zeros(len(frames) + 1, np.int64)
        np.cumsum(frames, out=channel_offsets[1:])
        rows = pa.ListArray.from_arrays(pa.array(channel_offsets.astype(np.int32)), pa.array(flat))
        return pa.ListArray.from_arrays(pa.array(row_offsets.astype(np.int32)), rows)
    byte_offsets = (offsets * flat.itemsize).astype(np.int32)
    return pa.Array.from_buffers(
        pa.binary(), len(latents), [None, pa.py_buffer(byte_offsets), pa.py_buffer(flat)]
    )


def latent_table(records: list[dict], fmt: StoreFormat) -> pa.Table:
    """A shard's table. Each record: id, split, latent [C, T], caption, seconds_start,
    seconds_total, audio_sha256, and optionally n_frames (default T) and caption_key."""
    latents = [np.asarray(r["latent"]) for r in records]
    for r, a in zip(records, latents, strict=True):
        if a.ndim != 2:
            raise ValueError(f"{r['id']}: latent must be [C, T], got shape {a.shape}")
        if not 0 < int(r.get("n_frames", a.shape[1])) <= a.shape[1]:
            raise ValueError(f"{r['id']}: n_frames must be in 1..{a.shape[1]}")
    columns = {
        "id": pa.array([r["id"] for r in records], pa.string()),
        "split": pa.array([r["split"] for r in records], pa.string()),
        "latent": latent_array(latents, fmt),
        "latent_shape": pa.array([list(a.shape) for a in latents], pa.list_(pa.int32())),
        "n_frames": pa.array(
            [int(r.get("n_frames", a.shape[1])) for r, a in zip(records, latents, strict=True)],
            pa.int32(),
        ),
        "caption": pa.array([r["caption"] for r in records], pa.string()),
        "caption_key": pa.array(
            [r.get("caption_key") or caption_key(r["caption"]) for r in records], pa.string()
        ),
        "seconds_start": pa.array([float(r["seconds_start"]) for r in records], pa.float64()),
        "seconds_total": pa.array([float(r["seconds_total"]) for r in records], pa.float64()),
        "audio_sha256": pa.array([r["audio_sha256"] for r in records], pa.string()),
    }
    return pa.Table.from_pydict(columns, schema=fmt.schema())


def write_shard(path, table: pa.Table, fmt: StoreFormat, metadata: dict | None = None) -> None:
    """Writes one shard atomically (temporary sibling, then rename)."""
    from eisbach.atomic import write_parquet

    meta = dict(metadata or {}) | fmt.metadata()
    write_parquet(path, table.replace_schema_metadata(meta), **fmt.write_options())


def text_table(keys_captions: list[tuple[str, str]], embeddings, masks) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {
                "caption_key": key,
                "caption": caption,
                "embedding": np.asarray(e, np.float32).reshape(-1),
                "embedding_shape": list(np.shape(e)),
                "mask": np.asarray(m, bool).tolist(),
            }
            for (key, caption), e, m in zip(keys_captions, embeddings, masks, strict=True)
        ],
        schema=TEXT_SCHEMA,
    )


def write_store(
    latents_dir,
    records: list[dict],
    fmt: StoreFormat | None = None,
    rows_per_shard: int = 256,
    text: pa.Table | None = None,
    metadata: dict | None = None,
) -> dict:
    """A whole store from in-memory records (see latent_table), with its manifest and, given,
    its text table: for tests, benchmarks and imports. The latents stage writes shard by shard."""
    from eisbach.atomic import write_json, write_parquet
    from eisbach.data import file_sha256

    fmt = fmt or StoreFormat()
    latents_dir = Path(latents_dir)
    shards = []
    for index, start in enumerate(range(0, len(records), rows_per_shard)):
        path = latents_dir / f"part-{index:05d}.parquet"
        table = latent_table(records[start : start + rows_per_shard], fmt)
        write_shard(path, table, fmt, metadata)
        shards.append({"path": path.name, "rows": table.num_rows, "sha256": file_sha256(path)})
    summary = {
        "shards": shards,
        "clips": len(records),
        "format": {"rows_per_shard": rows_per_shard, **vars(fmt)},
    }
    if text is not None:
        write_parquet(latents_dir / TEXT_FILE, text, compression="zstd")
        summary["text"] = {
            "path": TEXT_FILE,
            "rows": text.num_rows,
            "sha256": file_sha256(latents_dir / TEXT_FILE),
        }
    info = {}
    for key, value in (metadata or {}).items():
        try:
            info[key.decode().removeprefix("eisbach.")] = json.loads(value)
        except json.JSONDecodeError:
            info[key.decode().removeprefix("eisbach.")] = value.decode()
    write_card(latents_dir, info, fmt, shards, text.num_rows if text is not None else None)
    write_json(latents_dir / MANIFEST, summary)
    return summary


def card_text(info: dict, fmt: StoreFormat, shards: list[dict], text_rows: int | None) -> str:
    """A Hugging Face dataset card for a store: YAML front matter (``datasets`` configs for the
    latent rows and the text table; the latent rate, scale and offset under ``eisbach``), then
    what the columns hold. ``datasets`` drops the Parquet schema metadata, so the card is where
    its users find what turns a latent back into the backend's representation."""
    import yaml

    eisbach = {
        key: info[key]
        for key in (
            "backend",
            "backend_version",
            "sample_rate",
            "latent_channels",
            "latent_rate",
            "latent_scale",
            "latent_offset",
            "objective",
            "config_hash",
        )
        if key in info
    }
    eisbach |= {"latent_dtype": fmt.dtype, "latent_column": fmt.column}
    eisbach |= {"clips": sum(int(s["rows"]) for s in shards), "shards": len(shards)}
    configs = [{"config_name": "latents", "data_files": SHARD_GLOB, "default": True}]
    if text_rows is not None:
        configs.append({"config_name": "text", "data_files": f"{Path(TEXT_FILE).parent}/*.parquet"})
    front = {"configs": configs, "tags": ["audio", "latents", "eisbach"], "eisbach": eisbach}
    if fmt.column == "list":
        layout = "`latent`: the [C, T] latent as C lists of T numbers (`Sequence(Sequence(Value))`)"
    else:
        layout = (
            f"`latent`: the [C, T] latent as raw little-endian {fmt.dtype} bytes; "
            f'`np.frombuffer(row["latent"], "{fmt.dtype}").reshape(row["latent_shape"])`'
        )
    body = f"""
# Latents of the `{eisbach.get("backend")}` backend (eisbach)

Written by the latents stage of the eisbach pipeline: {eisbach["clips"]} clips in
{eisbach["shards"]} shards, one row per clip.

```python
import datasets
rows = datasets.load_dataset("parquet", data_files="<this folder>/{SHARD_GLOB}", split="train")
```

- {layout}; `latent_shape` [C, T]; `n_frames` the valid frames (<= T).
- `latent * latent_scale + latent_offset` is the backend's unnormalised representation
  (the tiny backend: a log-mel); one frame lasts `1 / latent_rate` seconds. Their values are
  in the front matter under `eisbach`.
- `caption_key` (sha256 of the caption) keys the `text` config (`{TEXT_FILE}`): each caption's
  conditioning once, `embedding` flattened from `embedding_shape` [L, D], and its `mask`.
- `audio_sha256` is the source clip's checksum; `latents_manifest.json` holds every file's.
"""
    return "---\n" + yaml.safe_dump(front, sort_keys=False) + "---\n" + body


def write_card(latents_dir, info: dict, fmt: StoreFormat, shards, text_rows=None) -> None:
    from eisbach.atomic import write_text

    write_text(Path(latents_dir) / CARD, card_text(info, fmt, shards, text_rows))


def read_card(latents_dir) -> dict:
    """The YAML front matter of a store's card."""
    import yaml

    text = (Path(latents_dir) / CARD).read_text()
    if not text.startswith("---\n"):
        raise ValueError(f"{Path(latents_dir) / CARD}: no YAML front matter")
    return yaml.safe_load(text[4 : text.index("\n---\n", 4)])


# --- reading ------------------------------------------------------------------------------------
def read_manifest(latents_dir) -> dict:
    return json.loads((Path(latents_dir) / MANIFEST).read_text())


def shard_paths(latents_dir, verify: bool = True) -> list[Path]:
    """The shards the manifest lists, in order (never a stray file matching part-*), each
    checked against the sha256 the manifest records for it (once per process)."""
    latents_dir = Path(latents_dir)
    paths = []
    for shard in read_manifest(latents_dir)["shards"]:
        path = latents_dir / shard["path"]
        if verify:
            verify_file(path, shard.get("sha256"), record=latents_dir / MANIFEST, rule="latents")
        paths.append(path)
    return paths


def text_path(latents_dir) -> Path:
    """The store's text table, checked against the sha256 in the manifest (once per process)."""
    latents_dir = Path(latents_dir)
    entry = read_manifest(latents_dir).get("text") or {}
    path = latents_dir / entry.get("path", TEXT_FILE)
    verify_file(path, entry.get("sha256"), record=latents_dir / MANIFEST, rule="latents")
    return path


def field_dtype(field: pa.Field) -> np.dtype:
    if pa.types.is_list(field.type) or pa.types.is_large_list(field.type):
        value_type = field.type.value_type
        if pa.types.is_list(value_type):  # nested [C, T]
            value_type = value_type.value_type
        return np.dtype(value_type.to_pandas_dtype())
    meta = field.metadata or {}
    return np.dtype(DTYPES[meta.get(b"dtype", b"float32").decode()])


def decode_latents(column, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """(flat values, element offsets [n + 1]) of a ``latent`` column, without Python per row.

    For uncompressed float32 columns ``flat`` is a view of the Arrow buffer, not a copy."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_list(arr.type) and pa.types.is_list(arr.type.value_type):
        rows = arr.offsets.to_numpy().astype(np.int64)
        channels = arr.flatten()  # the rows' channels, each a list of frames
        values = channels.offsets.to_numpy().astype(np.int64)
        offsets = values[rows - rows[0]]
        return channels.flatten().to_numpy(zero_copy_only=False), offsets - offsets[0]
    if pa.types.is_list(arr.type):
        offsets = arr.offsets.to_numpy().astype(np.int64)
        return arr.flatten().to_numpy(zero_copy_only=False), offsets - offsets[0]
    if not pa.types.is_binary(arr.type):
        raise TypeError(f"latent column of unexpected type {arr.type}")
    _, offset_buf, data_buf = arr.buffers()
    byte_offsets = np.frombuffer(offset_buf, np.int32)[arr.offset : arr.offset + len(arr) + 1]
    data = np.frombuffer(data_buf, np.uint8)[byte_offsets[0] : byte_offsets[-1]]
    rel = (byte_offsets - byte_offsets[0]).astype(np.int64)
    if np.any(rel % dtype.itemsize):
        raise ValueError("binary latent column with a row that is not a whole number of values")
    return data.view(dtype), rel // dtype.itemsize


class Block:
    """Decoded rows of one record batch: flat latents, offsets and the small columns as numpy."""

    __slots__ = ("flat", "offsets", "shapes", "n_frames", "ids", "caption_keys", "start", "total")

    def __init__(self, table: pa.Table):
        dtype = field_dtype(table.schema.field("latent"))
        self.flat, self.offsets = decode_latents(table.column("latent"), dtype)
        shape = table.column("latent_shape").combine_chunks()
        lengths = np.diff(shape.offsets.to_numpy())
        if np.any(lengths != 2):
            raise ValueError("latent_shape must be [C, T] on every row")
        self.shapes = shape.flatten().to_numpy().astype(np.int64).reshape(len(table), 2)
        self.n_frames = table.column("n_frames").to_numpy().astype(np.int64)
        self.ids = table.column("id").to_pylist()
        self.caption_keys = table.column("caption_key").to_pylist()
        self.start = table.column("seconds_start").to_numpy()
        self.total = table.column("seconds_total").to_numpy()

    def __len__(self) -> int:
        return len(self.ids)

    def latent(self, i: int) -> np.ndarray:
        """Row i's latent [C, T] (a view; float16 stays float16)."""
        return self.flat[self.offsets[i] : self.offsets[i + 1]].reshape(self.shapes[i])


def read_rows(path, split: str | None = None) -> list[dict]:
    """All rows of a shard as dicts, ``latent`` as a float32 [C, T] array."""
    table = pq.read_table(path, memory_map=True)
    if split is not None:
        table = table.filter(pc.equal(table.column("split"), split))
    if table.num_rows == 0:
        return []
    block = Block(table)
    rows = table.drop_columns(["latent"]).to_pylist()
    for i, row in enumerate(rows):
        row["latent"] = np.array(block.latent(i), np.float32)
    return rows


def load_store(latents_dir, split: str | None = None) -> list[dict]:
    return [row for path in shard_paths(latents_dir) for row in read_rows(path, split)]


class TextTable:
    """text.parquet in memory: caption key -> (embedding [L, D], mask [L]), looked up in batches."""

    def __init__(self, latents_dir_or_file):
        path = Path(latents_dir_or_file)
        # A store's table is verified; a bare file (tests, imports) is read as it is.
        path = text_path(path) if path.is_dir() else path
        table = pq.read_table(path)
        shapes = table.column("embedding_shape").to_pylist()
        if len({tuple(s) for s in shapes}) > 1:
            raise ValueError(
                f"{path}: text embeddings of different shapes {set(map(tuple, shapes))}"
            )
        n = table.num_rows
        shape = tuple(shapes[0]) if shapes else (0, 0)
        emb = table.column("embedding").combine_chunks()
        self.embeddings = emb.flatten().to_numpy().astype(np.float32).reshape(n, *shape)
        mask = table.column("mask").combine_chunks()
        self.masks = mask.flatten().to_numpy(zero_copy_only=False).reshape(n, shape[0])
        self.keys = table.column("caption_key").to_pylist()
        self.captions = table.column("caption").to_pylist()
        self.index = {k: i for i, k in enumerate(self.keys)}

    def __len__(self) -> int:
        return len(self.keys)

    def __contains__(self, key: str) -> bool:
        return key in self.index

    def get(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        i = self.index[key]
        return self.embeddings[i], self.masks[i]

    def lookup(self, keys: list[str]):
        """(cond [B, L, D] float32, cond_mask [B, L] bool) as torch tensors."""

        idx = np.fromiter((self.index[k] for k in keys), np.int64, len(keys))
        return torch.from_numpy(self.embeddings[idx]), torch.from_numpy(self.masks[idx])


# --- streaming ----------------------------------------------------------------------------------
class LatentBatch(NamedTuple):
    ids: list[str]
    latents: torch.Tensor  # [B, C, T] float32 (or float16), zero beyond each clip's n_frames
    mask: torch.Tensor  # [B, T] bool, True on valid frames
    caption_keys: list[str]
    seconds_start: torch.Tensor  # [B] float64
    seconds_total: torch.Tensor  # [B] float64
    cond: torch.Tensor | None = None  # [B, L, D] float32, when the loader carries text
    cond_mask: torch.Tensor | None = None  # [B, L] bool


TORCH_TO_NUMPY = {torch.float32: np.float32, torch.float16: np.float16}


def collate(items: list[tuple[Block, int]], dtype: torch.dtype = torch.float32) -> LatentBatch:
    """Pads [C, T_i] latents to the batch's longest valid length; mask marks the valid frames.

    Inside a DataLoader worker the latents are written straight into shared memory (passing them
    to the main process then copies nothing) and the small fields stay numpy arrays (pickled with
    the batch, cheaper than one shared-memory segment each); ``finish_batch`` makes them tensors.
    """
    n = np.fromiter((blk.n_frames[i] for blk, i in items), np.int64, len(items))
    channels = {int(blk.shapes[i][0]) for blk, i in items}
    if len(channels) != 1:
        raise ValueError(f"latents with different channel counts in one batch: {channels}")
    frames = int(n.max())
    out = torch.empty((len(items), channels.pop(), frames), dtype=dtype)
    in_worker = torch.utils.data.get_worker_info() is not None
    if in_worker:
        out.share_memory_()
    dest = out.numpy()
    for b, (blk, i) in enumerate(items):
        dest[b, :, : n[b]] = blk.latent(i)[:, : n[b]]
        dest[b, :, n[b] :] = 0
    batch = LatentBatch(
        ids=[blk.ids[i] for blk, i in items],
        latents=out,
        mask=np.arange(frames)[None, :] < n[:, None],
        caption_keys=[blk.caption_keys[i] for blk, i in items],
        seconds_start=np.array([blk.start[i] for blk, i in items]),
        seconds_total=np.array([blk.total[i] for blk, i in items]),
    )
    return batch if in_worker else finish_batch(batch)


def finish_batch(batch: LatentBatch, text: TextTable | None = None) -> LatentBatch:
    """Numpy fields to tensors and, given the text table, the conditioning of the batch."""

    def tensor(x):
        return torch.from_numpy(x) if isinstance(x, np.ndarray) else x

    batch = batch._replace(
        mask=tensor(batch.mask),
        seconds_start=tensor(batch.seconds_start),
        seconds_total=tensor(batch.seconds_total),
    )
    if text is not None:
        cond, cond_mask = text.lookup(batch.caption_keys)
        batch = batch._replace(cond=cond, cond_mask=cond_mask)
    return batch


@dataclass(frozen=True)
class Unit:
    """One row group of one shard, with the positions of its rows in the requested split."""

    path: str
    row_group: int
    rows: tuple[int, ...]


def _plan_units(paths: list[Path], split: str | None) -> list[Unit]:
    units = []
    for path in paths:
        pf = pq.ParquetFile(path)
        splits = pf.read(columns=["split"]).column("split").to_pylist()
        start = 0
        for rg in range(pf.metadata.num_row_groups):
            stop = start + pf.metadata.row_group(rg).num_rows
            rows = tuple(
                i for i in range(stop - start) if split is None or splits[start + i] == split
            )
            if rows:
                units.append(Unit(str(path), rg, rows))
            start = stop
    return units


class _Uniforms:
    """Seeded uniform draws in [0, 1), taken from the generator 1,024 at a time."""

    def __init__(self, rng: np.random.Generator):
        self.rng, self.values, self.k = rng, np.empty(0), 0

    def below(self, n: int) -> int:
        if self.k == len(self.values):
            self.values, self.k = self.rng.random(1024), 0
        self.k += 1
        return min(int(self.values[self.k - 1] * n), n - 1)


EPOCH_END = object()  # marks the end of an epoch in a stream of blocks


def _shuffled(blocks, row_groups: int, draws: _Uniforms | None):
    """(block, row) items from a pool of up to ``row_groups`` decoded row groups, drawn
    uniformly over the rows left in the pool (in order, one group at a time, without ``draws``).

    A row group leaves the pool when its last row is drawn and the next one is read in, so a
    worker never holds more than ``row_groups`` of them. At an ``EPOCH_END`` in ``blocks`` the
    pool is drained before the next epoch's groups come in, so that every row is drawn once per
    epoch even when the pool could hold several epochs of a small store."""
    pool, left = [], 0  # pool: [block, rows not yet drawn]
    blocks = iter(blocks)
    draining = False
    while True:
        while not draining and len(pool) < row_groups:
            block = next(blocks, None)
            if block is None:
                break
            if block is EPOCH_END:
                draining = True
                break
            pool.append([block, list(range(len(block) - 1, -1, -1))])
            left += len(block)
        if left == 0:
            if draining:
                draining = False
                continue
            return
        if draws is None:
            entry, r = pool[0], len(pool[0][1]) - 1
        else:
            r = draws.below(left)
            for entry in pool:
                if r < len(entry[1]):
                    break
                r -= len(entry[1])
        rows = entry[1]
        i = rows[r]
        rows[r] = rows[-1]
        rows.pop()
        left -= 1
        if not rows:
            pool.remove(entry)
        yield entry[0], i


READ_COLUMNS = [
    "id",
    "latent",
    "latent_shape",
    "n_frames",
    "caption_key",
    "seconds_start",
    "seconds_total",
]


class LatentStream(torch.utils.data.IterableDataset):
    """A seeded stream of padded batches over a store's shards (a torch IterableDataset).

    Work is split by Parquet row group: each epoch, the row groups that hold rows of ``split``
    are permuted with (seed, epoch), dealt to distributed ranks (``rank::world_size``) and then to
    DataLoader workers (``worker::num_workers``). Each worker reads whole row groups (memory-mapped,
    a column at a time, no Python per value) into a shuffle buffer of ``shuffle_row_groups`` row
    groups, draws rows from it uniformly with a generator seeded by (seed, rank, worker), and
    yields whole padded batches, so the DataLoader runs with ``batch_size=None`` and moves one
    latent tensor per batch. For a given seed, world_size and num_workers the stream is the same
    on every run. Use it through ``make_loader``.

    epochs: passes over the data; None: endless, with batches running across epoch boundaries so
    that every batch is full (what a step-counted training loop wants). With persistent workers,
    each new iteration of a finite stream replays the same epochs.
    start_batch (endless streams only): skip the loader's first start_batch batches, e.g. to
    resume training at step start_batch; the batches after it are those of an unbroken run.
    dtype: of the latents in a batch (torch.float32, or torch.float16 to halve what is moved).
    """

    def __init__(
        self,
        latents_dir,
        *,
        batch_size: int,
        split: str | None = "train",
        seed: int = 0,
        shuffle: bool = True,
        shuffle_row_groups: int = 8,
        epochs: int | None = 1,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        start_batch: int = 0,
        dtype: torch.dtype = torch.float32,
    ):
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}")
        if start_batch and epochs is not None:
            raise ValueError("start_batch needs an endless stream (epochs=None)")
        if dtype not in TORCH_TO_NUMPY:
            raise ValueError(f"dtype must be one of {list(TORCH_TO_NUMPY)}")
        self.latents_dir = Path(latents_dir)
        self.batch_size = int(batch_size)
        self.split, self.seed, self.shuffle = split, int(seed), bool(shuffle)
        self.shuffle_row_groups = max(1, int(shuffle_row_groups))
        self.epochs, self.drop_last = epochs, bool(drop_last)
        self.rank, self.world_size = int(rank), int(world_size)
        self.start_batch, self.dtype = int(start_batch), dtype
        self.units = _plan_units(shard_paths(self.latents_dir), split)
        if not self.units:
            raise ValueError(f"{self.latents_dir}: no rows in split {split!r}")
        self.num_rows = sum(len(u.rows) for u in self.units)
        if self.rank >= len(self.units):
            raise ValueError(
                f"{self.latents_dir}: {len(self.units)} row groups in split {split!r} cannot feed "
                f"rank {rank} of {world_size}; write smaller row groups (latents.row_group_rows)"
            )

    def units_for(self, epoch: int, worker: int = 0, num_workers: int = 1) -> list[Unit]:
        """The row groups that (rank, worker) reads in ``epoch``, in reading order."""
        order = np.arange(len(self.units))
        if self.shuffle:
            order = np.random.default_rng([self.seed, epoch]).permutation(len(self.units))
        mine = order[self.rank :: self.world_size][worker::num_workers]
        return [self.units[i] for i in mine]

    def active_workers(self, num_workers: int) -> int:
        """How many of num_workers get any row group (the others end at once); at least 1."""
        per_rank = len(range(self.rank, len(self.units), self.world_size))
        return max(1, min(int(num_workers), per_rank))

    def _blocks(self, worker: int, num_workers: int):
        files = {}
        epochs = count() if self.epochs is None else range(self.epochs)
        for epoch in epochs:
            for unit in self.units_for(epoch, worker, num_workers):
                pf = files.get(unit.path)
                if pf is None:
                    pf = files[unit.path] = pq.ParquetFile(unit.path, memory_map=True)
                table = pf.read_row_group(unit.row_group, columns=READ_COLUMNS, use_threads=False)
                if len(unit.rows) != table.num_rows:
                    table = table.take(pa.array(unit.rows))
                yield Block(table)
            yield EPOCH_END

    def batches(self, worker: int = 0, num_workers: int = 1):
        """The batches of DataLoader worker ``worker`` of ``num_workers`` (all of them for 0/1)."""
        active = self.active_workers(num_workers)
        if worker >= active:
            return
        # The DataLoader takes batch k from worker k % active. Batch k of an unbroken stream is
        # (the k // active-th batch) of the stream of "role" k % active; to start at start_batch,
        # worker w plays role (w + start_batch) % active and skips that role's earlier batches.
        role = (worker + self.start_batch) % active
        skip = len(range(role, self.start_batch, active))
        draws = None
        if self.shuffle:
            draws = _Uniforms(np.random.default_rng([self.seed, self.rank, role, 1]))
        items = _shuffled(
            self._blocks(role, active), self.shuffle_row_groups if draws else 1, draws
        )
        pending, made = [], 0
        for item in items:
            pending.append(item)
            if len(pending) == self.batch_size:
                made += 1
                if made > skip:
                    yield collate(pending, self.dtype)
                pending = []
        if pending and not self.drop_last:
            yield collate(pending, self.dtype)

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        if info is None:
            return self.batches(0, 1)
        return self.batches(info.id, info.num_workers)


def _identity(batch):
    return batch


class LatentLoader(torch.utils.data.DataLoader):
    """A DataLoader over a LatentStream that finishes each batch in the main process: numpy
    fields to tensors and, with ``text``, the conditioning looked up by caption key (so the
    text table is held once, not once per worker)."""

    def __init__(self, stream: LatentStream, text: TextTable | None = None, **kwargs):
        super().__init__(stream, batch_size=None, collate_fn=_identity, **kwargs)
        self.text = text

    def __iter__(self):
        for batch in super().__iter__():
            yield finish_batch(batch, self.text)


def make_loader(
    stream: LatentStream, num_workers: int = 0, with_text: bool = False, **kwargs
) -> LatentLoader:
    """The training loader: ``for batch in make_loader(stream, 2): batch.latents ...``.

    num_workers is capped at the row groups a rank has (extra workers would idle). kwargs go to
    torch's DataLoader (pin_memory, prefetch_factor, persistent_workers, ...)."""
    workers = stream.active_workers(num_workers) if num_workers > 0 else 0
    if workers == 0:
        kwargs.pop("prefetch_factor", None)
        kwargs.pop("persistent_workers", None)
    text = TextTable(stream.latents_dir) if with_text else None
    return LatentLoader(stream, text=text, num_workers=workers, **kwargs)
