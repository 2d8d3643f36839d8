"""Seconds per rule of one Snakemake run of the workflow: where the demo's minutes go.

Reads the run's log (the newest ``.snakemake/log/*.snakemake.log`` of the working directory, or
``--log``): every job's start and finish time, so its wall seconds, and the run's wall time from
its first job to its last. Where the rules declare ``benchmark:`` files
(``results/benchmarks/<rule>/*.tsv``, Snakemake's format) it also reads each job's CPU seconds
(user + sys of the job's processes), which the load of other processes on a shared machine
moves much less than wall time. Prints one line per rule (jobs, total, mean and max seconds,
CPU seconds) and the run's wall time and its sum of job seconds.

    python benchmarks/demo_profile.py                      # in the workflow's directory
    python benchmarks/demo_profile.py --workdir /tmp/demo-wt --json profile.json
"""

from __future__ import annotations

import argparse
import csv
import json
import re
from datetime import datetime
from pathlib import Path

STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
RULE = re.compile(r"^(?:local)?rule (\w+):$")
JOBID = re.compile(r"^\s+jobid: (\d+)$")
FINISHED = re.compile(r"^Finished jobid: (\d+) \(Rule: (\w+)\)$")


def _stamp(text: str) -> datetime:
    return datetime.strptime(" ".join(text.split()), "%a %b %d %H:%M:%S %Y")


def parse_log(path: Path) -> list[dict]:
    """Jobs of one Snakemake log: {jobid, rule, start, end, seconds} (end None if unfinished)."""
    jobs: dict[int, dict] = {}
    now = None
    pending_rule = None
    for line in path.read_text(errors="replace").splitlines():
        if m := STAMP.match(line):
            now = _stamp(m.group(1))
        elif m := RULE.match(line):
            pending_rule = (m.group(1), now)
        elif (m := JOBID.match(line)) and pending_rule is not None:
            rule, start = pending_rule
            jobs[int(m.group(1))] = {"jobid": int(m.group(1)), "rule": rule, "start": start}
            pending_rule = None
        elif m := FINISHED.match(line):
            job = jobs.get(int(m.group(1)))
            if job is not None:
                job["end"] = now
    out = []
    for job in jobs.values():
        end = job.get("end")
        job["seconds"] = (end - job["start"]).total_seconds() if end else None
        out.append(job)
    return sorted(out, key=lambda j: j["start"])


def read_benchmarks(root: Path) -> dict[str, list[dict]]:
    """rule -> rows of its Snakemake benchmark TSVs (s, cpu_time, max_rss, ...)."""
    rules: dict[str, list[dict]] = {}
    for tsv in sorted(root.glob("*/*.tsv")):
        with tsv.open() as fh:
            for row in csv.DictReader(fh, delimiter="\t"):
                rules.setdefault(tsv.parent.name, []).append(row | {"file": str(tsv)})
    return rules


def _float(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def profile(workdir: Path, log: Path | None = None) -> dict:
    if log is None:
        logs = sorted((workdir / ".snakemake" / "log").glob("*.snakemake.log"))
        if not logs:
            raise SystemExit(f"no Snakemake log under {workdir / '.snakemake' / 'log'}")
        log = logs[-1]
    jobs = [j for j in parse_log(log) if j["rule"] != "all"]
    bench = read_benchmarks(workdir / "results" / "benchmarks")
    rules: dict[str, dict] = {}
    for job in jobs:
        entry = rules.setdefault(job["rule"], {"jobs": 0, "seconds": [], "unfinished": 0})
        entry["jobs"] += 1
        if job["seconds"] is None:
            entry["unfinished"] += 1
        else:
            entry["seconds"].append(job["seconds"])
    for rule, rows in bench.items():
        entry = rules.setdefault(rule, {"jobs": 0, "seconds": [], "unfinished": 0})
        cpu = [c for c in (_float(r.get("cpu_time")) for r in rows) if c is not None]
        entry["cpu_seconds"] = cpu
        entry["bench_seconds"] = [s for s in (_float(r.get("s")) for r in rows) if s is not None]
    stamps = [j["start"] for j in jobs] + [j["end"] for j in jobs if j.get("end")]
    wall = (max(stamps) - min(stamps)).total_seconds() if stamps else 0.0
    return {
        "log": str(log),
        "wall_seconds": wall,
        "job_seconds": sum(sum(r["seconds"]) for r in rules.values()),
        "rules": rules,
    }


def format_profile(result: dict) -> str:
    lines = [
        f"log: {result['log']}",
        f"{'rule':<16}{'jobs':>5}{'total s':>10}{'mean s':>9}{'max s':>8}{'cpu s':>9}",
    ]
    order = sorted(result["rules"].items(), key=lambda kv: -sum(kv[1]["seconds"]))
    for rule, r in order:
        s = r["seconds"]
        cpu = r.get("cpu_seconds")
        lines.append(
            f"{rule:<16}{r['jobs']:>5}{sum(s):>10.0f}"
            f"{(sum(s) / len(s) if s else float('nan')):>9.1f}{(max(s) if s else float('nan')):>8.0f}"
            + (f"{sum(cpu):>9.0f}" if cpu else f"{'-':>9}")
            + (f"  ({r['unfinished']} unfinished)" if r["unfinished"] else "")
        )
    lines.append(
        f"run wall {result['wall_seconds']:.0f} s (first job start to last job end); "
        f"sum of job seconds {result['job_seconds']:.0f} s"
    )
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workdir", type=Path, default=Path("."))
    parser.add_argument("--log", type=Path, help="a Snakemake log (default: the newest)")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args(argv)
    result = profile(args.workdir, args.log)
    print(format_profile(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))
    return result


if __name__ == "__main__":
    main()
