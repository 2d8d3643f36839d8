"""Integrity on read: every artefact a stage reads is checked against the sha256 its producer
recorded, and a mismatch stops the job naming the file, the record and the rule to rerun.

Where the checksums live:
  latent shards, text table   results/latents/<backend>/latents_manifest.json  (rule latents)
  base weights                results/base/<backend>/run.json ``weights``      (rule pretrain_base)
  adapters                    results/runs/<run_id>/run.json ``weights``       (rule finetune)
  clips                       results/data/manifest.parquet ``sha256``         (rule data_shard)

A file is hashed once per process (keyed by inode, size and mtime), so a job that opens the same
shard from several readers pays for it once.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from eisbach.provenance import file_sha256

WEIGHTS_KEY = "weights"
_VERIFIED: dict[tuple, str] = {}


class IntegrityError(RuntimeError):
    """A file differs from the checksum its producer recorded, or has none recorded."""


def _hint(rule: str) -> str:
    return (
        f"the file was damaged or changed after rule `{rule}` wrote it; rerun that rule "
        f"(snakemake --forcerun {rule}, or delete the file and run snakemake again)"
    )


def sha256_cached(path) -> str:
    """sha256 of a file, computed once per process for an unchanged file."""
    stat = os.stat(path)
    key = (os.path.realpath(path), stat.st_ino, stat.st_size, stat.st_mtime_ns)
    digest = _VERIFIED.get(key)
    if digest is None:
        digest = _VERIFIED[key] = file_sha256(path)
    return digest


def verify_file(path, expected: str | None, *, record, rule: str) -> str:
    """Checks ``path`` against ``expected`` (recorded in ``record`` by ``rule``); its sha256."""
    path = Path(path)
    if not expected:
        raise IntegrityError(f"{path}: no sha256 is recorded for it in {record}; {_hint(rule)}")
    if not path.is_file():
        raise IntegrityError(f"{path}: missing, though {record} lists it; {_hint(rule)}")
    actual = sha256_cached(path)
    if actual != expected:
        raise IntegrityError(
            f"{path}: sha256 {actual[:16]}... differs from {expected[:16]}... recorded in "
            f"{record}; {_hint(rule)}"
        )
    return actual


def weights_record(folder, names) -> dict[str, str]:
    """The ``weights`` entry of a run.json: file name -> sha256 of each file in folder."""
    return {name: sha256_cached(Path(folder) / name) for name in names}


def verify_weights(folder, names, rule: str) -> dict[str, str]:
    """Checks the named files of folder against ``weights`` in folder/run.json."""
    folder = Path(folder)
    record = folder / "run.json"
    try:
        recorded = json.loads(record.read_text()).get(WEIGHTS_KEY) or {}
    except FileNotFoundError:
        raise IntegrityError(
            f"{record}: missing, so {folder} cannot be verified; {_hint(rule)}"
        ) from None
    except json.JSONDecodeError as exc:
        raise IntegrityError(f"{record}: not valid JSON ({exc}); {_hint(rule)}") from None
    return {
        name: verify_file(folder / name, recorded.get(name), record=record, rule=rule)
        for name in names
    }


__all__ = [
    "IntegrityError",
    "sha256_cached",
    "verify_file",
    "verify_weights",
    "weights_record",
]
