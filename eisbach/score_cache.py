"""Per-clip analyses kept between runs of the evaluate stage, keyed by the clip's sha256.

Snakemake deletes a job's outputs before it reruns, so the cache lives beside them in a folder
no rule declares. Its subfolder is named by the hash of eisbach/metrics.py: any change to a
metric's code starts a fresh cache, so a stale value is never reused.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np

from eisbach import metrics
from eisbach.atomic import atomic_path


def metrics_version() -> str:
    return hashlib.sha256(Path(metrics.__file__).read_bytes()).hexdigest()[:16]


class ScoreCache:
    def __init__(self, root: Path):
        self.dir = Path(root) / metrics_version()

    def _path(self, sha256: str) -> Path:
        return self.dir / f"{sha256}.npz"

    def get(self, sha256: str) -> metrics.Analysis | None:
        path = self._path(sha256)
        if not path.exists():
            return None
        with np.load(path, allow_pickle=False) as data:
            values = json.loads(str(data["metrics"]))
            ssm = data["ssm"] if data["ssm"].size else None
            embedding = data["embedding"] if data["embedding"].size else None
        return metrics.Analysis(values, ssm, embedding)

    def put(self, sha256: str, analysis: metrics.Analysis) -> None:
        buffer = io.BytesIO()
        np.savez(
            buffer,
            metrics=np.array(json.dumps(analysis.metrics)),
            ssm=np.zeros(0) if analysis.ssm is None else analysis.ssm,
            embedding=np.zeros(0) if analysis.embedding is None else analysis.embedding,
        )
        self.dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(self._path(sha256)) as tmp:
            Path(tmp).write_bytes(buffer.getvalue())
