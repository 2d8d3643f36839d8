import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
# The tiny backend at its smallest: unit tests build it in a second.
TINY_BACKEND = {
    "name": "tiny",
    "sample_rate": 16000,
    "tiny": {
        "n_mels": 16,
        "n_fft": 256,
        "hop_length": 128,
        "latent_offset": -4.5,
        "latent_scale": 3.0,
        "griffin_lim_iters": 4,
        "max_text_tokens": 8,
        "cond_dim": 16,
        "text_seed": 7,
        "embed_dim": 32,
        "depth": 1,
        "num_heads": 1,
        "max_frames": 64,
    },
}

WORKFLOW_FILES = ("Snakefile", "workflow", "config", "scripts", "envs")


def copy_workflow(dest: Path) -> Path:
    """A copy of the workflow in dest, so a test's results/ never touches the checkout's."""
    for name in WORKFLOW_FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name)
        else:
            shutil.copy2(src, dest / name)
    return dest


def run_snakemake(workdir: Path, *args: str, timeout: int = 1800) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [*SNAKEMAKE, *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


@pytest.fixture
def workflow_copy(tmp_path):
    return copy_workflow(tmp_path)
