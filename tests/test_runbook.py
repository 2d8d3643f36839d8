"""The runbook's two steps that run apart from the GPU machine: the data stage built on one
machine and picked up by another without rerunning (make data), and the host install of
stable_audio_3 from the image's pin (make setup-paper)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import OWN_MAKE_ENV, REPO, copy_workflow, run_snakemake

SHARED = REPO.parent / "shared"
WHEEL = SHARED / "wheels" / "stable_audio_3-0.1.0-py3-none-any.whl"
DATA_RULES = ("data_metadata", "data_shard", "manifest")


def make_data_argv() -> list[str]:
    """What `make data` runs, read from the Makefile, for the CI profile."""
    out = (
        subprocess.run(
            [
                "make",
                "-n",
                "--no-print-directory",
                "-o",
                "setup",
                "data",
                "PROFILE=config/test.yaml",
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
            env=OWN_MAKE_ENV,
        )
        .stdout.strip()
        .splitlines()
    )
    (line,) = out
    argv = line.split()
    assert argv[0].endswith("snakemake") and "--until" in argv and "manifest" in argv
    return argv[1:]


def planned_rules(result) -> set[str]:
    out = result.stdout + result.stderr
    return {
        line.split()[0]
        for line in out.splitlines()
        if line.split() and line.split()[0] in DATA_RULES
    }


@pytest.mark.slow
def test_data_built_elsewhere_is_not_rebuilt(tmp_path):
    (tmp_path / "cpu").mkdir()
    cpu = copy_workflow(tmp_path / "cpu")
    (cpu / "site.yaml").write_text("{}\n")  # the tiny backend needs no weights
    args = make_data_argv()
    built = run_snakemake(cpu, *args, timeout=900)
    assert built.returncode == 0, built.stderr[-3000:]
    manifest = cpu / "results" / "data" / "manifest.parquet"
    assert manifest.exists() and not (cpu / "results" / "latents").exists()

    (tmp_path / "gpu").mkdir()
    gpu = copy_workflow(tmp_path / "gpu")
    (gpu / "site.yaml").write_text("{}\n")
    # rsync -a: the data folder alone, mtimes kept, none of the CPU machine's .snakemake/
    shutil.copytree(cpu / "results" / "data", gpu / "results" / "data", copy_function=shutil.copy2)
    plan = run_snakemake(gpu, "-n", "--cores", "1", "--configfile", "config/test.yaml", "site.yaml")
    assert plan.returncode == 0, plan.stderr[-3000:]
    assert planned_rules(plan) == set(), (plan.stdout + plan.stderr)[-3000:]
    assert "latents" in plan.stdout + plan.stderr


def test_setup_paper_installs_the_pinned_stable_audio_3(tmp_path):
    """scripts/setup_sa3.sh with the offline wheel of the pinned commit, into a fresh env."""
    if not SHARED.exists():
        pytest.skip("../shared is absent, so there is no stable_audio_3 wheel to install")
    uv = Path(sys.executable).with_name("uv")
    subprocess.run(
        [str(uv), "venv", "-q", "--python", sys.executable, str(tmp_path / "env")], check=True
    )
    env_python = tmp_path / "env" / "bin" / "python"
    result = subprocess.run(
        ["bash", "scripts/setup_sa3.sh"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={
            "PATH": "/usr/bin:/bin",
            "VENV_PYTHON": str(env_python),
            "UV": str(uv),
            "SA3_SOURCE": str(WHEEL),
            "HOME": str(tmp_path),
        },
    )
    assert result.returncode == 0, result.stderr
    assert "stable-audio-3 0.1.0" in result.stdout
    dists = subprocess.run(
        [
            str(env_python),
            "-c",
            "import json, importlib.metadata as m; print(json.dumps(sorted(d.metadata['Name'] for d in m.distributions())))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert json.loads(dists) == ["stable-audio-3"]  # --no-deps: none of its conflicting pins
