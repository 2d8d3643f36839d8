"""The data stage under Snakemake: shards known at DAG-build time, resume, no leaked cookies.

The DAG over the real 5,521 MusicCaps rows is measured by benchmarks/dag_build.py; its shard
count is checked in test_data_metadata.py.
"""

import collections
import csv
import json
import os
from pathlib import Path

import pyarrow.parquet as pq
import yaml
from conftest import REPO, run_snakemake

FAKE_BIN = Path(__file__).resolve().parent / "fake_bin"


def test_sharded_download_resumes_after_a_bot_check(workflow_copy, monkeypatch):
    work = workflow_copy
    ytids = [f"clip{i:07d}" for i in range(5)]
    with open(work / "meta.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["ytid", "start_s", "end_s", "aspect_list", "caption", "is_audioset_eval"])
        for i, y in enumerate(ytids):
            writer.writerow([y, 0, 3, "['tag']", f"caption {i}", i == 0])
    secret = work / "private-XYZZY" / "cookies.txt"
    secret.parent.mkdir()
    secret.write_text("# Netscape HTTP Cookie File\n")
    config = yaml.safe_load((REPO / "config/test.yaml").read_text())
    config["data"] = {
        "source": "musiccaps",
        "musiccaps_csv": "meta.csv",
        "shard_size": 2,
        "workers": 1,
        "max_attempts": 2,
        "backoff_s": 0.01,
        "cookies": str(secret),
        "validation": {"min_seconds": 1.0, "silence_rms_db": -60.0, "max_clipped_fraction": 0.01},
    }
    (work / "config/data-test.yaml").write_text(yaml.safe_dump(config))
    calls = work / "calls.jsonl"
    behaviour = work / "behaviour.json"
    behaviour.write_text(json.dumps({ytids[2]: "bot", ytids[4]: "private"}))
    monkeypatch.setenv("PATH", f"{FAKE_BIN}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_YTDLP_LOG", str(calls))
    monkeypatch.setenv("FAKE_YTDLP_BEHAVIOUR", str(behaviour))
    args = ["--cores", "2", "-p", "--configfile", "config/data-test.yaml"]
    target = "results/data/manifest.parquet"

    first = run_snakemake(work, target, *args)
    assert first.returncode != 0, "the bot check should stop its shard"
    log = (work / "results/logs/data/shard-1.log").read_text()
    assert "data.cookies" in log and "slow down" in log
    assert not (work / "results/data/shards/shard-1.parquet").exists()

    behaviour.write_text(json.dumps({ytids[4]: "private"}))
    second = run_snakemake(work, target, *args)
    assert second.returncode == 0, second.stderr[-3000:]
    count = collections.Counter(json.loads(line)["ytid"] for line in calls.read_text().splitlines())
    # every clip was asked for once, except the one stopped by the bot check (twice)
    assert count == {y: 2 if y == ytids[2] else 1 for y in ytids}

    rows = pq.read_table(work / target).to_pylist()
    assert [r["ytid"] for r in rows] == ytids
    assert [r["status"] for r in rows] == ["ok", "ok", "ok", "ok", "private"]
    assert rows[0]["split"] == "eval" and rows[1]["split"] == "train"
    assert len(list((work / "results/data/shards").glob("shard-*.parquet"))) == 3

    leaked = [first.stdout, first.stderr, second.stdout, second.stderr]
    leaked += [p.read_text() for p in (work / "results/logs/data").glob("*.log")]
    leaked += [
        p.read_text(errors="replace") for p in (work / ".snakemake").rglob("*") if p.is_file()
    ]
    assert not [text for text in leaked if "XYZZY" in text]
