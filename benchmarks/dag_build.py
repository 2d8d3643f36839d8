"""DAG-build time of the paper profile over the real MusicCaps metadata (goal: <= 15 s).

Runs `snakemake -n --configfile config/paper.yaml --config data={source: musiccaps,
musiccaps_csv: CSV}` in a fresh copy of the workflow (so that no lock or metadata of the checkout
is touched), times each run from process start to exit, and reports the median with the number of
data shards and jobs in the DAG. The shard count comes from the CSV's row count at parse time.

    python benchmarks/dag_build.py                              # ../shared/data/musiccaps-public.csv
    python benchmarks/dag_build.py --csv my.csv --repeats 5 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CSV = REPO.parent / "shared" / "data" / "musiccaps-public.csv"
GOAL_S = 15.0
sys.path.insert(0, str(REPO / "tests"))
from conftest import copy_workflow  # noqa: E402  (the test suite's copy of the workflow)


def job_counts(text: str) -> dict[str, int]:
    """The 'Job stats' table of a dry run as {rule: count}."""
    counts = {}
    for line in text.split("Job stats:", 1)[-1].splitlines():
        match = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if match:
            counts[match.group(1)] = int(match.group(2))
    return counts


def dry_run(workdir: Path, csv_path: Path, configfile: str) -> tuple[float, dict[str, int]]:
    argv = [
        sys.executable,
        "-m",
        "snakemake",
        "-n",
        "--cores",
        "1",
        "--configfile",
        configfile,
        "--config",
        f"data={{source: musiccaps, musiccaps_csv: {csv_path}}}",
    ]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    started = time.perf_counter()
    proc = subprocess.run(argv, cwd=workdir, capture_output=True, text=True, env=env, timeout=600)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"snakemake -n failed:\n{proc.stderr[-3000:]}")
    return elapsed, job_counts(proc.stdout + proc.stderr)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--csv", type=Path, default=DEFAULT_CSV, help="MusicCaps metadata CSV")
    parser.add_argument("--configfile", default="config/paper.yaml")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args(argv)
    if not args.csv.is_file():
        raise SystemExit(f"{args.csv}: no such file (the real MusicCaps CSV lives in ../shared)")
    csv_path = args.csv.resolve()
    from eisbach.musiccaps import count_csv_rows

    with tempfile.TemporaryDirectory(prefix="eisbach-dag-") as tmp:
        workdir = copy_workflow(Path(tmp))
        times, counts = [], {}
        for _ in range(args.repeats):
            elapsed, counts = dry_run(workdir, csv_path, args.configfile)
            times.append(elapsed)
    result = {
        "csv_rows": count_csv_rows(csv_path),
        "data_shards": counts.get("data_shard"),
        "jobs": counts.get("total"),
        "seconds": [round(t, 2) for t in times],
        "median_s": round(statistics.median(times), 2),
        "goal_s": GOAL_S,
    }
    result["meets_goal"] = result["median_s"] <= GOAL_S
    print(
        f"snakemake -n over {result['csv_rows']} clips: {result['data_shards']} data shards, "
        f"{result['jobs']} jobs; median {result['median_s']:.2f} s of {args.repeats} runs "
        f"{result['seconds']} (goal <= {GOAL_S:g} s: {'met' if result['meets_goal'] else 'MISSED'})"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
