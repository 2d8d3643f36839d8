"""Per-clip analyses kept between runs of the evaluate stage, keyed by the clip's sha256.

Snakemake deletes a job's outputs before it reruns, so the cache lives beside them in a folder
no rule declares, where no rerun clears it. It is therefore never trusted: each entry records
the key it was computed for, the clip's sha256 and the analysis version (the hash of the
analysis code and of the packages it ran on, :func:`metrics_version`), with a sha256 of its own
contents, and :meth:`ScoreCache.get` checks all three. An entry that cannot be read, belongs to
another clip or version, or whose contents changed is discarded with a warning that names it,
and the clip is analysed afresh. The subfolder is named by the version too, so an upgrade of
librosa or an edit of eisbach/metrics.py starts a fresh cache rather than a cache of misses.
"""

from __future__ import annotations

import hashlib
import io
import json
import warnings
import zipfile
from functools import cache
from pathlib import Path

import numpy as np

from eisbach import metrics
from eisbach.atomic import atomic_path
from eisbach.provenance import versions_of

# What an analysis's numbers depend on besides its input: these sources (eisbach.metrics and the
# eisbach modules it computes a clip's analysis with; tests/test_cache_integrity.py checks the
# list against its imports), and the packages that read the audio (soundfile), resample it
# (librosa, soxr) and compute on it.
ANALYSIS_MODULES = ("metrics", "structure", "score_cache")
# imported by eisbach.metrics, but for intervals over many clips, not for one clip's analysis
NOT_ANALYSIS_MODULES = ("stats",)
ANALYSIS_SOURCES = tuple(Path(__file__).parent / f"{name}.py" for name in ANALYSIS_MODULES)
ANALYSIS_PACKAGES = (
    "numpy",
    "scipy",
    "librosa",
    "soxr",
    "numba",
    "scikit-learn",
    "pyebur128",
    "soundfile",
)
ENTRY_FORMAT = 2
ARRAYS = ("ssm", "embedding")
ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip member can carry


class CacheEntryDiscarded(UserWarning):
    """A cache entry was unreadable or did not match its key; the clip is analysed afresh."""


def analysis_environment() -> dict[str, str]:
    """Python and the versions of ANALYSIS_PACKAGES."""
    return versions_of(ANALYSIS_PACKAGES)


@cache
def metrics_version() -> str:
    """sha256 (first 16 hex) of the analysis code and of its environment: what a cached
    analysis must share with the run that reuses it."""
    digest = hashlib.sha256()
    for path in ANALYSIS_SOURCES:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    digest.update(json.dumps(analysis_environment(), sort_keys=True).encode())
    return digest.hexdigest()[:16]


def _content_sha256(values_json: str, arrays: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256(values_json.encode())
    for name in ARRAYS:
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"\0{name}\0{array.dtype.str}\0{array.shape}\0".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


class ScoreCache:
    def __init__(self, root: Path):
        self.version = metrics_version()
        self.dir = Path(root) / self.version

    def path(self, sha256: str) -> Path:
        return self.dir / f"{sha256}.npz"

    def get(self, sha256: str) -> metrics.Analysis | None:
        """The analysis cached for the clip with this sha256, or None: when there is none, or
        when the entry fails a check (then with a CacheEntryDiscarded warning naming it)."""
        path = self.path(sha256)
        if not path.exists():
            return None
        try:
            return self._read(path, sha256)
        except Exception as exc:  # whatever the damage, the entry is not used
            # put() replaces it once the clip is analysed again
            warnings.warn(
                f"score cache: discarded {path}: {exc}; the clip is analysed afresh",
                CacheEntryDiscarded,
                stacklevel=2,
            )
            return None

    def _read(self, path: Path, sha256: str) -> metrics.Analysis:
        # an open file of our own: np.load leaves its file open when the zip fails to parse
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as data:
            key = json.loads(str(data["key"]))
            values_json = str(data["metrics"])
            arrays = {name: data[name] for name in ARRAYS}
        expected = {"clip_sha256": sha256, "metrics_version": self.version}
        found = {k: key.get(k) for k in expected}
        if key.get("format") != ENTRY_FORMAT or found != expected:
            raise ValueError(f"its key {found} is not {expected}")
        if key.get("content_sha256") != _content_sha256(values_json, arrays):
            raise ValueError("its contents do not match the sha256 it recorded")
        values = json.loads(values_json)
        if not isinstance(values, dict) or set(values) != set(metrics.METRICS):
            raise ValueError("its metrics are not the names of eisbach.metrics.METRICS")
        return metrics.Analysis(
            values,
            arrays["ssm"] if arrays["ssm"].size else None,
            arrays["embedding"] if arrays["embedding"].size else None,
        )

    def put(self, sha256: str, analysis: metrics.Analysis) -> None:
        # in the metrics' own order: a cached row has the columns of a fresh one
        values_json = json.dumps(analysis.metrics)
        arrays = {
            "ssm": np.zeros(0) if analysis.ssm is None else analysis.ssm,
            "embedding": np.zeros(0) if analysis.embedding is None else analysis.embedding,
        }
        key = {
            "format": ENTRY_FORMAT,
            "clip_sha256": sha256,
            "metrics_version": self.version,
            "content_sha256": _content_sha256(values_json, arrays),
        }
        members = {"key": np.array(json.dumps(key)), "metrics": np.array(values_json)} | arrays
        buffer = io.BytesIO()
        # np.savez's layout, with a fixed date on each member instead of the clock's: an
        # entry's bytes depend on its contents only (byte-identical runs, issue 24)
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
            for name, array in members.items():
                info = zipfile.ZipInfo(f"{name}.npy", date_time=ZIP_DATE)
                with archive.open(info, "w", force_zip64=True) as fh:
                    np.lib.format.write_array(fh, np.asanyarray(array), allow_pickle=False)
        self.dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.path(sha256)) as tmp:
            Path(tmp).write_bytes(buffer.getvalue())
