"""Wall time of the MusicCaps download stage on N clips, by worker count.

--ytdlp fake (default): the fake (tests/fake_bin/yt-dlp, put first on PATH) writes a 10-s WAV per
clip, as MusicCaps' clips are, after sleeping --delay seconds that stand for the network; each clip
is then validated, resampled to --sample-rate and written.

--ytdlp real: the locked yt-dlp (.venv/bin) cuts each clip with --download-sections from a local
HTTP server on 127.0.0.1 (tests/media_server.py) that serves an AAC file and injects failures of
every class into 45 of the clips (404, 503 once, a dropped connection once, 429 once, 503 three
times; tests/media_server.py BULK_FAULTS), with data.max_attempts 3 and data.backoff_s --backoff.
It reports clips/min: what bounds it here is yt-dlp's own start-up (about 0.8 CPU-s a call), not
the network; YouTube's rate limit (data.sleep_s) bounds a real run far lower.

Every run starts from an empty results folder, so every clip is downloaded; a last run repeats
the first folder to show that a rerun makes no calls (with the real yt-dlp: none for the clips
that settled; the ones that gave up transiently are tried again, as on any rerun).

    python benchmarks/data_download.py                          # 24 clips, workers 1 and 4
    python benchmarks/data_download.py --clips 48 --workers 1,2,4,8 --delay 1.0
    python benchmarks/data_download.py --ytdlp real --clips 200 --workers 1,4
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FAKE_BIN = REPO / "tests" / "fake_bin"
YTDLP = Path(sys.executable).parent / "yt-dlp"
VALIDATION = {"min_seconds": 5.0, "silence_rms_db": -60.0, "max_clipped_fraction": 0.01}


def write_csv(path: Path, n: int) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["ytid", "start_s", "end_s", "aspect_list", "caption", "is_audioset_eval"])
        for i in range(n):
            writer.writerow([f"bench{i:06d}", 30, 40, "['bench']", f"clip {i}", i % 2 == 0])


def calls(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


def real_ytdlp(args) -> dict:
    """The bulk run with the real yt-dlp against the local server, per worker count."""
    sys.path.insert(0, str(REPO / "tests"))
    from media_server import MediaServer, bulk_plan, make_media

    from eisbach.audio_checks import find_ffmpeg
    from eisbach.data import build_manifest

    ytids, faults, expected = bulk_plan(args.clips)
    results = {"clips": args.clips, "ytdlp": str(YTDLP), "wall_s": {}, "clips_per_min": {}}
    with tempfile.TemporaryDirectory(prefix="eisbach-dl-real-") as tmp:
        tmp = Path(tmp)
        make_media(tmp / "song.m4a", find_ffmpeg(), seconds=12.0)
        media = (tmp / "song.m4a").read_bytes()
        with open(tmp / "meta.csv", "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(
                ["ytid", "start_s", "end_s", "aspect_list", "caption", "is_audioset_eval"]
            )
            for i, y in enumerate(ytids):
                writer.writerow([y, 1.0, 2.5, "['bench']", f"clip {i}", i % 2 == 0])
        config = {
            "source": "musiccaps",
            "musiccaps_csv": str(tmp / "meta.csv"),
            "ytdlp": str(YTDLP),
            "max_attempts": 3,
            "backoff_s": args.backoff,
            "validation": VALIDATION | {"min_seconds": 1.0},
        }
        for workers in (int(w) for w in args.workers.split(",")):
            out = tmp / f"w{workers}" / "data" / "manifest.parquet"
            with MediaServer(media, faults) as server:  # each run meets every fault afresh
                cfg = config | {"workers": workers, "url_template": server.url_template}
                started = time.perf_counter()
                table = build_manifest(cfg, args.sample_rate, out)
                wall = time.perf_counter() - started
                got = {r["ytid"]: (r["status"], r["attempts"]) for r in table.to_pylist()}
                assert got == expected, {
                    y: (got[y], expected[y]) for y in got if got[y] != expected[y]
                }
                if workers == int(args.workers.split(",")[0]):
                    # a rerun asks again only for the clips that gave up transiently
                    n = len(server.log())
                    started = time.perf_counter()
                    build_manifest(cfg, args.sample_rate, out)
                    results["rerun_s"] = round(time.perf_counter() - started, 2)
                    again = {r.name for r in server.log()[n:]}
                    results["rerun_clips_asked"] = len(again)
                    results["rerun_settled_asked"] = sum(got[y][0] != "transient" for y in again)
            results["wall_s"][workers] = round(wall, 2)
            results["clips_per_min"][workers] = round(args.clips / wall * 60, 1)
    first = int(args.workers.split(",")[0])
    base = results["clips_per_min"][first]
    print(f"{args.clips} clips, real yt-dlp against 127.0.0.1, 45 with injected failures:")
    for workers, rate in results["clips_per_min"].items():
        print(
            f"  {workers} worker(s): {results['wall_s'][workers]:7.1f} s, {rate:6.1f} clips/min"
            f"  (x{rate / base:.2f} against {first})"
        )
    print(
        f"  rerun: {results['rerun_s']:.2f} s; clips asked for again: "
        f"{results['rerun_clips_asked']} (those that gave up transiently), of which settled "
        f"before: {results['rerun_settled_asked']}"
    )
    return results


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ytdlp", choices=["fake", "real"], default="fake")
    parser.add_argument("--clips", type=int, help="default 24 (fake), 200 (real)")
    parser.add_argument("--workers", default="1,4", help="comma-separated worker counts")
    parser.add_argument("--delay", type=float, default=0.5, help="fake network seconds per clip")
    parser.add_argument("--backoff", type=float, default=0.5, help="real: data.backoff_s")
    parser.add_argument("--sample-rate", type=int, default=44100)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    args.clips = args.clips or (200 if args.ytdlp == "real" else 24)
    if args.ytdlp == "real":
        results = real_ytdlp(args)
        if args.json:
            args.json.write_text(json.dumps(results, indent=2) + "\n")
        return results
    from eisbach.data import build_manifest

    results = {"clips": args.clips, "delay_s": args.delay, "wall_s": {}}
    with tempfile.TemporaryDirectory(prefix="eisbach-dl-") as tmp:
        tmp = Path(tmp)
        write_csv(tmp / "meta.csv", args.clips)
        log = tmp / "calls.jsonl"
        os.environ["PATH"] = f"{FAKE_BIN}{os.pathsep}{os.environ['PATH']}"
        os.environ["FAKE_YTDLP_LOG"] = str(log)
        os.environ["FAKE_YTDLP_DELAY"] = str(args.delay)
        os.environ.pop("FAKE_YTDLP_BEHAVIOUR", None)
        config = {
            "source": "musiccaps",
            "musiccaps_csv": str(tmp / "meta.csv"),
            "max_attempts": 2,
            "backoff_s": 0.1,
            "validation": VALIDATION,
        }
        for workers in (int(w) for w in args.workers.split(",")):
            before = calls(log)
            out = tmp / f"w{workers}" / "data" / "manifest.parquet"
            started = time.perf_counter()
            table = build_manifest(config | {"workers": workers}, args.sample_rate, out)
            results["wall_s"][workers] = round(time.perf_counter() - started, 2)
            ok = table["status"].to_pylist().count("ok")
            assert ok == args.clips and calls(log) - before == args.clips, (ok, calls(log))
        first = int(args.workers.split(",")[0])
        before = calls(log)
        started = time.perf_counter()
        build_manifest(
            config | {"workers": first}, args.sample_rate, tmp / f"w{first}/data/manifest.parquet"
        )
        results["rerun_s"] = round(time.perf_counter() - started, 2)
        results["rerun_calls"] = calls(log) - before
    base = results["wall_s"][first]
    print(f"{args.clips} clips, fake network delay {args.delay:g} s/clip:")
    for workers, wall in results["wall_s"].items():
        print(f"  {workers} worker(s): {wall:6.2f} s  (x{base / wall:.2f} against {first})")
    print(f"  rerun: {results['rerun_s']:.2f} s, {results['rerun_calls']} yt-dlp calls")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
