"""scripts/gpu_check.sh on CPU (--device cpu --small: the GPU path end to end on a 2-layer model:
training steps, 100-step sampling at cfg 3, the memory estimate), its estimate-only run without
a GPU at SA3 Medium's full size, and scripts/cloud_cost.py reading its result. No GPU is lent to
this project's tests: what the GPU run measures is in docs/cloud.md only once it has run on
one."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
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
def test_small_cpu_run_samples_and_estimates_memory(small_run):
    """The rest of the GPU path: 100-step sampling at cfg 3 with its MFU and peak memory, and
    the memory estimate of the same shape, part by part."""
    out, stdout = small_run
    sampling = json.loads((out / "sampling.json").read_text())
    assert sampling["steps"] == 100 and sampling["cfg_scale"] == 3.0 and sampling["finite"]
    assert sampling["tokens_per_s"] > 0 and 0 < sampling["mfu"] < 1
    assert sampling["peak_memory_gib"] > 0 and sampling["peak_memory_kind"] == "host peak RSS"
    bench = json.loads((out / "weight_overhead.json").read_text())
    assert bench["peak_memory_gib"] > 0
    estimate = json.loads((out / "memory_estimate.json").read_text())
    assert estimate["shape"]["depth"] == 2 and estimate["shape"]["embed_dim"] == 256
    assert "sampling 100 steps at cfg 3" in stdout and "peak memory" in stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present: the script would use it")
def test_without_a_gpu_it_prints_the_full_size_estimate_with_the_venvs_python(tmp_path):
    """No PYTHON set: the checkout's .venv/bin/python, never a bare `python` on PATH (a PATH
    without one here); no GPU: the estimate of one job at SA3 Medium's full size, part by
    part, and nothing trained."""
    if not (REPO / ".venv/bin/python").exists():
        pytest.skip("no .venv in this checkout (make setup)")
    env = {k: v for k, v in os.environ.items() if k != "PYTHON"}
    env |= {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        ["bash", str(REPO / "scripts/gpu_check.sh"), "--out", tmp_path],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "gpu_check: python .venv/bin/python" in result.stdout
    for part in (
        "estimated GPU memory of one finetune job",
        "base weights (fp32)",
        "adapter weights (fp32)",
        "adapter gradients (fp32)",
        "AdamW moments (2 x fp32)",
        "activations for backward (16-bit)",
        "CUDA context and workspace (assumed)",
        "estimated GPU memory of one sample job",
        "24 x 1536",
        "no GPU here: the estimate above only",
    ):
        assert part in result.stdout, part
    estimate = json.loads((tmp_path / "memory_estimate.json").read_text())
    assert estimate["n_base"] == cloud.dit_parameters()  # the cost model's count, 24 layers
    parts = estimate["finetune"]
    assert parts["base weights (fp32)"] == 4 * estimate["n_base"]
    assert parts["AdamW moments (2 x fp32)"] == 2 * parts["adapter weights (fp32)"]
    assert estimate["finetune_gib"] == pytest.approx(sum(parts.values()) / 2**30)
    assert not (tmp_path / "weight_overhead.json").exists()


def test_refuses_to_run_without_the_venvs_python(tmp_path):
    (tmp_path / "scripts").mkdir()
    shutil.copy2(REPO / "scripts/gpu_check.sh", tmp_path / "scripts")
    env = {k: v for k, v in os.environ.items() if k != "PYTHON"}
    result = subprocess.run(
        ["bash", str(tmp_path / "scripts/gpu_check.sh")], capture_output=True, text=True, env=env
    )
    assert result.returncode == 2
    assert "no interpreter at .venv/bin/python: run make setup, or set PYTHON" in result.stderr


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
