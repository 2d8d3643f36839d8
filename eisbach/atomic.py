"""Atomic writes: every artefact is written to a temporary sibling, then renamed."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yields a temporary path beside ``path``; renames it onto ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=suffix or "".join(path.suffixes) + ".tmp"
    )
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        # After the writer, not before: safetensors' save_file replaces the file it is given
        # with a new one of mode 0600.
        share_mode(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def share_mode(path: str | os.PathLike) -> None:
    """Gives a file the mode open() would (0666 less the umask). mkstemp and safetensors create
    0600 files, which another user of a shared results folder (a cluster group, the container's
    uid against the host's) cannot read."""
    umask = os.umask(0)
    os.umask(umask)
    Path(path).chmod(0o666 & ~umask)


def write_json(path, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_text(path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_parquet(path, table, **kwargs) -> None:
    import pyarrow.parquet as pq

    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, **kwargs)


def write_wav(path, audio, sample_rate: int, provenance: dict | None = None) -> None:
    """16-bit WAV; provenance, when given, goes into the file's comment (RIFF INFO ICMT)."""
    import soundfile as sf

    channels = 1 if audio.ndim == 1 else audio.shape[1]
    with atomic_path(path, suffix=".tmp.wav") as tmp:
        with sf.SoundFile(tmp, "w", sample_rate, channels, subtype="PCM_16") as fh:
            fh.software = "eisbach"
            if provenance is not None:
                fh.comment = json.dumps(provenance, sort_keys=True, separators=(",", ":"))
            fh.write(audio)


def link_or_copy(src: str | os.PathLike, dest: str | os.PathLike) -> None:
    """``dest`` as a hard link to ``src`` (a copy across filesystems), placed atomically."""
    with atomic_path(dest) as tmp:
        tmp.unlink()
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copy2(src, tmp)
