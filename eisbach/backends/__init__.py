"""Backends: one interface over the tiny local model and the pretrained Stable Audio models."""

from __future__ import annotations

from eisbach.backends.base import Backend


def get_backend(name: str, config: dict, workdir) -> Backend:
    """The backend ``name`` (config key ``backend.name``), storing its local files under workdir."""
    if name == "tiny":
        from eisbach.backends.tiny import TinyBackend

        return TinyBackend(config, workdir)
    if name in ("stable-audio-tools", "stable-audio-3"):
        raise NotImplementedError(
            f"backend.name: {name!r} is planned (issue 5) and not built yet; use 'tiny'"
        )
    raise ValueError(f"backend.name: unknown backend {name!r}; known: tiny")


__all__ = ["Backend", "get_backend"]
