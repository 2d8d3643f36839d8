"""moto's S3 server on a free local port: the object store of the tests that run the workflow
without a shared filesystem (tests/test_profiles.py, tests/test_s3_storage.py)."""

from __future__ import annotations

import socket
from contextlib import contextmanager

REGION = "us-east-1"
KEY = "testing"  # moto accepts any key; the storage plugin and boto3 read these variables
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": KEY,
    "AWS_SECRET_ACCESS_KEY": KEY,
    "AWS_DEFAULT_REGION": REGION,
    "SNAKEMAKE_STORAGE_S3_ACCESS_KEY": KEY,
    "SNAKEMAKE_STORAGE_S3_SECRET_KEY": KEY,
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def moto_server(*buckets: str):
    """Yields the endpoint URL of a fresh S3 server holding the given (empty) buckets."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    try:
        client = s3_client(url)
        for bucket in buckets:
            client.create_bucket(Bucket=bucket)
        yield url
    finally:
        server.stop()


def s3_client(url: str):
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id=KEY,
        aws_secret_access_key=KEY,
    )


def keys(client, bucket: str, prefix: str = "") -> dict[str, int]:
    """Every object under prefix: key -> size."""
    found = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        found |= {obj["Key"]: obj["Size"] for obj in page.get("Contents", [])}
    return found
