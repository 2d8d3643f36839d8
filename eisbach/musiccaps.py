"""Clip metadata: MusicCaps (a CSV or google/MusicCaps through datasets) and captions CSVs.

Everything here is parsed as data, never executed: ``aspect_list`` goes through
``ast.literal_eval``; a ytid must match ``^[A-Za-z0-9_-]{11}$`` before it reaches a file name,
a URL or a process; start/end must be finite with 0 <= start < end. A malformed row does not stop
the stage: it is kept with an ``error`` that names the row, and becomes a manifest row with status
``unavailable``. A file that lacks a required column is a hard error naming the file and column.

This module imports only the standard library, so the Snakefile can count rows (and so shards)
at DAG-build time cheaply.
"""

from __future__ import annotations

import ast
import csv
import hashlib
import io
import math
import re
from pathlib import Path

YTID_RE = re.compile(r"^[A-Za-z0-9_-]{11}$")
MUSICCAPS_HUB_ID = "google/MusicCaps"
MUSICCAPS_ROWS = 5521  # rows of google/MusicCaps (train split); the shard count when no CSV is set
MUSICCAPS_COLUMNS = ("ytid", "start_s", "end_s", "aspect_list", "caption", "is_audioset_eval")
CAPTIONS_COLUMNS = ("file", "caption")
AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg")
DEFAULT_SHARD_SIZE = 256
TRUE_WORDS = {"true", "1", "yes"}
FALSE_WORDS = {"false", "0", "no", ""}


class MetadataError(ValueError):
    """A metadata file that cannot be used at all (missing file or column)."""


def is_valid_ytid(ytid) -> bool:
    return isinstance(ytid, str) and YTID_RE.fullmatch(ytid) is not None


def clip_id(ytid: str) -> str:
    """Manifest id of a MusicCaps clip; the prefix keeps file names from starting with '-'."""
    return f"mc-{ytid}"


def _open_csv(path: Path):
    """The CSV as text (UTF-8, BOM allowed). Decoded whole, so that a byte that is not UTF-8 is
    reported with its file, line and CSV row rather than as a bare UnicodeDecodeError."""
    if not path.is_file():
        raise MetadataError(f"{path}: no such metadata file")
    raw = path.read_bytes()
    try:
        return io.StringIO(raw.decode("utf-8-sig"), newline="")
    except UnicodeDecodeError as exc:
        before = raw[: exc.start].decode("utf-8-sig", errors="replace")
        records = list(csv.reader(io.StringIO(before, newline="")))
        where = f"data row {len(records) - 1}" if len(records) > 1 else "the header"
        line = raw[: exc.start].count(b"\n") + 1
        raise MetadataError(
            f"{path}: {where} (line {line}, byte {exc.start}) is not UTF-8: "
            f"{raw[exc.start : exc.end]!r} ({exc.reason}); save the file as UTF-8"
        ) from None


def _check_columns(path, fieldnames, required) -> None:
    present = set(fieldnames or ())
    for column in required:
        if column not in present:
            raise MetadataError(
                f"{path}: column {column!r} is missing (a file of this kind needs "
                f"{', '.join(required)}; it has {', '.join(fieldnames or ()) or 'no header'})"
            )


def count_csv_rows(path) -> int:
    """Records in a CSV (quoted newlines allowed), without the header; ~30 ms for MusicCaps."""
    with _open_csv(Path(path)) as fh:
        return max(sum(1 for _ in csv.reader(fh)) - 1, 0)


def expected_rows(data: dict) -> int:
    """Metadata rows the data stage will see, known at DAG-build time without the network."""
    source = data["source"]
    if source == "demo":
        return int(data.get("demo", {}).get("n_clips", 1))
    csv_path = data.get("captions_csv") if source == "local" else None
    csv_path = csv_path or data.get("musiccaps_csv")
    if data.get("limit") and csv_path and not Path(csv_path).is_file():
        # a CSV that a setup step writes later (config/paper-smoke.yaml): the DAG is known from
        # the limit; the metadata job names the missing file if it is still missing then
        return int(data["limit"])
    if source == "local" and data.get("captions_csv"):
        n = count_csv_rows(data["captions_csv"])
    elif data.get("musiccaps_csv"):
        n = count_csv_rows(data["musiccaps_csv"])
    else:
        n = MUSICCAPS_ROWS
    if data.get("limit"):
        n = min(n, int(data["limit"]))
    return n


def n_shards(data: dict) -> int:
    """Shard jobs of the data stage: one for the demo, ceil(rows / data.shard_size) otherwise."""
    if data["source"] == "demo":
        return 1
    size = int(data.get("shard_size") or DEFAULT_SHARD_SIZE)
    return max(1, math.ceil(expected_rows(data) / size))


def shard_bounds(n_rows: int, shard: int, shards: int, shard_size: int) -> tuple[int, int]:
    """Rows [lo, hi) of one shard; the last shard also takes any rows beyond the expected count."""
    lo = shard * shard_size
    hi = n_rows if shard == shards - 1 else min((shard + 1) * shard_size, n_rows)
    return min(lo, n_rows), max(min(lo, n_rows), hi)


def parse_bool(value, what: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in TRUE_WORDS:
        return True
    if text in FALSE_WORDS:
        return False
    raise ValueError(f"{what} {value!r} is not true/false")


def parse_aspect_list(value) -> list[str]:
    """A Python-literal list of strings, parsed with ast.literal_eval (never eval)."""
    if isinstance(value, list | tuple):
        items = list(value)
    else:
        try:
            items = ast.literal_eval(str(value))
        except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError) as exc:
            raise ValueError(
                f"aspect_list {str(value)[:80]!r} is not a Python list literal ({exc.__class__.__name__})"
            ) from None
    if not isinstance(items, list) or not all(isinstance(x, str) for x in items):
        raise ValueError(f"aspect_list {str(value)[:80]!r} is not a list of strings")
    return items


def _seconds(value, what: str) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} {value!r} is not a number") from None
    if not math.isfinite(out):
        raise ValueError(f"{what} {value!r} is not finite")
    return out


def musiccaps_row(index: int, record: dict, origin: str) -> dict:
    """One metadata row; problems go into ``error`` (naming the row and ytid), never raised."""
    ytid = record.get("ytid")
    row = {
        "row": index,
        "id": f"mc-row{index + 1:05d}",
        "ytid": ytid if isinstance(ytid, str) else None,
        "start_s": None,
        "end_s": None,
        "caption": str(record.get("caption") or ""),
        "aspect_list": [],
        "split": "train",
        "file": None,
        "error": None,
    }
    where = f"{origin} row {index + 1}"
    try:
        if not is_valid_ytid(ytid):
            raise ValueError(f"ytid {str(ytid)[:40]!r} does not match {YTID_RE.pattern}")
        row["id"] = clip_id(ytid)
        start = _seconds(record.get("start_s"), "start_s")
        end = _seconds(record.get("end_s"), "end_s")
        if start < 0 or end <= start:
            raise ValueError(f"start_s={start:g} end_s={end:g}: need 0 <= start_s < end_s")
        row["start_s"], row["end_s"] = start, end
        row["aspect_list"] = parse_aspect_list(record.get("aspect_list"))
        is_eval = parse_bool(record.get("is_audioset_eval"), "is_audioset_eval")
        row["split"] = "eval" if is_eval else "train"
    except ValueError as exc:
        row["error"] = f"invalid metadata at {where} (ytid {str(ytid)[:40]!r}): {exc}"
    return row


def _dedupe(rows: list[dict]) -> list[dict]:
    """Ids must be unique: a clip listed twice is an error, another part of a video gets its start
    time in the id."""
    clips: dict[tuple, int] = {}
    ids: set[str] = set()
    for row in rows:
        if row["error"]:
            continue
        key = (row["ytid"], row["start_s"], row["end_s"])
        if key in clips:
            row["error"] = f"row {row['row'] + 1} repeats the clip of row {clips[key] + 1}"
            row["id"] = f"mc-row{row['row'] + 1:05d}"
            continue
        clips[key] = row["row"]
        if row["id"] in ids:
            row["id"] = f"{row['id']}-{int(round(row['start_s'] * 1000))}"
        ids.add(row["id"])
    return rows


def read_musiccaps_csv(path, limit: int | None = None) -> list[dict]:
    path = Path(path)
    rows = []
    with _open_csv(path) as fh:
        reader = csv.DictReader(fh)
        _check_columns(path, reader.fieldnames, MUSICCAPS_COLUMNS)
        for index, record in enumerate(reader):
            if limit is not None and index >= limit:
                break
            rows.append(musiccaps_row(index, record, path.name))
    return _dedupe(rows)


def load_musiccaps_hub(limit: int | None = None) -> list[dict]:
    """google/MusicCaps through datasets; a failure names data.musiccaps_csv as the way out."""
    try:
        import datasets

        ds = datasets.load_dataset(MUSICCAPS_HUB_ID, split="train")
    except Exception as exc:
        raise MetadataError(
            f"could not load {MUSICCAPS_HUB_ID} through datasets ({exc.__class__.__name__}: "
            f"{str(exc)[:300]}). Download musiccaps-public.csv and set data.musiccaps_csv to its "
            "path (or, offline, HF_DATASETS_OFFLINE=1 with a cached copy)."
        ) from exc
    _check_columns(MUSICCAPS_HUB_ID, ds.column_names, MUSICCAPS_COLUMNS)
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))
    return _dedupe([musiccaps_row(i, rec, MUSICCAPS_HUB_ID) for i, rec in enumerate(ds)])


def load_musiccaps(data: dict) -> list[dict]:
    limit = data.get("limit")
    if data.get("musiccaps_csv"):
        return read_musiccaps_csv(data["musiccaps_csv"], limit)
    return load_musiccaps_hub(limit)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_") or "clip"


def read_captions_csv(path, eval_fraction: float, limit: int | None = None) -> list[dict]:
    """Generic local mode: a CSV of (file, caption[, split][, aspect_list]) beside a folder."""
    path = Path(path)
    rows, seen = [], set()
    with _open_csv(path) as fh:
        reader = csv.DictReader(fh)
        _check_columns(path, reader.fieldnames, CAPTIONS_COLUMNS)
        for index, record in enumerate(reader):
            if limit is not None and index >= limit:
                break
            name = str(record.get("file") or "").strip()
            base = f"local-{_slug(str(Path(name).with_suffix('')))}"
            cid, k = base, 1
            while cid in seen:
                k += 1
                cid = f"{base}-{k}"
            seen.add(cid)
            digest = hashlib.sha256(name.encode()).digest()
            split = "eval" if int.from_bytes(digest[:8], "big") / 2**64 < eval_fraction else "train"
            row = {
                "row": index,
                "id": cid,
                "ytid": None,
                "start_s": 0.0,
                "end_s": None,
                "caption": str(record.get("caption") or ""),
                "aspect_list": [],
                "split": split,
                "file": name,
                "error": None,
            }
            try:
                if not name:
                    raise ValueError("empty file name")
                if Path(name).is_absolute() or ".." in Path(name).parts:
                    raise ValueError(f"file {name!r} must be a relative path inside data.audio_dir")
                if (record.get("split") or "").strip():
                    if record["split"].strip() not in ("train", "eval"):
                        raise ValueError(f"split {record['split']!r} is not train or eval")
                    row["split"] = record["split"].strip()
                if (record.get("aspect_list") or "").strip():
                    row["aspect_list"] = parse_aspect_list(record["aspect_list"])
            except ValueError as exc:
                row["error"] = f"invalid metadata at {path.name} row {index + 1}: {exc}"
            rows.append(row)
    return rows
