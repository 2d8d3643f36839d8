"""The Dockerfile, checked without a Docker engine: hadolint, and its parsed instructions."""

import shutil
import subprocess

import pytest
from conftest import REPO
from dockerfile_parse import DockerfileParser


@pytest.fixture(scope="module")
def instructions():
    parser = DockerfileParser(path=str(REPO / "Dockerfile"))
    return parser.structure, parser


def test_hadolint_is_clean():
    hadolint = shutil.which("hadolint") or str(REPO / ".venv/bin/hadolint")
    result = subprocess.run(
        [hadolint, "--config", str(REPO / ".hadolint.yaml"), str(REPO / "Dockerfile")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_base_image_pinned_by_digest(instructions):
    _, parser = instructions
    assert parser.baseimage.startswith("nvidia/cuda:12.8.1-runtime-ubuntu22.04@sha256:")


def test_installs_from_the_lock_and_runs_as_non_root(instructions):
    structure, _ = instructions
    copies = " ".join(i["value"] for i in structure if i["instruction"] == "COPY")
    runs = " ".join(i["value"] for i in structure if i["instruction"] == "RUN")
    assert "envs/" in copies and "scripts/setup_env.sh" in runs
    users = [i["value"] for i in structure if i["instruction"] == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    setup_index = next(n for n, i in enumerate(structure) if "setup_env.sh" in i["value"])
    user_index = max(n for n, i in enumerate(structure) if i["instruction"] == "USER")
    assert user_index < setup_index, "dependencies must be installed as the non-root user"
    assert (REPO / "envs/requirements.lock").read_text().count("--hash=sha256:") > 100
