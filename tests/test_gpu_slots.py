"""One GPU per job on one machine (eisbach.gpu_slots), with a fake device count.

A real ``snakemake --cores N --resources gpu=G`` runs jobs that start their interpreter through
``python -m eisbach.gpu_slots --gpus {resources.gpu} --``, as the workflow's GPU rules do, over a
pool of 3 fake devices (EISBACH_GPU_POOL). Each job records the CUDA_VISIBLE_DEVICES it sees and
when it ran: every job sees as many devices as it declares, and no two jobs that ran at the same
time saw a device in common. The project's own rules are checked to start that way.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, SNAKEMAKE, run_snakemake

from eisbach import gpu_slots

RECORD = """
import json, os, sys, time
start = time.time()
time.sleep(float(sys.argv[2]))
json.dump({"visible": os.environ["CUDA_VISIBLE_DEVICES"], "start": start, "end": time.time()},
          open(sys.argv[1], "w"))
"""

SNAKEFILE = """
import sys
shell.prefix("set -euo pipefail; ")
JOBS = {"a": 1, "b": 1, "c": 1, "d": 1, "e": 2, "f": 1, "g": 2, "h": 0}

rule all:
    input: expand("out/{job}.json", job=JOBS)

rule job:
    output: "out/{job}.json"
    resources: gpu=lambda wildcards: JOBS[wildcards.job]
    params: python=sys.executable
    shell: "{params.python} -m eisbach.gpu_slots --gpus {resources.gpu} -- record.py {output} 1.5"
"""


def run_jobs(tmp_path: Path, resources_gpu: int) -> dict:
    (tmp_path / "Snakefile").write_text(SNAKEFILE)
    (tmp_path / "record.py").write_text(RECORD)
    env = dict(
        os.environ,
        PYTHONPATH=str(REPO),
        EISBACH_GPU_POOL="0,1,2",
        EISBACH_GPU_LOCK_DIR=str(tmp_path / "locks"),
    )
    result = subprocess.run(
        [*SNAKEMAKE, "--cores", "8", "--resources", f"gpu={resources_gpu}", "--quiet", "all"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return {p.stem: json.loads(p.read_text()) for p in (tmp_path / "out").glob("*.json")}


def check_no_sharing(records: dict) -> int:
    """Asserts the slots; returns the most jobs that held devices at once."""
    declared = {"a": 1, "b": 1, "c": 1, "d": 1, "e": 2, "f": 1, "g": 2, "h": 0}
    assert records.keys() == declared.keys()
    devices = {job: [d for d in r["visible"].split(",") if d] for job, r in records.items()}
    for job, n in declared.items():
        assert len(devices[job]) == n and len(set(devices[job])) == n, (job, devices[job])
        assert set(devices[job]) <= {"0", "1", "2"}
    most = 0
    for job, r in records.items():
        overlapping = [
            other
            for other, o in records.items()
            if other != job and o["start"] < r["end"] and r["start"] < o["end"]
        ]
        for other in overlapping:
            shared = set(devices[job]) & set(devices[other])
            assert not shared, f"{job} and {other} ran at once on GPU {shared}"
        if devices[job]:
            most = max(most, 1 + sum(1 for other in overlapping if devices[other]))
    return most


@pytest.mark.slow
def test_snakemake_jobs_each_get_their_own_device(tmp_path):
    records = run_jobs(tmp_path, resources_gpu=3)
    assert check_no_sharing(records) >= 2, "no two GPU jobs ran at once: the test shows nothing"


@pytest.mark.slow
def test_the_locks_alone_keep_jobs_apart_when_more_gpus_are_declared(tmp_path):
    """--resources gpu=6 over 3 devices: Snakemake starts more GPU jobs than there are devices,
    and the slots make the extra ones wait instead of sharing."""
    records = run_jobs(tmp_path, resources_gpu=6)
    assert check_no_sharing(records) >= 2


def test_pool_from_device_nodes_environment_and_override(tmp_path):
    for name in ("nvidia0", "nvidia1", "nvidia3", "nvidiactl", "nvidia-uvm", "nvidia-modeset"):
        (tmp_path / name).touch()
    # a container numbers what it sees from 0, whatever the nodes are called
    assert gpu_slots.device_pool({}, dev=tmp_path) == ["0", "1", "2"]
    assert gpu_slots.device_pool({"CUDA_VISIBLE_DEVICES": "4,5"}, dev=tmp_path) == ["4", "5"]
    env = {"CUDA_VISIBLE_DEVICES": "4,5", "EISBACH_GPU_POOL": "1, 2"}
    assert gpu_slots.device_pool(env, dev=tmp_path) == ["1", "2"]
    assert gpu_slots.device_pool({}, dev=tmp_path / "none") == []


def test_job_environment(tmp_path):
    base = {"EISBACH_GPU_POOL": "0,1", "EISBACH_GPU_LOCK_DIR": str(tmp_path)}
    env, fds = gpu_slots.job_environment(0, base)
    assert env["CUDA_VISIBLE_DEVICES"] == "" and not fds  # a CPU job sees no GPU
    env, fds = gpu_slots.job_environment(2, base)
    assert env["CUDA_VISIBLE_DEVICES"] == "0,1" and env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    # both taken: a third job gets none until they are released
    assert gpu_slots.try_acquire(["0", "1"], 1, tmp_path) is None
    os.close(fds[1])
    devices, more = gpu_slots.try_acquire(["0", "1"], 1, tmp_path)
    assert devices == ["1"]
    for fd in [fds[0], *more]:
        os.close(fd)
    with pytest.raises(SystemExit, match="declares 3 GPUs, but this machine's pool has 2"):
        gpu_slots.job_environment(3, base)
    off = base | {"EISBACH_GPU_SLOTS": "off", "CUDA_VISIBLE_DEVICES": "7"}
    assert gpu_slots.job_environment(1, off) == (off, [])


def test_lock_dir_is_per_user_and_per_slurm_job(tmp_path):
    uid = os.getuid()
    assert gpu_slots.lock_dir({}) == Path(f"/tmp/eisbach-gpu-slots-{uid}")
    assert gpu_slots.lock_dir({"SLURM_JOB_ID": "42"}) == Path(f"/tmp/eisbach-gpu-slots-{uid}-42")
    assert gpu_slots.lock_dir({"EISBACH_GPU_LOCK_DIR": str(tmp_path)}) == tmp_path


def test_a_killed_job_frees_its_slot(tmp_path):
    env = dict(
        os.environ,
        PYTHONPATH=str(REPO),
        EISBACH_GPU_POOL="0",
        EISBACH_GPU_LOCK_DIR=str(tmp_path),
    )
    cmd = [sys.executable, "-m", "eisbach.gpu_slots", "--gpus", "1", "--", "-c"]
    holder = subprocess.Popen(
        [*cmd, "import time; print('held', flush=True); time.sleep(60)"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    assert gpu_slots.try_acquire(["0"], 1, tmp_path) is None  # the exec'd job holds it
    holder.kill()
    holder.wait(timeout=30)
    devices, fds = gpu_slots.try_acquire(["0"], 1, tmp_path)
    assert devices == ["0"]
    os.close(fds[0])


def test_the_workflows_gpu_rules_start_through_the_slots(workflow_copy):
    result = run_snakemake(workflow_copy, "-n", "-p", "--forceall", "--cores", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [ln for ln in result.stdout.splitlines() if "scripts/" in ln]
    for script in ("latents.py", "train.py base", "train.py adapter", "sample.py run"):
        started = [ln for ln in lines if f"scripts/{script}" in ln]
        assert started, script
        for line in started:
            command = line.strip().removeprefix("Shell command: ")
            assert command.startswith("python -m eisbach.gpu_slots --gpus 0 -- "), command
    assert not any("gpu_slots" in ln for ln in lines if "scripts/evaluate.py" in ln)
