"""The smoke DAG with no shared filesystem: every file through S3 (moto's server on localhost),
each job in a fresh empty folder (tests/fake_pod.py under Snakemake's cluster-sync executor), as
on Kubernetes with profiles/kubernetes. docs/cloud.md, "Object storage"."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, TINY_BACKEND, copy_workflow, run_snakemake, save_base, write_clip_store
from moto_s3 import CREDENTIALS, keys, moto_server, s3_client
from test_train_resume import ADAPTER, CAPTIONS, SCHEME, TRAIN

BUCKET = "eisbach-smoke"
PREFIX = "smoke"
POD = REPO / "tests" / "fake_pod.py"
# the rules of config/test.yaml's DAG; `all` runs in the main process
RULES = {
    "data_shard": 1,
    "manifest": 1,
    "latents": 1,
    "pretrain_base": 1,
    "finetune": 6,
    "sample_run": 7,
    "sample_index": 1,
    "evaluate": 1,
    "figures": 1,
    "report_html": 1,
}
N_SAMPLES = 7 * 3 * 2  # base + 6 sampled runs, x (2 prompts + 1 eval caption) x 2 seeds


def storage_args(url: str, *extra: str) -> list[str]:
    return [
        "--executor",
        "cluster-sync",
        "--cluster-sync-submit-cmd",
        f"{sys.executable} {POD}",
        "--jobs",
        "2",
        "--configfile",
        "config/test.yaml",
        "--default-storage-provider",
        "s3",
        "--default-storage-prefix",
        f"s3://{BUCKET}/{PREFIX}",
        "--shared-fs-usage",
        "none",
        "--storage-s3-endpoint-url",
        url,
        *extra,
    ]


def pods(record) -> list[dict]:
    if not record.exists():
        return []
    return [json.loads(line) for line in record.read_text().splitlines()]


@pytest.fixture(scope="module")
def s3_run(tmp_path_factory):
    """The whole smoke DAG through the bucket; yields (workdir, url, record of pods)."""
    root = tmp_path_factory.mktemp("s3")
    (root / "main").mkdir()
    workdir = copy_workflow(root / "main")
    record = root / "pods.jsonl"
    env_before = dict(os.environ)
    os.environ.update(CREDENTIALS, FAKE_POD_SOURCES=str(workdir), FAKE_POD_RECORD=str(record))
    try:
        with moto_server(BUCKET) as url:
            result = run_snakemake(workdir, *storage_args(url), timeout=3600)
            assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-6000:]
            yield workdir, url, record
    finally:
        os.environ.clear()
        os.environ.update(env_before)


@pytest.mark.slow
def test_smoke_dag_runs_end_to_end_through_s3(s3_run):
    workdir, url, record = s3_run
    ran = pods(record)
    counts = {rule: sum(1 for p in ran if p["rule"] == rule) for rule in RULES}
    assert counts == RULES, counts
    assert all(p["rc"] == 0 for p in ran)
    # what each pod left: storage's local copies and the work folders of its own job
    for pod in ran:
        for path in pod["files"]:
            assert path.startswith(".snakemake/"), (pod["rule"], path)
    assert not (workdir / "results").exists(), "the main process wrote results locally"

    objects = keys(s3_client(url), BUCKET, f"{PREFIX}/results/")
    names = {k.removeprefix(f"{PREFIX}/") for k in objects}
    for name in (
        "results/metrics/summary.json",
        "results/report/index.html",
        "results/latents/tiny/latents_manifest.json",
        "results/latents/tiny/text/text.parquet",
        "results/samples/index.parquet",
    ):
        assert name in names, name
    shards = [n for n in names if re.fullmatch(r"results/latents/tiny/part-\d{5}\.parquet", n)]
    assert len(shards) == 3  # 8 clips, 3 rows per shard
    wavs = [n for n in names if re.fullmatch(r"results/samples/[^/]+/[a-z0-9_-]+-s\d+\.wav", n)]
    assert len(wavs) == N_SAMPLES
    clips = [n for n in names if re.fullmatch(r"results/data/audio/[^/]+\.wav", n)]
    assert len(clips) == 8  # gathered by the manifest job from the shard's own folder
    shard_clips = [n for n in names if re.fullmatch(r"results/data/shards/audio-0/[^/]+\.wav", n)]
    assert len(shard_clips) == 8
    assert all(objects[f"{PREFIX}/{n}"] > 1000 for n in shards + wavs + clips)
    summary = json.loads(
        s3_client(url)
        .get_object(Bucket=BUCKET, Key=f"{PREFIX}/results/metrics/summary.json")["Body"]
        .read()
    )
    assert summary["claims"]


@pytest.mark.slow
def test_second_invocation_through_s3_reruns_nothing(s3_run):
    workdir, url, record = s3_run
    before = len(pods(record))
    again = run_snakemake(workdir, *storage_args(url), timeout=600)
    assert again.returncode == 0, again.stderr[-4000:]
    assert "Nothing to be done" in again.stdout + again.stderr, again.stderr[-3000:]
    assert len(pods(record)) == before


@pytest.mark.slow
def test_flipped_byte_in_the_bucket_fails_the_reader_naming_it(s3_run):
    """After the reruns-nothing check: a byte of a latent shard flipped in the bucket, and the
    sampling job that downloads the store stops on its sha256, naming the shard and its record.
    """
    workdir, url, record = s3_run
    client = s3_client(url)
    key = f"{PREFIX}/results/latents/tiny/part-00000.parquet"
    body = bytearray(client.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    body[len(body) // 2] ^= 0xFF
    client.put_object(Bucket=BUCKET, Key=key, Body=bytes(body))
    before = len(pods(record))
    target = "results/samples/base-tiny"
    result = run_snakemake(
        workdir, *storage_args(url, "--forcerun", "sample_run", "--", target), timeout=600
    )
    out = result.stdout + result.stderr
    assert result.returncode != 0, out[-3000:]
    # the flipped object is newer than the base, so the first reader may be pretrain_base
    ran = pods(record)[before:]
    assert ran and ran[-1]["rule"] in ("pretrain_base", "sample_run") and ran[-1]["rc"] != 0
    assert re.search(r"part-00000\.parquet: sha256 \w+\.\.\. differs from \w+\.\.\.", out), out[
        -4000:
    ]
    assert "latents_manifest.json" in out and "rule `latents`" in out


def test_a_folder_uploaded_after_the_dags_check_reads_as_present(tmp_path, monkeypatch):
    """The storage plugin's bug that eisbach.s3_directories works around, and the fix: the main
    process checks a directory() output before the job (absent), a pod uploads it, and the
    plugin must then see it."""
    import logging

    import snakemake_storage_plugin_s3 as plugin

    from eisbach.s3_directories import remember_only_folders_found

    # undone after the test, whichever is_dir this process has now
    monkeypatch.setattr(plugin.StorageObject, "is_dir", plugin.StorageObject.is_dir)
    with moto_server(BUCKET) as url:
        settings = plugin.StorageProviderSettings(
            endpoint_url=url, access_key=CREDENTIALS["AWS_ACCESS_KEY_ID"], secret_key="testing"
        )
        provider = plugin.StorageProvider(
            local_prefix=tmp_path / "local", logger=logging.getLogger(__name__), settings=settings
        )

        def folder(name):
            query = f"s3://{BUCKET}/{name}"
            return plugin.StorageObject(query, keep_local=False, retrieve=True, provider=provider)

        before, after = folder("a/samples"), folder("b/samples")
        assert not before.exists() and not after.exists()  # the DAG's check, before the jobs
        for name in ("a", "b"):  # what the pods upload
            s3_client(url).put_object(Bucket=BUCKET, Key=f"{name}/samples/x.wav", Body=b"RIFF")
        if not getattr(plugin.StorageObject.is_dir, "rechecks_missing_folders", False):
            assert not before.exists(), "fixed upstream: drop eisbach/s3_directories.py"
        assert remember_only_folders_found()
        assert after.exists() and after.is_dir()


# --- preemption: checkpoints in the bucket ---------------------------------------------------

# the fine-tune of tests/test_train_resume.py, run as its job would run it
FINETUNE = REPO / "tests" / "test_train_resume.py"


def launch(root: Path, out: Path, store: str | None = None) -> subprocess.Popen:
    argv = [sys.executable, str(FINETUNE), "--root", str(root), "--out", str(out)]
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return subprocess.Popen(
        argv + (["--checkpoint-store", store] if store else []),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=400)
    assert proc.returncode == 0, out[-4000:]
    return out


@pytest.mark.slow
def test_preempted_finetune_resumes_from_the_bucket_byte_identical(tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    from eisbach.backends import get_backend
    from eisbach.grid import run_id

    backend = get_backend("tiny", TINY_BACKEND, tmp_path / "latents")
    backend.build_text_encoder(CAPTIONS)
    save_base(backend, tmp_path / "base")
    write_clip_store(
        backend,
        tmp_path / "latents",
        CAPTIONS,
        [4000 + 800 * i for i in range(6)],
        rows_per_shard=4,
        row_group_rows=2,
    )
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    bucket, prefix = "eisbach-ckpt", "paper/checkpoints"
    store = f"s3://{bucket}/{prefix}"
    rid = run_id(SCHEME, ADAPTER, 0)
    with moto_server(bucket) as url:
        monkeypatch.setenv("AWS_ENDPOINT_URL", url)
        client = s3_client(url)
        full = launch(tmp_path, tmp_path / "full")  # uninterrupted, local checkpoints only
        victim = launch(tmp_path, tmp_path / "node-a" / "run", store)
        deadline = time.monotonic() + 300
        while f"{prefix}/{rid}/last.pt" not in keys(client, bucket, prefix):
            if victim.poll() is not None:
                pytest.fail("the run ended before its first checkpoint:\n" + victim.stdout.read())
            assert time.monotonic() < deadline, "no checkpoint in the bucket after 300 s"
            time.sleep(0.01)
        victim.send_signal(signal.SIGKILL)
        victim.communicate(timeout=60)
        assert not (tmp_path / "node-a" / "run" / "adapter_model.safetensors").exists()
        shutil.rmtree(tmp_path / "node-a")  # the preempted node and its disk are gone
        resumed_out = finish(launch(tmp_path, tmp_path / "node-b" / "run", store))
        finish(full)
        left = keys(client, bucket, prefix)
    assert f"checkpoint from {store}/{rid}/last.pt" in resumed_out
    step = json.loads((tmp_path / "node-b/run/run.json").read_text())["resumed_from_step"]
    assert 0 < step < TRAIN["steps"] and f"resuming from step {step}" in resumed_out
    full_dir, resumed_dir = tmp_path / "full", tmp_path / "node-b" / "run"
    adapter = "adapter_model.safetensors"
    assert (full_dir / adapter).read_bytes() == (resumed_dir / adapter).read_bytes()
    log = [pq.read_table(d / "train_log.parquet").to_pylist() for d in (full_dir, resumed_dir)]
    assert log[0] == log[1] and len(log[0]) == TRAIN["steps"] * TRAIN["batch_size"]
    assert left == {}, "a finished run leaves its checkpoints in the bucket"


def test_docs_give_the_command_these_tests_run():
    """docs/cloud.md's storage command is storage_args() (the interpreter and port aside)."""
    import shlex

    text = (REPO / "docs" / "cloud.md").read_text()
    block = re.search(r"```bash\n(snakemake --executor cluster-sync.*?)```", text, re.S).group(1)
    documented = shlex.split(block.replace("\\\n", " "))
    ours = storage_args("http://127.0.0.1:PORT")
    ours[ours.index("--cluster-sync-submit-cmd") + 1] = "python tests/fake_pod.py"
    assert documented == ["snakemake", *ours]
