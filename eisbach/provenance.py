"""Where an artefact came from: config hash, package versions and git commit."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
from datetime import UTC, datetime
from functools import cache
from importlib import metadata
from pathlib import Path

TRACKED_PACKAGES = (
    "torch",
    "torchaudio",
    "stable-audio-tools",
    "peft",
    "snakemake",
    "datasets",
    "pyarrow",
    "numpy",
    "librosa",
    "matplotlib",
    "safetensors",
    "soundfile",
    "pretty_midi",
    "tinysoundfont",
)

REPO_ROOT = Path(__file__).resolve().parent.parent


def file_sha256(path, chunk: int = 1 << 22) -> str:
    """sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def canonical_json(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def config_hash(config) -> str:
    """sha256 of the canonical JSON of the config that determined an artefact (first 16 hex)."""
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()[:16]


def versions_of(names) -> dict[str, str]:
    """Python's version and each named package's ("absent" where one is not installed)."""
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


@cache
def package_versions() -> dict[str, str]:
    return versions_of(TRACKED_PACKAGES)


@cache
def git_commit() -> str:
    """HEAD of the project checkout, with '+dirty' when tracked files differ from it; without a
    checkout, EISBACH_GIT_COMMIT (the Dockerfile's required REVISION)."""
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        # No git or no .git (the container): the commit the image was built from, if any.
        return os.environ.get("EISBACH_GIT_COMMIT") or "unknown"
    return head + ("+dirty" if dirty else "")


def provenance(config) -> dict:
    """The provenance record stored with every artefact."""
    return {
        "config_hash": config_hash(config),
        "git_commit": git_commit(),
        "packages": package_versions(),
        "created_utc": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def content_provenance(config) -> dict:
    """The provenance that goes inside a file whose bytes are hashed (a WAV's comment): no
    timestamp and no git commit, so that identical audio has an identical sha256 on every run
    and commit, and rewriting one clip does not invalidate what was derived from the others.
    The full record, with both, stays in the stage's Parquet metadata."""
    record = provenance(config)
    for key in ("created_utc", "git_commit"):
        record.pop(key)
    return record


@cache
def code_digest() -> str:
    """sha256 (first 16 hex) of the package's Python sources, names and bytes: what a resumed
    training checkpoint must share with the code that resumes it."""
    root = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def parquet_metadata(config, **extra) -> dict[bytes, bytes]:
    """Provenance (and extra keys) as Parquet schema metadata under the ``eisbach.`` prefix."""
    record = provenance(config) | extra
    return {
        f"eisbach.{key}".encode(): (
            value if isinstance(value, str) else canonical_json(value)
        ).encode()
        for key, value in record.items()
    }


def read_parquet_metadata(path) -> dict:
    import pyarrow.parquet as pq

    raw = pq.read_schema(path).metadata or {}
    out = {}
    for key, value in raw.items():
        key = key.decode()
        if key.startswith("eisbach."):
            text = value.decode()
            try:
                out[key.removeprefix("eisbach.")] = json.loads(text)
            except json.JSONDecodeError:
                out[key.removeprefix("eisbach.")] = text
    return out
