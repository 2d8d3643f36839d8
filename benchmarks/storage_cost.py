"""What object storage costs a run with no shared filesystem: bytes moved per job class, and the
wall time that the storage round trips add, on the smoke DAG (config/test.yaml by default).

In one process it runs the DAG twice, each in a fresh copy of the workflow:

  local   `snakemake --cores 2`: the baseline, one shared folder;
  s3      every file through moto's S3 server on localhost, each job in a fresh empty folder
          (tests/fake_pod.py under the cluster-sync executor, as tests/test_s3_storage.py runs
          it): --default-storage-provider s3 --shared-fs-usage none.

Bytes per job: what the main process lists for it as "retrieve from storage" (downloads) and
"send to storage" (uploads: outputs, log, benchmark record), sized from the bucket (a folder is
the sum of its objects). Time per job class: the pods' seconds, the jobs' own command seconds
(their Snakemake benchmark records, where the rule has one), and the transfers replayed with
boto3 against the same server (every job's downloads fetched, its uploads put back under a
scratch prefix), so that the storage share is measured apart from each pod's Snakemake start.
Everything is on localhost: the replay is a floor set by the client, not a network's figure.

    python benchmarks/storage_cost.py                       # config/test.yaml, 2 jobs at once
    python benchmarks/storage_cost.py --json results/storage_cost.json
    python benchmarks/storage_cost.py --no-local            # the S3 run only
    python benchmarks/storage_cost.py results/samples/base-tiny   # up to the base's samples

docs/cloud.md ("Object storage") turns the per-class bytes into the paper grid's volume with
``paper_volume`` below; every figure it uses that this DAG does not measure is a parameter.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from conftest import copy_workflow  # noqa: E402
from moto_s3 import CREDENTIALS, keys, moto_server, s3_client  # noqa: E402

from eisbach.backends.sa3_medium import MEDIUM_DIT_PARAMETERS, medium_dora_parameters  # noqa: E402

BUCKET, PREFIX = "eisbach-bench", "bench"
JOB = re.compile(r"^(?:local)?rule (\w+):\n((?:    .*\n)+)", re.M)
ITEM = re.compile(r"s3://[^/]+/(\S+) \((retrieve from|send to) storage\)")


def snakemake(workdir: Path, *args: str) -> tuple[float, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        env=env,
    )
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"snakemake {' '.join(args)} failed:\n{result.stderr[-5000:]}")
    return seconds, result.stdout + result.stderr


def jobs_of(output: str) -> list[dict]:
    """rule, downloads and uploads (bucket keys) of each job the main process started."""
    jobs = []
    for rule, block in JOB.findall(output):
        if rule == "all":
            continue
        items = ITEM.findall(block)
        jobs.append(
            {
                "rule": rule,
                "down": [k for k, how in items if how == "retrieve from"],
                "up": [k for k, how in items if how == "send to"],
            }
        )
    return jobs


def sized(objects: dict[str, int], key: str) -> int:
    """An object's size, or a folder's: the sum of the objects below it."""
    if key in objects:
        return objects[key]
    return sum(size for k, size in objects.items() if k.startswith(key.rstrip("/") + "/"))


def members(objects: dict[str, int], key: str) -> list[str]:
    if key in objects:
        return [key]
    return [k for k in objects if k.startswith(key.rstrip("/") + "/")]


def replay(client, objects: dict[str, int], job: dict, scratch: Path) -> float:
    """Seconds to fetch the job's downloads and to put its uploads back (under a scratch
    prefix; each upload's bytes are fetched first, untimed)."""
    local = scratch / "object"
    seconds = 0.0
    for key in sorted({m for k in job["down"] for m in members(objects, k)}):
        started = time.perf_counter()
        client.download_file(BUCKET, key, str(local))
        seconds += time.perf_counter() - started
    for key in sorted({m for k in job["up"] for m in members(objects, k)}):
        client.download_file(BUCKET, key, str(local))
        started = time.perf_counter()
        client.upload_file(str(local), BUCKET, f"replay/{key}")
        seconds += time.perf_counter() - started
    return seconds


def command_seconds(client, objects: dict[str, int], job: dict) -> float | None:
    """The job's own seconds from its Snakemake benchmark record, where the rule has one."""
    record = next((k for k in job["up"] if "/results/benchmarks/" in k), None)
    if record is None or record not in objects:
        return None
    text = client.get_object(Bucket=BUCKET, Key=record)["Body"].read().decode()
    return float(next(csv.DictReader(io.StringIO(text), delimiter="\t"))["s"])


def measure(config: str, jobs: int, local: bool = True, targets: tuple = ()) -> dict:
    root = Path(tempfile.mkdtemp(prefix="storage-cost-"))
    local_s = None
    if local:
        (root / "local").mkdir()
        local_s, _ = snakemake(
            copy_workflow(root / "local"), "--cores", str(jobs), "--configfile", config, *targets
        )

    (root / "s3").mkdir()
    workdir = copy_workflow(root / "s3")
    record = root / "pods.jsonl"
    os.environ.update(CREDENTIALS, FAKE_POD_SOURCES=str(workdir), FAKE_POD_RECORD=str(record))
    pod = REPO / "tests" / "fake_pod.py"
    with moto_server(BUCKET) as url:
        s3_s, output = snakemake(
            workdir,
            *("--executor", "cluster-sync", "--cluster-sync-submit-cmd", f"{sys.executable} {pod}"),
            *("--jobs", str(jobs), "--configfile", config, "--default-storage-provider", "s3"),
            *("--default-storage-prefix", f"s3://{BUCKET}/{PREFIX}", "--shared-fs-usage", "none"),
            *("--storage-s3-endpoint-url", url),
            *targets,
        )
        client = s3_client(url)
        objects = keys(client, BUCKET, f"{PREFIX}/")
        per_rule: dict[str, dict] = defaultdict(
            lambda: {
                "jobs": 0,
                "bytes_down": 0,
                "bytes_up": 0,
                "transfer_s": 0.0,
                "command_s": 0.0,
                "commands_timed": 0,
            }  # fmt: skip
        )
        with tempfile.TemporaryDirectory() as scratch:
            for job in jobs_of(output):
                row = per_rule[job["rule"]]
                row["jobs"] += 1
                row["bytes_down"] += sum(sized(objects, k) for k in job["down"])
                row["bytes_up"] += sum(sized(objects, k) for k in job["up"])
                row["transfer_s"] += replay(client, objects, job, Path(scratch))
                seconds = command_seconds(client, objects, job)
                if seconds is not None:
                    row["command_s"] += seconds
                    row["commands_timed"] += 1
    for pod_run in map(json.loads, record.read_text().splitlines()):
        per_rule[pod_run["rule"]]["pod_s"] = (
            per_rule[pod_run["rule"]].get("pod_s", 0.0) + (pod_run["seconds"])
        )
    transfer = sum(r["transfer_s"] for r in per_rule.values())
    commands = sum(r["command_s"] for r in per_rule.values())
    return {
        "config": config,
        "targets": list(targets) or ["all"],
        "jobs_at_once": jobs,
        "local_wall_s": round(local_s, 1) if local_s else None,
        "s3_wall_s": round(s3_s, 1),
        "s3_over_local": round(s3_s / local_s, 2) if local_s else None,
        "command_s": round(commands, 1),
        "transfer_over_commands": round(transfer / commands, 4),
        "transfer_s": round(transfer, 2),
        "transfer_share_of_s3_wall": round(transfer / s3_s, 4),
        "rules": dict(per_rule),
    }


@dataclass
class PaperSizes:
    """Sizes of the paper grid's files that the smoke DAG cannot measure (docs/cloud.md)."""

    clips: int = 5521  # MusicCaps rows; the download keeps fewer
    clip_mb: float = 0.88  # a 10 s mono 16-bit WAV at 44.1 kHz (the data stage writes mono)
    latent_mb: float = 0.11  # [256, 108] float32 per clip (SAME-L, 10 s)
    text_mb: float = 0.20  # T5Gemma conditioning per caption: 64 tokens x 768 float32 (assumed)
    # SA3 Medium's DiT in bf16 (eisbach.backends.sa3_medium's count); its text encoder and
    # autoencoder come on top when backend.copy_base puts them in results/base
    base_gb: float = 2 * MEDIUM_DIT_PARAMETERS / 1e9
    adapter_mb: float = 4 * medium_dora_parameters(16) / 1e6  # DoRA r16 on its targets, fp32
    sample_mb: float = 1.76  # a 10 s stereo 16-bit WAV at 44.1 kHz
    samples_per_run: int = 80  # 4 prompts and 16 eval captions x 4 seeds
    finetunes: int = 192
    sampled: int = 193  # the base and every run


def paper_volume(s: PaperSizes | None = None) -> list[dict]:
    """GB downloaded and uploaded per job class of the paper grid: each job fetches what it
    reads and sends what it writes, as in the measured DAG."""
    s = s or PaperSizes()
    clips = s.clips * s.clip_mb / 1e3
    store = s.clips * (s.latent_mb + s.text_mb) / 1e3
    base, adapter = s.base_gb, s.adapter_mb / 1e3
    samples = s.sampled * s.samples_per_run * s.sample_mb / 1e3
    rows = [
        ("latents", 1, clips, store),
        ("pretrain_base", 1, store, base),
        ("finetune", s.finetunes, store + base, adapter),
        ("sample_run", s.sampled, store + base + adapter, samples / s.sampled),
        ("evaluate", 1, samples + clips, 0.0),
        ("figures", 1, samples + clips, 0.0),
        ("report_html", 1, samples + clips, samples + clips),
    ]
    return [
        {"rule": r, "jobs": n, "gb_down": round(n * d, 1), "gb_up": round(n * u, 1)}
        for r, n, d, u in rows
    ]


def table(result: dict) -> str:
    lines = [
        "| rule | jobs | MB down | MB up | transfer s (replay) | pod s | command s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for rule, r in result["rules"].items():
        command = f"{r['command_s']:.1f}" if r["commands_timed"] else "n/a"
        lines.append(
            f"| {rule} | {r['jobs']} | {r['bytes_down'] / 1e6:.2f} | {r['bytes_up'] / 1e6:.2f} | "
            f"{r['transfer_s']:.2f} | {r.get('pod_s', 0):.1f} | {command} |"
        )
    local = (
        f"local {result['local_wall_s']} s, "
        if result["local_wall_s"]
        else "local not run (--no-local), "
    )
    lines.append(
        f"\nwall: {local}through S3 {result['s3_wall_s']} s"
        + (f" (x{result['s3_over_local']})" if result["s3_over_local"] else "")
        + f"; transfers replayed {result['transfer_s']} s: "
        f"{100 * result['transfer_share_of_s3_wall']:.1f} % of the S3 run's wall, "
        f"{100 * result['transfer_over_commands']:.1f} % of the jobs' own command seconds "
        f"({result['command_s']} s, the rules with a benchmark record)"
    )
    paper = paper_volume()
    lines += [
        "",
        "paper grid (PaperSizes):",
        "| rule | jobs | GB down | GB up |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {r['rule']} | {r['jobs']} | {r['gb_down']:,} | {r['gb_up']:,} |" for r in paper]
    down, up = sum(r["gb_down"] for r in paper), sum(r["gb_up"] for r in paper)
    lines.append(f"| **total** | | **{down:,.0f}** | **{up:,.0f}** |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--config", default="config/test.yaml")
    parser.add_argument("--jobs", type=int, default=2, help="jobs at once (and local cores)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--no-local",
        action="store_true",
        help="skip the local run: the baseline is then the jobs' own command seconds",
    )
    parser.add_argument(
        "targets", nargs="*", help="a part of the DAG (e.g. results/samples/base-tiny); default all"
    )
    args = parser.parse_args(argv)
    result = measure(args.config, args.jobs, not args.no_local, tuple(args.targets))
    result["paper"] = {"sizes": asdict(PaperSizes()), "volume": paper_volume()}
    print(table(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
