"""Where an artefact came from: config hash, package versions and git commit."""

from __future__ import annotations

import hashlib
import json
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


@cache
def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


@cache
def git_commit() -> str:
    """HEAD of the project checkout, with '+dirty' when tracked files differ from it."""
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
        return "unknown"
    return head + ("+dirty" if dirty else "")


def provenance(config) -> dict:
    """The provenance record stored with every artefact."""
    return {
        "config_hash": config_hash(config),
        "git_commit": git_commit(),
        "packages": package_versions(),
        "created_utc": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


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
