"""Where an anchor's weights come from (a local file or the HF cache, never the network), how they
are read (safetensors or torch.load with weights_only), and the per-clip cache of its outputs."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from eisbach.atomic import atomic_path
from eisbach.provenance import file_sha256


class WeightsMissing(FileNotFoundError):
    """The configured weights are not on this machine; the anchor is skipped with this reason."""


def has_source(spec: dict) -> bool:
    """Whether an anchor's config names a way to find its weights."""
    hf = spec.get("hf") or {}
    return bool(spec.get("weights")) or bool(hf.get("repo") and hf.get("file"))


def resolve(spec: dict, key: str) -> Path:
    """The weights file of one anchor: ``weights`` (a local path), else ``hf`` {repo, file,
    cache_dir}: a file already in the Hugging Face cache (local_files_only: nothing is fetched)."""
    if spec.get("weights"):
        path = Path(os.path.expanduser(str(spec["weights"])))
        if not path.is_file():
            raise WeightsMissing(f"{key}.weights: {path} does not exist")
        return path
    hf = spec.get("hf") or {}
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        found = hf_hub_download(
            hf["repo"], hf["file"], cache_dir=hf.get("cache_dir"), local_files_only=True
        )
    except (LocalEntryNotFoundError, FileNotFoundError) as err:
        where = hf.get("cache_dir") or "the default HF cache"
        raise WeightsMissing(f"{key}.hf: {hf['repo']}/{hf['file']} is not in {where}") from err
    return Path(found)


def load_state_dict(path: Path) -> dict:
    """Tensors of a checkpoint: safetensors, or torch.load(weights_only=True) of a .pt/.pth
    (a {"state_dict": ...} wrapper and DataParallel's "module." prefix are unwrapped)."""
    import torch

    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def short_sha(path: Path) -> str:
    """A short content hash of a weights file (hashed once per run; cached per path and mtime)."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    if key not in _SHA_CACHE:
        _SHA_CACHE[key] = file_sha256(path)[:12]
    return _SHA_CACHE[key]


_SHA_CACHE: dict = {}


class ClipCache:
    """One .npy per clip, keyed by the WAV's sha256, in a folder named after the anchor, the
    weights' hash and a settings string: other weights or settings never read stale outputs."""

    def __init__(self, root: Path, anchor: str, weights: Path, settings: str):
        tag = hashlib.sha256(settings.encode()).hexdigest()[:8]
        self.folder = Path(root) / f"{anchor}-{short_sha(weights)}-{tag}"

    def get_or_compute(self, path: Path, compute) -> np.ndarray:
        digest = file_sha256(path)
        cached = self.folder / f"{digest}.npy"
        if cached.exists():
            return np.load(cached)
        value = np.asarray(compute(path))
        self.folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(cached, suffix=".tmp.npy") as tmp:
            np.save(tmp, value)
        return value
