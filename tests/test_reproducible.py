"""Byte-for-byte reproducible artefacts (issue 24): nothing an artefact holds comes from the
clock, the process's hash seed or a random salt, and two clean runs of the smoke DAG in two
clones give the same sha256 for every file under results/ but the documented exceptions
(eisbach.result_hashes.EXCLUDED, and the run records' wall-clock fields)."""

import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from conftest import REPO, copy_workflow, run_snakemake

from eisbach import provenance, result_hashes
from eisbach.atomic import write_parquet
from eisbach.metrics import METRICS, Analysis
from eisbach.score_cache import ScoreCache


# --- the source date ----------------------------------------------------------------------------
def test_the_date_is_source_date_epoch_when_set(monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1780272000")
    assert provenance.source_date_utc() == "2026-06-01T00:00:00Z"
    assert provenance.provenance({"x": 1})["source_date_utc"] == "2026-06-01T00:00:00Z"
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(ValueError, match="SOURCE_DATE_EPOCH='yesterday'"):
        provenance.source_date_utc()


def test_the_date_is_the_commit_time_otherwise(monkeypatch):
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    seconds = subprocess.run(
        ["git", "-C", str(REPO), "log", "-1", "--format=%ct"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    expected = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(seconds)))
    assert provenance.source_date_utc() == expected


def test_a_record_does_not_read_the_clock(monkeypatch):
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    first = provenance.provenance({"x": 1})
    monkeypatch.setattr(time, "time", lambda: 4e9)  # 2096
    assert provenance.provenance({"x": 1}) == first
    assert set(first) == {"config_hash", "git_commit", "packages", "source_date_utc"}


def test_parquet_metadata_holds_no_date_and_a_table_is_the_same_bytes(tmp_path, monkeypatch):
    table = pa.table({"x": [1.0, 2.0]})
    digests = []
    for i, epoch in enumerate(("1767225600", "1780272000")):
        monkeypatch.setenv("SOURCE_DATE_EPOCH", epoch)
        meta = provenance.parquet_metadata({"x": 1}, stage="test")
        assert not any(b"date" in k or b"created" in k for k in meta), meta.keys()
        assert b"eisbach.git_commit" in meta and b"eisbach.config_hash" in meta
        write_parquet(tmp_path / f"{i}.parquet", table.replace_schema_metadata(meta))
        digests.append(provenance.file_sha256(tmp_path / f"{i}.parquet"))
    assert digests[0] == digests[1]


# --- figures, cache entries, adapter configs ----------------------------------------------------
def test_a_figure_is_the_same_bytes_every_time(tmp_path):
    import matplotlib.pyplot as plt

    from eisbach.figures import save_figure

    record = provenance.provenance({"x": 1}) | {"source_date_utc": "2026-06-01T00:00:00Z"}
    digests = []
    for i in range(2):
        fig, ax = plt.subplots()
        ax.plot([0, 1, 2], [1, 0, 1], marker="o")  # markers and clip paths get hashed ids
        ax.set_title("a figure")
        paths = save_figure(fig, tmp_path / f"fig{i}", record)
        digests.append([provenance.file_sha256(p) for p in paths])
        time.sleep(1.1)  # a second later: a clock in the file would show
    assert digests[0] == digests[1]
    svg = (tmp_path / "fig0.svg").read_text()
    assert "<dc:date>2026-06-01T00:00:00Z</dc:date>" in svg
    description = svg[svg.index("<dc:description>") : svg.index("</dc:description>")]
    assert record["config_hash"] in description and record["git_commit"] in description


def test_a_cache_entry_is_the_same_bytes_at_any_time(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    analysis = Analysis({m: float(rng.random()) for m in METRICS}, rng.random((64, 64)), None)
    digests = []
    for i, now in enumerate((1.0e9, 2.0e9)):
        monkeypatch.setattr(zipfile.time, "time", lambda now=now: now)
        cache = ScoreCache(tmp_path / str(i))
        cache.put("ab" * 32, analysis)
        digests.append(provenance.file_sha256(cache.path("ab" * 32)))
    assert digests[0] == digests[1]


SAVE_ADAPTER = """
import sys, torch
from pathlib import Path
from eisbach import adapters
torch.manual_seed(0)
dit = torch.nn.Sequential(*(torch.nn.Linear(8, 8) for _ in range(12)))
names = [str(i) for i in range(12)]
model = adapters.attach(dit, {"type": "lora", "rank": 2, "alpha": 2}, names, seed=0)
adapters.save(model, Path(sys.argv[1]))
"""


def test_adapter_config_lists_target_modules_in_one_order(tmp_path):
    """peft keeps target_modules as a set, whose order follows the process's string hash seed."""
    configs = []
    for seed in ("1", "2", "3"):
        out = tmp_path / seed
        out.mkdir()
        env = dict(os.environ, PYTHONHASHSEED=seed, PYTHONPATH=str(REPO))
        subprocess.run(
            [sys.executable, "-c", SAVE_ADAPTER, str(out)], check=True, env=env, timeout=300
        )
        configs.append((out / "adapter_config.json").read_bytes())
    assert configs[0] == configs[1] == configs[2]
    modules = json.loads(configs[0])["target_modules"]
    assert modules == sorted(modules) and len(modules) == 12


# --- the resume fingerprint ---------------------------------------------------------------------
def test_the_code_digest_covers_the_lock_scripts_and_workflow(tmp_path):
    files = {
        "eisbach/stage.py": "x = 1\n",
        "envs/requirements.lock": "torch==2.9.1 --hash=sha256:aa\n",
        "scripts/stage.py": "main()\n",
        "Snakefile": "include: 'workflow/rules/stage.smk'\n",
        "workflow/rules/stage.smk": "rule stage:\n",
        "workflow/schemas/config.schema.yaml": "type: object\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    base = provenance.code_digest(tmp_path)
    for rel in files:
        (tmp_path / rel).write_text(files[rel] + "# edited\n")
        provenance.code_digest.cache_clear()
        assert provenance.code_digest(tmp_path) != base, rel
        (tmp_path / rel).write_text(files[rel])
    # bytecode, results and config are not code
    for rel in ("scripts/__pycache__/stage.cpython-311.pyc", "results/x.json", "config/a.yaml"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("anything")
    provenance.code_digest.cache_clear()
    assert provenance.code_digest(tmp_path) == base
    assert provenance.code_digest() == provenance.code_digest(REPO)


# --- the hash list ------------------------------------------------------------------------------
def test_the_hash_list_skips_logs_and_benchmarks_and_the_run_records_clock(tmp_path):
    def tree(root: Path, seconds: float, log: str):
        for rel, text in {
            "results/metrics/summary.json": '{"a": 1}',
            "results/logs/evaluate/evaluate.log": log,
            "results/benchmarks/evaluate/evaluate.tsv": log,
            "results/runs/r/run.json": json.dumps({"seed": 0, "seconds": seconds}),
        }.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text(text)

    tree(tmp_path / "a", 1.5, "took 1.5 s")
    tree(tmp_path / "b", 9.0, "took 9 s")
    a, b = (result_hashes.artefact_hashes(tmp_path / n) for n in "ab")
    assert a == b and sorted(a) == ["results/metrics/summary.json", "results/runs/r/run.json"]
    (tmp_path / "b/results/runs/r/run.json").write_text('{"seed": 1, "seconds": 9.0}')
    b = result_hashes.artefact_hashes(tmp_path / "b")
    assert result_hashes.differences(a, b) == ["differs: results/runs/r/run.json"]
    assert result_hashes.parse_lines(result_hashes.format_lines(a)) == a


# --- two clean runs in two clones ---------------------------------------------------------------
def hash_list(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "scripts/result_hashes.py", *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        timeout=300,
    )


@pytest.mark.slow
def test_two_clean_runs_in_two_clones_give_the_same_artefacts(smoke_run, tmp_path):
    """The session's smoke run, and a second clean one in another folder (a space and a ü in
    its path): every file under results/ has the same sha256, but logs, benchmark timings and
    the wall-clock fields of each run record."""
    assert "SOURCE_DATE_EPOCH" not in os.environ  # the dates come from the commit
    (tmp_path / "clone two ü").mkdir()
    second = copy_workflow(tmp_path / "clone two ü")
    result = run_snakemake(second, "--cores", "2", "--configfile", "config/test.yaml")
    assert result.returncode == 0, result.stderr[-5000:]

    first_hashes = result_hashes.artefact_hashes(smoke_run)
    second_hashes = result_hashes.artefact_hashes(second)
    assert len(first_hashes) > 300, len(first_hashes)
    assert result_hashes.differences(first_hashes, second_hashes) == []

    # the same comparison through the script, as on a second machine
    listed = hash_list(smoke_run)
    assert listed.returncode == 0, listed.stderr
    (tmp_path / "hashes.txt").write_text(listed.stdout)
    checked = hash_list(second, "--check", str(tmp_path / "hashes.txt"))
    assert checked.returncode == 0 and "all match" in checked.stdout, checked.stdout[-3000:]
