"""Data stage: clips on disk and the manifest that records every clip's fate.

Sources (``data.source``):

``demo``
    Music with known structure rendered offline (eisbach.demo_music); one shard.
``musiccaps``
    MusicCaps metadata (``data.musiccaps_csv``, or google/MusicCaps through datasets), each clip
    downloaded with yt-dlp: only its section (``data.download: section``) or the whole video and
    an ffmpeg slice (``full``).
``local``
    A folder of existing clips (``data.audio_dir``): MusicCaps clips named ``<ytid>.wav`` (or
    flac/mp3/ogg) with the MusicCaps metadata, or, with ``data.captions_csv``, any audio listed
    in a CSV of (file, caption).

The stage runs as ``metadata`` (parse once) -> ``shard`` jobs (download / validate a slice of the
rows with parallel workers) -> ``manifest`` (concatenate). Every clip of every source is decoded and
validated; a clip that fails is quarantined (it stays in the manifest with a status and reason).

Resume: a download's outcome is kept in ``results/data/raw/<id>.json`` beside the downloaded
audio, written atomically as soon as the clip settles. A rerun never calls yt-dlp again for a clip
that finished (downloaded, or permanently unavailable / private / corrupt); it only retries
clips that failed transiently or were stopped by a bot check. Validation and resampling are
redone from the kept audio, so changing the thresholds or the backend's rate downloads nothing.
To fetch a clip again, delete its ``results/data/raw/<id>.*``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from eisbach import musiccaps, provenance, ytdlp
from eisbach.atomic import link_or_copy, write_json, write_parquet, write_wav
from eisbach.audio_checks import DecodeError, decode, find_ffmpeg, to_channels, validate_clip
from eisbach.integrity import verify_file
from eisbach.provenance import file_sha256
from eisbach.ytdlp import COOKIES_ENV, redacted_config

__all__ = [
    "COOKIES_ENV",
    "build_manifest",
    "file_sha256",
    "main",
    "redacted_config",
    "validate_clip",
]

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

METADATA_SCHEMA = pa.schema(
    [
        ("row", pa.int64()),
        ("id", pa.string()),
        ("ytid", pa.string()),
        ("start_s", pa.float64()),
        ("end_s", pa.float64()),
        ("caption", pa.string()),
        ("aspect_list", pa.list_(pa.string())),
        ("split", pa.string()),
        ("file", pa.string()),
        ("error", pa.string()),
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

# Keys of the `data` section that may be left out; workflow/schemas/config.schema.yaml says what
# each does.
DEFAULTS = {
    "musiccaps_csv": "",
    "limit": None,
    "audio_dir": "",
    "captions_csv": "",
    "eval_fraction": 0.1,
    "ytdlp": "yt-dlp",
    "ytdlp_args": [],
    "url_template": ytdlp.YOUTUBE_URL,
    "cookies": "",
    "workers": 4,
    "max_attempts": 4,
    "shard_size": musiccaps.DEFAULT_SHARD_SIZE,
    "download": "section",
    "timeout_s": 300.0,
    "backoff_s": 5.0,
    "sleep_s": 0.0,
    "on_bot_check": "fail",
    "channels": 1,
}

BOT_CHECK_ADVICE = (
    "Pass a cookies file of a logged-in browser session as data.cookies (Netscape format, e.g. "
    "exported with `yt-dlp --cookies-from-browser firefox --cookies FILE`), and slow down: fewer "
    "data.workers, a larger data.sleep_s, fewer shards at a time (snakemake --resources ytdlp=1). "
    "Then rerun: clips that finished are not downloaded again."
)


class Cancelled(Exception):
    """A clip whose download was interrupted; nothing is recorded for it."""


class DataStageError(RuntimeError):
    """A problem the user must fix (configuration, environment); reported without a traceback."""


class BotCheckStop(DataStageError):
    """A shard stopped by a bot check, with data.on_bot_check: fail."""


def settings(data: dict) -> dict:
    """The data section with defaults for the keys left out (or null)."""
    return DEFAULTS | {k: v for k, v in data.items() if v is not None}


def cookies_path(data: dict) -> str | None:
    """The cookies file: from data.cookies, or from the environment when the rule redacted it."""
    value = str(data.get("cookies") or "")
    if not value:
        return None
    if value.startswith("env:"):
        name = value[4:].split("#", 1)[0]
        value = os.environ.get(name, "")
        if not value:
            raise DataStageError(
                f"data.cookies is set but {name} is not in this job's environment "
                f"(remote executors: pass --envvars {name})"
            )
    if not Path(value).is_file():
        raise FileNotFoundError(
            "data.cookies: the cookies file does not exist (path kept out of logs)"
        )
    return value


def log(message: str) -> None:
    print(message, flush=True)


# ---------------------------------------------------------------------------------------------
# metadata


def load_metadata(data: dict) -> list[dict]:
    data = settings(data)
    source = data["source"]
    if source == "demo":
        raise ValueError("data.source: demo has no metadata file; its shard renders the clips")
    limit = data.get("limit")
    if source == "local":
        if not data.get("audio_dir"):
            raise ValueError("data.source: local needs data.audio_dir, the folder of clips")
        if data.get("captions_csv"):
            return musiccaps.read_captions_csv(
                data["captions_csv"], float(data["eval_fraction"]), limit
            )
    return musiccaps.load_musiccaps(data)


def write_metadata(data: dict, out: Path) -> pa.Table:
    rows = load_metadata(data)
    table = pa.Table.from_pylist(rows, schema=METADATA_SCHEMA)
    meta = provenance.parquet_metadata({"data": data}, stage="data.metadata", source=data["source"])
    write_parquet(out, table.replace_schema_metadata(meta))
    bad = sum(1 for r in rows if r["error"])
    n_eval = sum(1 for r in rows if r["split"] == "eval" and not r["error"])
    log(f"metadata: {len(rows)} rows ({n_eval} eval, {bad} invalid) -> {out}")
    return table


# ---------------------------------------------------------------------------------------------
# one clip


def _manifest_row(meta: dict, source: str) -> dict:
    return {
        "id": meta["id"],
        "source": source,
        "ytid": meta.get("ytid"),
        "start_s": meta.get("start_s"),
        "end_s": meta.get("end_s"),
        "caption": meta.get("caption") or "",
        "aspect_list": list(meta.get("aspect_list") or []),
        "split": meta.get("split") or "train",
        "status": None,
        "reason": "",
        "attempts": 0,
        "duration": None,
        "sample_rate": None,
        "sha256": None,
        "path": None,
    }


class ClipWriter:
    """Decode, validate and (when it passes) write a clip as mono WAV at the backend's rate."""

    def __init__(self, data: dict, sample_rate: int, audio_dir: Path, ffmpeg: str | None):
        self.rules = data["validation"]
        self.sample_rate = sample_rate
        self.channels = int(data.get("channels", 1))
        self.audio_dir = Path(audio_dir)
        self.ffmpeg = ffmpeg
        self.provenance = provenance.content_provenance({"data": data, "sample_rate": sample_rate})

    def finish(self, row: dict, src: Path, slice_full_length: bool = False) -> dict:
        dst = self.audio_dir / f"{row['id']}.wav"
        try:
            audio, rate = decode(src, ffmpeg=self.ffmpeg)
        except DecodeError as exc:
            dst.unlink(missing_ok=True)
            return row | {"status": "corrupt", "reason": f"{src.name} does not decode: {exc}"}
        note = ""
        start, end = row.get("start_s"), row.get("end_s")
        if slice_full_length and start is not None and end is not None:
            length = audio.shape[0] / rate
            if length > (end - start) + 1.0 and length >= end:
                audio = audio[int(round(start * rate)) : int(round(end * rate))]
                note = f"sliced [{start:g}, {end:g}] s from a {length:.1f} s file"
        status, reason = validate_clip(audio, rate, self.rules)
        row = row | {"duration": audio.shape[0] / rate}
        if status != "ok":
            dst.unlink(missing_ok=True)
            return row | {"status": status, "reason": f"{reason} ({src.name})"}
        clip = to_channels(audio, rate, self.sample_rate, self.channels)
        write_wav(dst, clip, self.sample_rate, self.provenance)
        return row | {
            "status": "ok",
            "reason": note,
            "duration": len(clip) / self.sample_rate,
            "sample_rate": self.sample_rate,
            "sha256": file_sha256(dst),
            "path": str(dst),
        }


class Downloader:
    """yt-dlp with retries and backoff; outcomes kept per clip so that a rerun skips them.

    A rate limit (HTTP 429) pauses every worker of the shard, not only the clip that met it:
    the pause grows as base * 2^(n-1) with the n-th 429 in a row and ends on a download.
    """

    def __init__(self, data: dict, data_dir: Path):
        self.data = data
        self.raw_dir = Path(data_dir) / "raw"
        self.tmp_dir = Path(data_dir) / "tmp"
        # yt-dlp's own download archive, shared by the shards; the outcome files stay the
        # record that a rerun trusts (ytdlp.download_once says how the two agree)
        self.archive = self.raw_dir / "ytdlp-archive.txt"
        self.stop = threading.Event()
        self.stop_reason = ""
        self.cancelled = threading.Event()
        self.lock = threading.Lock()
        self.calls = 0
        self.reused = 0
        self.pause_until = 0.0
        self.rate_limits_in_a_row = 0
        self._tools = None
        self._tools_error: Exception | None = None

    def tools(self) -> tuple[str, str | None, str | None]:
        """(yt-dlp, ffmpeg, cookies), resolved once and only when a clip needs downloading.

        Here, before any clip is tried, yt-dlp's version and its JS runtime and EJS are checked
        once; a problem is raised once, to every worker, with one message.
        """
        with self.lock:
            if self._tools_error is not None:
                raise self._tools_error
            if self._tools is None:
                try:
                    self._tools = self._resolve_tools()
                except ytdlp.ToolchainError as exc:
                    self._tools_error = DataStageError(str(exc))
                    raise self._tools_error from None
                except Exception as exc:
                    self._tools_error = exc
                    raise
            return self._tools

    def _resolve_tools(self) -> tuple[str, str | None, str | None]:
        exe = ytdlp.find_executable(self.data["ytdlp"])
        ffmpeg = find_ffmpeg()
        if ffmpeg is None:
            raise FileNotFoundError(
                "yt-dlp needs ffmpeg to cut sections and slice videos: none is on PATH "
                "and imageio-ffmpeg is not installed (pip install imageio-ffmpeg)"
            )
        cookies = cookies_path(self.data)
        toolchain = ytdlp.check_toolchain(exe, self.data["ytdlp_args"])
        self.raw_dir.mkdir(parents=True, exist_ok=True)
        log(
            f"{toolchain.describe()}; yt-dlp: {exe}; ffmpeg: {ffmpeg}; "
            f"cookies: {'yes' if cookies else 'no'}; mode {self.data['download']}; "
            f"{len(self.data['ytdlp_args'])} extra args"
        )
        return exe, ffmpeg, cookies

    def wait_out_pause(self) -> None:
        """Sleep until a rate-limit pause of the shard is over (another 429 may extend it)."""
        while not self.stop.is_set():
            with self.lock:
                left = self.pause_until - time.monotonic()
            if left <= 0:
                return
            self.stop.wait(left)

    def rate_limited(self, meta: dict) -> None:
        """A 429: every worker holds back for the next, longer, pause."""
        with self.lock:
            self.rate_limits_in_a_row += 1
            pause = backoff_delay(float(self.data["backoff_s"]), self.rate_limits_in_a_row)
            self.pause_until = max(self.pause_until, time.monotonic() + pause)
            n = self.rate_limits_in_a_row
        log(
            f"rate limited (HTTP 429) at {meta['id']}: all workers pause {pause:.2f} s ({n} in a row)"
        )

    def downloaded(self) -> None:
        with self.lock:
            self.rate_limits_in_a_row = 0

    def _state_path(self, clip_id: str) -> Path:
        return self.raw_dir / f"{clip_id}.json"

    def cached(self, meta: dict) -> dict | None:
        """The settled outcome of an earlier run for this exact clip, if any."""
        path = self._state_path(meta["id"])
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        same_clip = (
            state.get("ytid") == meta["ytid"]
            and state.get("start_s") == meta["start_s"]
            and state.get("end_s") == meta["end_s"]
        )
        if not same_clip:
            return None
        if state.get("status") == "downloaded":
            raw = self.raw_dir / str(state.get("file"))
            if raw.is_file() and file_sha256(raw) == state.get("sha256"):
                return state
            return None
        if state.get("status") in ytdlp.PERMANENT:
            return state
        return None

    def _previous_attempts(self, clip_id: str) -> int:
        try:
            return int(json.loads(self._state_path(clip_id).read_text()).get("attempts", 0))
        except (OSError, ValueError, AttributeError):
            return 0

    def fetch(self, meta: dict) -> dict:
        """The download outcome: {status, reason, attempts, file (under raw/) or None}."""
        state = self.cached(meta)
        if state is not None:
            with self.lock:
                self.reused += 1
            return state
        if self.stop.is_set():
            return {"status": "bot_check", "reason": self.not_attempted(), "attempts": 0}
        exe, ffmpeg, cookies = self.tools()
        d = self.data
        previous = self._previous_attempts(meta["id"])
        # named by the clip's section and mode too: a finished download that a killed run left
        # here is kept (ytdlp.download_once), and must be of this very clip
        work = self.tmp_dir / f"{meta['id']}@{meta['start_s']:g}-{meta['end_s']:g}-{d['download']}"
        result, attempts, waits = None, 0, []
        try:
            for attempt in range(1, int(d["max_attempts"]) + 1):
                if self.cancelled.is_set():
                    raise Cancelled(meta["id"])
                if attempt > 1:  # a retry waits out its own backoff and any rate-limit pause
                    started = time.monotonic()
                    self.stop.wait(backoff_delay(float(d["backoff_s"]), attempt - 1))
                    self.wait_out_pause()
                    waits.append(round(time.monotonic() - started, 3))
                else:
                    self.wait_out_pause()
                if self.stop.is_set():
                    if self.cancelled.is_set():
                        raise Cancelled(meta["id"])
                    result = ytdlp.CallResult("bot_check", self.not_attempted())
                    break
                attempts += 1
                with self.lock:
                    self.calls += 1
                result = ytdlp.download_once(
                    exe,
                    meta["ytid"],
                    work,
                    start_s=meta["start_s"],
                    end_s=meta["end_s"],
                    mode=d["download"],
                    ffmpeg=ffmpeg,
                    cookies=cookies,
                    timeout=float(d["timeout_s"]),
                    extra_args=d["ytdlp_args"],
                    url_template=d["url_template"],
                    archive=str(self.archive),
                )
                if self.cancelled.is_set():  # killed by cancel(): not an outcome to keep
                    raise Cancelled(meta["id"])
                if result.status == "rate_limited":
                    self.rate_limited(meta)
                if result.status not in ytdlp.RETRIED:
                    break
            state = {
                "ytid": meta["ytid"],
                "start_s": meta["start_s"],
                "end_s": meta["end_s"],
                "status": result.status,
                "reason": result.reason,
                "attempts": previous + attempts,
                # seconds waited before each retry of this run: the backoff, as it was followed
                "waits_s": waits,
                "file": None,
                "sha256": None,
            }
            if result.status in ytdlp.RETRIED:
                state["status"] = "transient"
                state["reason"] = f"gave up after {attempts} attempts; last: {result.reason}"
            if result.status == "bot_check" and attempts:
                self.stop_on_bot_check(meta, result.reason)
            if result.status == "downloaded":
                self.downloaded()
                self.raw_dir.mkdir(parents=True, exist_ok=True)
                raw = self.raw_dir / f"{meta['id']}{result.file.suffix}"
                os.replace(result.file, raw)
                state |= {"file": raw.name, "sha256": file_sha256(raw)}
            write_json(self._state_path(meta["id"]), state)
            return state
        finally:
            shutil.rmtree(work, ignore_errors=True)
            if float(d["sleep_s"]) > 0:
                self.stop.wait(float(d["sleep_s"]))

    def cancel(self) -> None:
        """Interrupted: stop every worker and end the yt-dlp calls in flight; record nothing."""
        self.cancelled.set()
        self.stop.set()
        ytdlp.kill_running()

    def stop_on_bot_check(self, meta: dict, reason: str) -> None:
        with self.lock:
            if self.stop.is_set():
                return
            self.stop_reason = f"row {meta['row'] + 1} (ytid {meta['ytid']}): {reason}"
            self.stop.set()
        log(
            f"BOT CHECK: YouTube stopped the downloads at {self.stop_reason}. The shard stops "
            f"early; the clips not yet downloaded keep status bot_check. {BOT_CHECK_ADVICE}"
        )

    def not_attempted(self) -> str:
        return f"not attempted: the shard stopped after a bot check at {self.stop_reason}"


def backoff_delay(base: float, attempt: int) -> float:
    """Seconds to wait after failed try number `attempt`: base * 2^(attempt-1), jittered +-25%."""
    return base * 2 ** (attempt - 1) * random.uniform(0.75, 1.25)


def _local_musiccaps_file(audio_dir: Path, ytid: str) -> Path | None:
    for ext in musiccaps.AUDIO_EXTENSIONS:
        for suffix in (ext, ext.upper()):
            path = audio_dir / f"{ytid}{suffix}"
            if path.is_file():
                return path
    return None


class ShardProcessor:
    def __init__(self, data: dict, sample_rate: int, data_dir: Path, audio_dir: Path | None = None):
        self.data = settings(data)
        self.source = self.data["source"]
        self.data_dir = Path(data_dir)
        audio_dir = self.data_dir / "audio" if audio_dir is None else audio_dir
        self.writer = ClipWriter(self.data, sample_rate, audio_dir, find_ffmpeg())
        self.downloader = (
            Downloader(self.data, self.data_dir) if self.source == "musiccaps" else None
        )

    def one(self, meta: dict) -> dict:
        row = _manifest_row(meta, self.source)
        if meta.get("error"):
            return row | {"status": "unavailable", "reason": meta["error"]}
        if self.source == "musiccaps":
            state = self.downloader.fetch(meta)
            row["attempts"] = int(state.get("attempts") or 0)
            if state["status"] != "downloaded":
                return row | {"status": state["status"], "reason": state["reason"]}
            return self.writer.finish(row, self.data_dir / "raw" / state["file"])
        audio_dir = Path(self.data["audio_dir"])
        if meta.get("file"):
            src = audio_dir / meta["file"]
            src = src if src.is_file() else None
            wanted = meta["file"]
        else:
            src = _local_musiccaps_file(audio_dir, meta["ytid"])
            wanted = f"{meta['ytid']}.{{wav,flac,mp3,ogg}}"
        if src is None:
            return row | {"status": "missing", "reason": f"no file {wanted} in data.audio_dir"}
        row["attempts"] = 1
        return self.writer.finish(row, src, slice_full_length=not meta.get("file"))

    def run(self, rows: list[dict], label: str = "clips") -> list[dict]:
        from tqdm import tqdm

        out: list[dict | None] = [None] * len(rows)
        workers = max(1, min(int(self.data["workers"]), len(rows) or 1))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="clip") as pool:
            futures = {pool.submit(self.one, meta): i for i, meta in enumerate(rows)}
            try:
                with tqdm(
                    total=len(rows), desc=label, unit="clip", file=sys.stderr, mininterval=2.0
                ) as bar:
                    for future in as_completed(futures):
                        i = futures[future]
                        out[i] = future.result()
                        if out[i]["status"] != "ok":
                            tqdm.write(
                                f"{out[i]['id']}: {out[i]['status']}: {out[i]['reason']}",
                                file=sys.stdout,
                            )
                        bar.update()
            except BaseException:
                if self.downloader is not None:
                    self.downloader.cancel()
                pool.shutdown(wait=True, cancel_futures=True)
                raise
        if self.downloader is not None:
            try:
                self.downloader.tmp_dir.rmdir()  # only when no other shard is using it
            except OSError:
                pass
        return out


# ---------------------------------------------------------------------------------------------
# demo


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
    clip_provenance = provenance.content_provenance({"data": config, "sample_rate": sample_rate})
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


# ---------------------------------------------------------------------------------------------
# shards and the manifest


def _table(rows: list[dict], data: dict, sample_rate: int, **extra) -> pa.Table:
    table = pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)
    meta = provenance.parquet_metadata(
        {"data": data, "sample_rate": sample_rate}, stage="data", source=data["source"], **extra
    )
    return table.replace_schema_metadata(meta)


def process_rows(
    data: dict, rows: list[dict], sample_rate: int, data_dir: Path, label="clips", audio_dir=None
):
    """Manifest rows for metadata rows, and the downloader (None unless source musiccaps).
    Clips go to audio_dir (default data_dir/audio)."""
    processor = ShardProcessor(data, sample_rate, data_dir, audio_dir)
    started = time.monotonic()
    out = processor.run(rows, label)
    dl = processor.downloader
    calls = f"; yt-dlp calls {dl.calls}, clips settled in earlier runs {dl.reused}" if dl else ""
    log(f"{label}: {len(out)} clips in {time.monotonic() - started:.1f} s{calls}")
    return out, dl


def _stopped_to_fail(dl, data: dict) -> bool:
    return dl is not None and dl.stop.is_set() and settings(data)["on_bot_check"] == "fail"


def _check_bot_stop(dl, data: dict) -> None:
    """With a bot check: raise (on_bot_check fail; the output is not written) or warn (record)."""
    if dl is not None and dl.stop.is_set():
        message = (
            f"the shard stopped early after a bot check at {dl.stop_reason}. {BOT_CHECK_ADVICE}"
        )
        if settings(data)["on_bot_check"] == "fail":
            raise BotCheckStop(message)
        print(f"WARNING: {message}", file=sys.stderr, flush=True)


def build_shard(
    data: dict,
    sample_rate: int,
    out: Path,
    *,
    metadata: Path | None,
    shard: int,
    shards: int,
    data_dir: Path,
    audio_dir: Path | None = None,
) -> pa.Table:
    """One shard of the manifest; its clips go to audio_dir (default data_dir/audio). The
    workflow gives each shard a folder of its own, a declared output, so that the clips travel
    with it where jobs share no filesystem (docs/cloud.md)."""
    data = settings(data)
    audio_dir = Path(data_dir) / "audio" if audio_dir is None else Path(audio_dir)
    audio_dir.mkdir(parents=True, exist_ok=True)  # a declared output, even when no clip passes
    if data["source"] == "demo":
        rows = demo_rows(data, audio_dir, sample_rate)
        dl = None
    else:
        meta_rows = pq.read_table(metadata).to_pylist()
        lo, hi = musiccaps.shard_bounds(len(meta_rows), shard, shards, int(data["shard_size"]))
        label = f"shard {shard} rows {lo}-{hi}"
        rows, dl = process_rows(data, meta_rows[lo:hi], sample_rate, data_dir, label, audio_dir)
    table = _table(rows, data, sample_rate, shard=shard)
    if not _stopped_to_fail(dl, data):
        write_parquet(out, table)
    _check_bot_stop(dl, data)
    return table


def summarise(table: pa.Table) -> str:
    rows = table.select(["status", "duration"]).to_pylist()
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    minutes = sum(r["duration"] or 0 for r in rows if r["status"] == "ok") / 60
    by_status = ", ".join(f"{s} {n}" for s, n in sorted(counts.items()))
    return f"{table.num_rows} clips ({by_status}); {minutes:.1f} minutes of audio kept"


def gather_clips(rows: list[dict], shard_audio: Path, audio_dir: Path, shard: Path) -> list[dict]:
    """The shard's ok clips, checked against their recorded sha256 and hard-linked (else
    copied) from its own folder into audio_dir, the one folder of clips that later stages and
    users read (results/data/audio/<id>.wav); the rows with their new paths."""
    gathered = []
    for row in rows:
        if row["status"] == "ok" and row.get("path"):
            src = Path(shard_audio) / Path(row["path"]).name
            verify_file(src, row.get("sha256"), record=shard, rule="data_shard")
            dst = Path(audio_dir) / src.name
            link_or_copy(src, dst)
            row = row | {"path": str(dst)}
        gathered.append(row)
    return gathered


def merge_shards(
    data: dict, sample_rate: int, shard_paths, out: Path, audio_dir=None, shard_audio=()
) -> pa.Table:
    """The shards concatenated into the manifest; with audio_dir, each shard's clips (from its
    folder in shard_audio, in the order of shard_paths) gathered into audio_dir."""
    if audio_dir is not None and len(shard_audio) != len(shard_paths):
        raise ValueError(
            f"manifest: {len(shard_paths)} shards but {len(shard_audio)} shard audio folders"
        )
    rows = []
    for i, path in enumerate(shard_paths):
        shard_rows = pq.read_table(path, schema=MANIFEST_SCHEMA).to_pylist()
        if audio_dir is not None:
            Path(audio_dir).mkdir(parents=True, exist_ok=True)  # declared, even with no clip
            shard_rows = gather_clips(shard_rows, shard_audio[i], audio_dir, path)
        rows += shard_rows
    ids = [r["id"] for r in rows]
    if len(set(ids)) != len(ids):
        raise ValueError("manifest: the shards repeat a clip id; rerun the data shards")
    table = _table(rows, settings(data), sample_rate, shards=len(shard_paths))
    write_parquet(out, table)
    log(f"manifest: {summarise(table)} -> {out}")
    return table


def build_manifest(config: dict, sample_rate: int, out: Path, data_dir: Path | None = None):
    """The whole stage in one process (no shards): what tests and benchmarks call."""
    data = settings(config)
    out = Path(out)
    data_dir = Path(data_dir) if data_dir is not None else out.parent
    if data["source"] == "demo":
        rows, dl = demo_rows(data, data_dir / "audio", sample_rate), None
    else:
        rows, dl = process_rows(data, load_metadata(data), sample_rate, data_dir)
    table = _table(rows, data, sample_rate)
    if not _stopped_to_fail(dl, data):
        write_parquet(out, table)
        log(f"manifest: {summarise(table)} -> {out}")
    _check_bot_stop(dl, data)
    return table


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name, help_):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--config-json", required=True, help="the `data` config section, as JSON")
        return p

    p = add("metadata", "parse the metadata once into metadata.parquet")
    p.add_argument("--out", type=Path, required=True)
    p = add("shard", "download / validate one shard of the metadata rows")
    p.add_argument("--sample-rate", type=int, required=True, help="the backend's rate")
    p.add_argument("--metadata", type=Path, help="metadata.parquet (not for the demo)")
    p.add_argument("--shard", type=int, required=True)
    p.add_argument("--shards", type=int, required=True)
    p.add_argument("--data-dir", type=Path, required=True, help="results/data")
    p.add_argument("--audio-dir", type=Path, help="the shard's clips (default DATA_DIR/audio)")
    p.add_argument("--out", type=Path, required=True)
    p = add("manifest", "concatenate the shards into the manifest")
    p.add_argument("--sample-rate", type=int, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--audio-dir", type=Path, help="gather the shards' clips into this folder")
    p.add_argument(
        "--shard-audio", type=Path, nargs="*", default=[], help="each shard's clip folder"
    )
    p.add_argument("shards", type=Path, nargs="*")
    p = add("all", "the whole stage in one process")
    p.add_argument("--sample-rate", type=int, required=True)
    p.add_argument("--out", type=Path, required=True, help="manifest.parquet to write")
    args = parser.parse_args(argv)
    data = json.loads(args.config_json)
    # Snakemake ends a job with SIGTERM: unwind as for Ctrl-C, so that yt-dlp calls in flight are
    # ended too and every clip that settled stays recorded.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        if args.command == "metadata":
            write_metadata(data, args.out)
        elif args.command == "shard":
            table = build_shard(
                data,
                args.sample_rate,
                args.out,
                metadata=args.metadata,
                shard=args.shard,
                shards=args.shards,
                data_dir=args.data_dir,
                audio_dir=args.audio_dir,
            )
            log(f"shard {args.shard}: {summarise(table)} -> {args.out}")
        elif args.command == "manifest":
            merge_shards(
                data, args.sample_rate, args.shards, args.out, args.audio_dir, args.shard_audio
            )
        else:
            build_manifest(data, args.sample_rate, args.out)
    except (DataStageError, musiccaps.MetadataError, FileNotFoundError) as exc:
        print(f"ERROR: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(3) from None
