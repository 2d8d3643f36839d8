"""Training checkpoints kept in object storage, so that a fine-tune killed on a preemptible node
resumes on another node from the bucket instead of from step 0.

``train.checkpoint_store`` (or ``base.checkpoint_store``) names an ``s3://bucket/prefix``. Each run
keeps its checkpoint pair under ``<prefix>/<run_id>/``: ``log.parquet`` and ``last.pt``, the
files of eisbach.train's local ``checkpoints/`` folder.

- Before training, a run with no local checkpoint downloads the pair, ``last.pt`` first: the
  pair was uploaded log first, so the log it finds is at least as new as the weights, and the
  loader keeps only the log rows before the checkpoint's step.
- After each local checkpoint (written atomically), the pair is uploaded, log first. An upload
  is one PUT per object, and S3 shows an object whole or not at all, so a kill mid-upload leaves
  the previous pair in place.
- A finished run deletes its objects, as it deletes its local checkpoints.

The client is boto3 (the storage plugin's own client, in the lock): credentials come from the
usual AWS chain, else from SNAKEMAKE_STORAGE_S3_ACCESS_KEY / _SECRET_KEY (the variables that
Snakemake hands to the jobs of profiles/kubernetes); the endpoint of a non-AWS store (MinIO, a
test's moto server) from AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL, which boto3 reads itself.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

from eisbach.atomic import atomic_path

# the order of upload; downloads go the other way
FILES = ("log.parquet", "last.pt")
CONFIG_KEY = "checkpoint_store"


def parse_url(url: str) -> tuple[str, str]:
    """(bucket, key prefix) of an s3:// URL; a clear error naming the config key otherwise."""
    parsed = urlparse(str(url))
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"{CONFIG_KEY}: {url!r} is not an s3://BUCKET/PREFIX URL")
    return parsed.netloc, parsed.path.strip("/")


def client():
    import boto3

    keys = {}
    if not os.environ.get("AWS_ACCESS_KEY_ID") and os.environ.get(
        "SNAKEMAKE_STORAGE_S3_ACCESS_KEY"
    ):
        keys = {
            "aws_access_key_id": os.environ["SNAKEMAKE_STORAGE_S3_ACCESS_KEY"],
            "aws_secret_access_key": os.environ.get("SNAKEMAKE_STORAGE_S3_SECRET_KEY"),
        }
    return boto3.client("s3", **keys)


class CheckpointStore:
    """The checkpoint pair of one run under an s3:// prefix."""

    def __init__(self, url: str, run_id: str, s3=None):
        bucket, prefix = parse_url(url)
        self.bucket = bucket
        self.prefix = f"{prefix}/{run_id}" if prefix else run_id
        self.s3 = s3 or client()

    def url(self, name: str) -> str:
        return f"s3://{self.bucket}/{self.prefix}/{name}"

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{name}"

    def _exists(self, name: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.s3.head_object(Bucket=self.bucket, Key=self._key(name))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def pull(self, ckpt_dir: Path) -> bool:
        """Downloads the pair into ckpt_dir unless it holds a checkpoint already; True when
        one came from the bucket."""
        ckpt_dir = Path(ckpt_dir)
        if (ckpt_dir / "last.pt").exists() or not self._exists("last.pt"):
            return False
        for name in reversed(FILES):
            with atomic_path(ckpt_dir / name) as tmp:
                self.s3.download_file(self.bucket, self._key(name), str(tmp))
        return True

    def push(self, ckpt_dir: Path) -> None:
        for name in FILES:
            self.s3.upload_file(str(Path(ckpt_dir) / name), self.bucket, self._key(name))

    def drop(self) -> None:
        for name in FILES:
            self.s3.delete_object(Bucket=self.bucket, Key=self._key(name))


def from_config(cfg: dict, run_id: str) -> CheckpointStore | None:
    """The store that the `train` (or `base`) section names, or None."""
    url = cfg.get(CONFIG_KEY)
    return CheckpointStore(url, run_id) if url else None


__all__ = ["CONFIG_KEY", "CheckpointStore", "from_config", "parse_url"]
