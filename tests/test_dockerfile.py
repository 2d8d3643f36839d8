"""The Dockerfile, checked without a Docker engine: hadolint, and its parsed instructions."""

import re
import shutil
import subprocess

import pytest
import yaml
from conftest import REPO
from dockerfile_parse import DockerfileParser

HADOLINT = shutil.which("hadolint") or str(REPO / ".venv/bin/hadolint")


@pytest.fixture(scope="module")
def parser():
    return DockerfileParser(path=str(REPO / "Dockerfile"))


def stages(parser) -> list[list[dict]]:
    """The instructions of each stage, in order."""
    out: list[list[dict]] = []
    for ins in parser.structure:
        if ins["instruction"] == "FROM":
            out.append([])
        if out:
            out[-1].append(ins)
    return out


def values(stage, instruction) -> list[str]:
    return [i["value"] for i in stage if i["instruction"] == instruction]


def hadolint(*args: str) -> subprocess.CompletedProcess:
    # cwd outside the repo: hadolint reads a .hadolint.yaml from its working directory
    return subprocess.run(
        [HADOLINT, *args, str(REPO / "Dockerfile")],
        capture_output=True,
        text=True,
        cwd=REPO.parent,
    )


def test_hadolint_is_clean():
    result = hadolint("--config", str(REPO / ".hadolint.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_ignores_only_what_it_needs():
    ignored = yaml.safe_load((REPO / ".hadolint.yaml").read_text())["ignored"]
    result = hadolint("--no-color", "--config", "/dev/null")
    found = set(re.findall(r" (DL\d+|SC\d+) ", result.stdout))
    assert found == set(ignored), result.stdout


def test_base_images_pinned_by_digest(parser):
    for stage in stages(parser):
        image = values(stage, "FROM")[0].split()[0]
        assert image.startswith("nvidia/cuda:12.8.1-runtime-ubuntu22.04@sha256:"), image


def test_multi_stage_keeps_build_tools_out_of_the_image(parser):
    build, final = stages(parser)
    assert values(build, "FROM")[0].endswith(" AS build")
    build_runs = " ".join(values(build, "RUN"))
    final_runs = " ".join(values(final, "RUN"))
    for tool in ("git", "python3-pip"):
        assert re.search(rf"install .*\b{tool}\b", build_runs)
        assert not re.search(rf"\b{tool}\b", final_runs), tool
    assert "gnupg" not in build_runs + final_runs and "add-apt-repository" not in build_runs
    copied = values(final, "COPY")
    for path in ("/opt/python", "/app/.venv", "/app/.venv-musicnn"):
        assert any(c.startswith("--from=build ") and c.split()[1] == path for c in copied), path


def test_installs_from_the_locks_hash_checked(parser):
    build, _ = stages(parser)
    runs = values(build, "RUN")
    uv_boot = next(r for r in runs if "pip install" in r and "uv" in r)
    assert "--require-hashes" in uv_boot and "envs/requirements.lock" in uv_boot
    assert re.search(
        r"^uv==\S+ \\\n\s+--hash=sha256:", (REPO / "envs/requirements.lock").read_text(), re.M
    )
    sync = " ".join(r for r in runs if "pip sync" in r)
    for lock in ("envs/requirements.lock", "envs/musicnn.lock"):
        assert f"--require-hashes {lock}" in sync, lock
    env = " ".join(values(build, "ENV"))
    assert "UV_COMPILE_BYTECODE=1" in env  # bytecode compiled at build time
    assert (REPO / "envs/requirements.lock").read_text().count("--hash=sha256:") > 100


def test_uv_block_cut_from_the_lock_is_exactly_its_entry(tmp_path):
    """The awk program of the Dockerfile, run on the real lock."""
    text = (REPO / "Dockerfile").read_text()
    program = re.search(r"awk '([^']+)' envs/requirements.lock", text).group(1)
    out = subprocess.run(
        ["awk", program, str(REPO / "envs/requirements.lock")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    lines = out.splitlines()
    assert lines[0].startswith("uv==") and lines[0].endswith("\\")
    hashes = [line for line in lines if "--hash=sha256:" in line]
    assert len(hashes) >= 10  # one per wheel
    assert all(line.startswith(("uv==", " ")) for line in lines)  # no other package


def test_final_image_labels_volumes_and_user(parser):
    _, final = stages(parser)
    labels = " ".join(values(final, "LABEL"))
    for key in ("title", "description", "version", "revision", "licenses", "base.name"):
        assert f"org.opencontainers.image.{key}=" in labels, key
    volumes = " ".join(values(final, "VOLUME"))
    assert "/app/results" in volumes and "/data/hf" in volumes
    env = " ".join(values(final, "ENV"))
    assert "HF_HOME=/data/hf" in env and "HF_TOKEN" not in env  # the token only at run time
    users = values(final, "USER")
    assert users and users[-1].split(":")[0] not in ("root", "0")
    # the job user owns the volumes' mount points, not the environment it runs
    assert not any("--chown" in c for c in values(final, "COPY"))
    assert "chown 10001:10001 /app /app/results /app/.snakemake /data/hf" in " ".join(
        values(final, "RUN")
    )
    # Snakemake's state is a volume beside the results, so a --rm container keeps it
    assert "/app/.snakemake" in volumes


def test_image_holds_what_the_paper_dag_needs(parser):
    _, final = stages(parser)
    copied = " ".join(values(final, "COPY"))
    # benchmarks/: scripts/gpu_check.sh runs benchmarks/weight_overhead.py in the image
    for path in (
        "Snakefile",
        "workflow/",
        "config/",
        "scripts/",
        "eisbach/",
        "profiles/",
        "benchmarks/",
    ):
        assert path in copied, path
    lines = (REPO / ".dockerignore").read_text().splitlines()
    ignored = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    for path in (".venv", "results", ".git", ".snakemake"):
        assert path in ignored, path
    for path in ("Snakefile", "workflow", "config", "scripts", "eisbach", "envs", "profiles"):
        assert path not in ignored, path
    assert "benchmarks" not in ignored and "site.yaml" in ignored  # the site file is mounted
    cmd = values(final, "CMD")[-1]
    assert '"config/paper.yaml", "site.yaml"' in cmd
    paper = yaml.safe_load((REPO / "config/paper.yaml").read_text())
    # weights copied into results/base/, never links out of the results volume into HF_HOME
    assert paper["backend"]["copy_base"] is True


def test_revision_is_required_and_recorded(parser, tmp_path):
    """No default REVISION: the build stops unless it is a full commit, which the image keeps as
    EISBACH_GIT_COMMIT for provenance (the image has no .git)."""
    _, final = stages(parser)
    assert "REVISION" in values(final, "ARG")  # declared without a default
    check = next(r for r in values(final, "RUN") if "REVISION" in r)
    for revision, ok in (("", False), ("unknown", False), ("abc123", False), ("a" * 40, True)):
        result = subprocess.run(
            ["sh", "-c", check],
            env={"REVISION": revision, "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
        )
        assert (result.returncode == 0) == ok, (revision, result.stderr)
    assert "EISBACH_GIT_COMMIT=${REVISION}" in " ".join(values(final, "ENV"))


def test_provenance_reads_the_baked_commit_without_git(tmp_path):
    """A copy of the package with no .git beside it, as in the image, records the build's
    commit."""
    import shutil as sh
    import sys

    sh.copytree(REPO / "eisbach", tmp_path / "eisbach")
    commit = "0123456789abcdef0123456789abcdef01234567"
    out = subprocess.run(
        [sys.executable, "-c", "from eisbach.provenance import git_commit; print(git_commit())"],
        cwd=tmp_path,
        env={
            "EISBACH_GIT_COMMIT": commit,
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": str(tmp_path),
            "GIT_CEILING_DIRECTORIES": str(tmp_path.parent),
        },
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert out == commit


def test_image_and_host_install_the_same_stable_audio_3(parser):
    """One pin (envs/stable-audio-3.txt) for the image and scripts/setup_sa3.sh (make
    setup-paper), equal to the backend's SA3_COMMIT."""
    from eisbach.backends.stable_audio_3 import SA3_COMMIT

    build, _ = stages(parser)
    assert any("-r envs/stable-audio-3.txt" in r for r in values(build, "RUN"))
    pin = (REPO / "envs/stable-audio-3.txt").read_text()
    assert re.search(
        rf"^stable-audio-3 @ git\+https://github.com/Stability-AI/stable-audio-3@{SA3_COMMIT}$",
        pin,
        re.M,
    )
    assert "envs/stable-audio-3.txt" in (REPO / "scripts/setup_sa3.sh").read_text()
    assert "scripts/setup_sa3.sh" in (REPO / "Makefile").read_text()
