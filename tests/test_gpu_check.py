"""scripts/gpu_check.sh on CPU (--device cpu --small: the GPU path end to end on a 2-layer model),
and scripts/cloud_cost.py reading its result. No GPU is lent to this project's tests: what the
GPU run measures is in docs/cloud.md only once it has run on one."""

import json
import os
import subprocess
import sys

import pytest
import yaml
from conftest import REPO

from eisbach import cloud


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    env = dict(os.environ, PYTHON=sys.executable, PYTHONPATH=str(REPO))
    result = subprocess.run(
        ["bash", str(REPO / "scripts/gpu_check.sh"), "--device", "cpu", "--small", "--out", out],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out, result.stdout


@pytest.mark.slow
def test_small_cpu_run_writes_the_environment_and_the_benchmark(small_run):
    out, stdout = small_run
    env = json.loads((out / "env.json").read_text())
    assert env["device"] == "cpu" and env["torch"].startswith("2.9.1")
    bench = json.loads((out / "weight_overhead.json").read_text())
    assert bench["preset"] == "sa3-medium" and bench["device"] == "cpu"
    assert bench["shape"]["depth"] == 2 and bench["shape"]["io_channels"] == 256
    for mode in ("none", "none+log", "eisbach"):
        assert bench["median_step_s"][mode] > 0 and bench["tokens_per_s"][mode] > 0
        assert 0 < bench["mfu"][mode] < 1
    assert bench["flops_per_step"] > 0
    assert "cost estimate is skipped" in stdout
    assert not (out / "cloud_cost.json").exists()


@pytest.mark.slow
def test_cost_refuses_a_cpu_or_small_result(small_run):
    out, _ = small_run
    with pytest.raises(SystemExit, match="not the sa3-medium shape on a GPU"):
        cloud.measured_mfu(json.loads((out / "weight_overhead.json").read_text()))


def test_cost_uses_a_measured_mfu(tmp_path):
    """A result of the GPU shape (the fields weight_overhead.py writes on CUDA): the estimate
    takes its MFU for both columns, and a higher MFU costs less."""
    result = {
        "preset": "sa3-medium",
        "device": "NVIDIA H200",
        "shape": dict(cloud.SA3_MEDIUM, frames=108, batch=4),
        "mfu": {"none": 0.11, "none+log": 0.105, "eisbach": 0.10},
    }
    assert cloud.measured_mfu(result) == 0.10
    config = yaml.safe_load((REPO / "config/paper.yaml").read_text())
    n = 1_400_000_000
    at_10 = cloud.estimate(config, n, mfu=0.10)
    assert at_10["mfu"] == {"low": 0.10, "high": 0.10}
    at_2 = cloud.estimate(config, n, mfu=0.02)
    assert at_10["total_gpu_hours"]["low"] < at_2["total_gpu_hours"]["low"]
    without_mfu = dict(result)
    del without_mfu["mfu"]
    with pytest.raises(SystemExit, match="no MFU"):
        cloud.measured_mfu(without_mfu)


def test_estimate_counts_the_flops_it_states():
    """The training row by hand: 4 N per token for batch x frames x steps, plus the held-out
    loss's forward passes (2 N per token over eval clips x timesteps)."""
    config = yaml.safe_load((REPO / "config/paper.yaml").read_text())
    n = 1_000_000_000
    est = cloud.estimate(config, n)
    a = cloud.ASSUMPTIONS
    frames = a.clip_seconds * cloud.LATENT_RATE
    train = 4 * n * frames * 4 * 1000 + 2 * n * frames * a.eval_clips * 5
    row = next(r for r in est["stages"] if r["stage"] == "finetune")
    assert row["tflop_per_job"] == pytest.approx(train / 1e12)
    assert row["jobs"] == 192
    minutes = train / (a.peak_tflops * 1e12 * a.mfu_low) / 60 + a.overhead_min_per_gpu_job
    assert row["job_minutes_low"] == pytest.approx(minutes)
    assert est["total_usd"]["low"] == pytest.approx(
        est["total_gpu_hours"]["low"] * a.usd_per_gpu_hour
    )
