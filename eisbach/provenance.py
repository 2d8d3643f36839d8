"""Where an artefact came from: config hash, package versions and git commit.

Nothing here reads the clock, so that two clean runs of one commit write byte-identical
artefacts (the reproducible-builds convention): the one date a record carries is the source
date, ``SOURCE_DATE_EPOCH`` when set, else the time of the commit (:func:`source_date_utc`).
"""

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


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(REPO_ROOT), *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    ).stdout.strip()


@cache
def git_commit() -> str:
    """HEAD of the project checkout, with '+dirty' when tracked files differ from it; without a
    checkout, EISBACH_GIT_COMMIT (the Dockerfile's required REVISION)."""
    try:
        head = _git("rev-parse", "HEAD")
        dirty = _git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        # No git or no .git (the container): the commit the image was built from, if any.
        return os.environ.get("EISBACH_GIT_COMMIT") or "unknown"
    return head + ("+dirty" if dirty else "")


def source_date_utc() -> str | None:
    """The date an artefact of this code is stamped with: ``SOURCE_DATE_EPOCH`` (seconds since
    1970, UTC) when set, else the committer time of HEAD; None outside a git checkout."""
    raw = os.environ.get("SOURCE_DATE_EPOCH")
    if raw is None:
        try:
            raw = _git("log", "-1", "--format=%ct")
        except (OSError, subprocess.SubprocessError):
            return None
    try:
        when = datetime.fromtimestamp(int(raw), UTC)
    except (ValueError, OverflowError, OSError) as exc:
        raise ValueError(f"SOURCE_DATE_EPOCH={raw!r} is not a count of seconds") from exc
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def provenance(config) -> dict:
    """The provenance record stored with every artefact: the same on every run of a commit."""
    return {
        "config_hash": config_hash(config),
        "git_commit": git_commit(),
        "packages": package_versions(),
        "source_date_utc": source_date_utc(),
    }


def content_provenance(config) -> dict:
    """The provenance that goes inside a file whose bytes are hashed (a WAV's comment): no
    date and no git commit, so that identical audio has an identical sha256 on every commit,
    and rewriting one clip does not invalidate what was derived from the others. The full
    record, with both, stays in the stage's Parquet metadata."""
    record = provenance(config)
    for key in ("source_date_utc", "git_commit"):
        record.pop(key)
    return record


# Besides the package: the lock (package versions), the scripts the rules call and the workflow.
CODE_FILES = ("envs/requirements.lock", "scripts", "Snakefile", "workflow")


@cache
def code_digest(root: Path = REPO_ROOT) -> str:
    """sha256 (first 16 hex) of the package's Python sources and of CODE_FILES under the
    checkout ``root``, names and bytes: what a resumed training checkpoint must share with the
    code that resumes it."""
    files = sorted((root / "eisbach").rglob("*.py"))
    for name in CODE_FILES:
        top = root / name
        files += sorted(top.rglob("*")) if top.is_dir() else [top]
    digest = hashlib.sha256()
    for path in files:
        rel = path.relative_to(root)
        if "__pycache__" in rel.parts or not path.is_file():
            continue
        digest.update(rel.as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def parquet_metadata(config, **extra) -> dict[bytes, bytes]:
    """Provenance (and extra keys) as Parquet schema metadata under the ``eisbach.`` prefix,
    without a date: a shard's sha256 is recorded downstream, and must not change with the
    commit's time when its rows do not."""
    record = provenance(config) | extra
    record.pop("source_date_utc")
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
