"""Wall time of the MusicCaps download stage on N clips with the fake yt-dlp, by worker count.

The fake (tests/fake_bin/yt-dlp, put first on PATH) writes a 10-s WAV per clip, as MusicCaps'
clips are, after sleeping --delay seconds that stand for the network; each clip is then validated,
resampled to --sample-rate and written. Every run starts from an empty results folder, so every
clip is downloaded; a last run repeats the first folder to show that a rerun makes no calls.

    python benchmarks/data_download.py                          # 24 clips, workers 1 and 4
    python benchmarks/data_download.py --clips 48 --workers 1,2,4,8 --delay 1.0
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FAKE_BIN = REPO / "tests" / "fake_bin"
VALIDATION = {"min_seconds": 5.0, "silence_rms_db": -60.0, "max_clipped_fraction": 0.01}


def write_csv(path: Path, n: int) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["ytid", "start_s", "end_s", "aspect_list", "caption", "is_audioset_eval"])
        for i in range(n):
            writer.writerow([f"bench{i:06d}", 30, 40, "['bench']", f"clip {i}", i % 2 == 0])


def calls(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=24)
    parser.add_argument("--workers", default="1,4", help="comma-separated worker counts")
    parser.add_argument("--delay", type=float, default=0.5, help="fake network seconds per clip")
    parser.add_argument("--sample-rate", type=int, default=44100)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
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
