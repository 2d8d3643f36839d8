"""Backends: one interface over the tiny local model and the pretrained Stable Audio models.

- ``tiny``: a small stable-audio-tools DiT over a log-mel, built locally (``backend.tiny``);
- ``stable-audio-tools``: a pretrained stable-audio-tools model (``backend.pretrained``);
- ``stable-audio-3``: Stable Audio 3 through the ``stable_audio_3`` package
  (``backend.pretrained``, ``backend.stable_audio_3``).
"""

from __future__ import annotations

from eisbach.backends.base import Backend

BACKENDS = ("tiny", "stable-audio-tools", "stable-audio-3")


def get_backend(name: str, config: dict, workdir) -> Backend:
    """The backend ``name`` (config key ``backend.name``) from the ``backend`` config section,
    storing its local files (the tiny text encoder) under workdir."""
    if name == "tiny":
        from eisbach.backends.tiny import TinyBackend

        return TinyBackend(config, workdir)
    if name == "stable-audio-tools":
        from eisbach.backends.stable_audio_tools import StableAudioToolsBackend

        return StableAudioToolsBackend(config, workdir)
    if name == "stable-audio-3":
        from eisbach.backends.stable_audio_3 import StableAudio3Backend

        return StableAudio3Backend(config, workdir)
    raise ValueError(f"backend.name: unknown backend {name!r}; known: {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "Backend", "get_backend"]
