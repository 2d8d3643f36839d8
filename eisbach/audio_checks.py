"""Decoding and validation of clips: what is corrupt, silent, too short or clipped.

A clip is judged on its decoded samples at their native rate and channel count (resampling a
hard-clipped signal rings, and would hide the full-scale samples). Only a clip that passes is
converted to mono at the backend's rate.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

import numpy as np

SOUNDFILE_EXTENSIONS = {".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif"}
FULL_SCALE = 0.999


class DecodeError(Exception):
    """The file does not decode to audio; its clip is quarantined as corrupt."""


def find_ffmpeg() -> str | None:
    """ffmpeg on PATH, else the binary shipped by imageio-ffmpeg, else None."""
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg
    except ImportError:
        return None
    try:
        return imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError:
        return None


def wav_truncation(path) -> str | None:
    """A reason when a RIFF/WAVE file's data chunk declares more bytes than the file holds.

    libsndfile silently reads what is there, so a download cut short would pass as a shorter clip.
    """
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        head = fh.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        pos = 12
        while pos + 8 <= size:
            fh.seek(pos)
            chunk_id, chunk_size = struct.unpack("<4sI", fh.read(8))
            if chunk_id == b"data":
                if chunk_size in (0, 0xFFFFFFFF):  # streamed WAV: length unknown, not truncated
                    return None
                available = size - pos - 8
                if chunk_size > available:
                    return f"truncated WAV: data chunk declares {chunk_size} bytes, file holds {available}"
                return None
            pos += 8 + chunk_size + (chunk_size & 1)
    return "truncated WAV: no data chunk"


def _decode_soundfile(path, start_s: float | None, end_s: float | None):
    import soundfile as sf

    try:
        with sf.SoundFile(str(path)) as fh:
            rate = fh.samplerate
            declared = fh.frames
            lo = int(round((start_s or 0.0) * rate))
            hi = declared if end_s is None else min(int(round(end_s * rate)), declared)
            if lo:
                fh.seek(min(lo, declared))
            audio = fh.read(max(hi - lo, 0), dtype="float32", always_2d=True)
            if fh.format == "FLAC" and end_s is None and len(audio) < declared - lo:
                raise DecodeError(f"truncated FLAC: {len(audio)} of {declared} frames decode")
    except sf.LibsndfileError as exc:
        raise DecodeError(str(exc)) from None
    except RuntimeError as exc:  # soundfile raises RuntimeError for some read errors
        raise DecodeError(str(exc)) from None
    return audio, rate


def _decode_ffmpeg(path, ffmpeg: str, start_s, end_s, timeout: float = 300):
    with tempfile.TemporaryDirectory(prefix="eisbach-decode-") as tmp:
        out = Path(tmp) / "decoded.wav"
        argv = [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-y"]
        if start_s:
            argv += ["-ss", f"{start_s:.3f}"]
        if end_s is not None:
            argv += ["-to", f"{end_s:.3f}"]
        argv += ["-i", str(path), "-vn", "-c:a", "pcm_f32le", str(out)]
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise DecodeError(f"ffmpeg did not finish decoding within {timeout:.0f} s") from None
        if proc.returncode != 0 or not out.is_file():
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise DecodeError(f"ffmpeg cannot decode it: {last[:200]}")
        return _decode_soundfile(out, None, None)


def decode(path, start_s: float | None = None, end_s: float | None = None, ffmpeg=None):
    """(float32 [frames, channels], rate) of a file, optionally the [start_s, end_s) part.

    WAV/FLAC/OGG/MP3 go through soundfile; other containers (m4a, webm, opus from YouTube)
    through ffmpeg. Raises DecodeError for anything that is not decodable audio.
    """
    path = Path(path)
    if not path.is_file():
        raise DecodeError("file does not exist")
    if path.stat().st_size == 0:
        raise DecodeError("zero-byte file")
    truncated = wav_truncation(path)
    if truncated:
        raise DecodeError(truncated)
    if path.suffix.lower() in SOUNDFILE_EXTENSIONS:
        try:
            audio, rate = _decode_soundfile(path, start_s, end_s)
        except DecodeError:
            if ffmpeg is None:
                raise
            audio, rate = _decode_ffmpeg(path, ffmpeg, start_s, end_s)
    else:
        if ffmpeg is None:
            raise FileNotFoundError(
                f"{path.name}: decoding {path.suffix or 'this format'} needs ffmpeg; none is on "
                "PATH and imageio-ffmpeg is not installed"
            )
        audio, rate = _decode_ffmpeg(path, ffmpeg, start_s, end_s)
    if not np.all(np.isfinite(audio)):
        raise DecodeError("decoded samples contain NaN or infinity")
    return audio, rate


def validate_clip(audio: np.ndarray, sample_rate: int, rules: dict) -> tuple[str, str]:
    """(status, reason) for decoded audio ([frames] or [frames, channels]) by data.validation."""
    duration = audio.shape[0] / sample_rate
    if duration < rules["min_seconds"]:
        return "too_short", f"{duration:.2f} s < data.validation.min_seconds={rules['min_seconds']}"
    rms_db = 20 * np.log10(np.sqrt(np.mean(np.square(audio, dtype=np.float64))) + 1e-12)
    if rms_db < rules["silence_rms_db"]:
        return "silent", f"RMS {rms_db:.1f} dBFS < data.validation.silence_rms_db"
    clipped = float(np.mean(np.abs(audio) >= FULL_SCALE))
    if clipped > rules["max_clipped_fraction"]:
        return "clipped", f"{clipped:.2%} full-scale samples > data.validation.max_clipped_fraction"
    return "ok", ""


def to_channels(audio: np.ndarray, rate: int, target_rate: int, channels: int) -> np.ndarray:
    """float32 at target_rate, limited to [-1, 1]: mono [frames] for channels 1 (the channels
    averaged), stereo [frames, 2] for channels 2 (a mono source on both sides, the first two
    channels of a wider one)."""
    if channels == 1:
        return to_mono(audio, rate, target_rate)
    if channels != 2:
        raise ValueError(f"data.channels must be 1 or 2, got {channels}")
    x = audio[:, None] if audio.ndim == 1 else audio
    x = np.repeat(x, 2, axis=1) if x.shape[1] == 1 else x[:, :2]
    x = np.ascontiguousarray(x, dtype=np.float32)
    if rate != target_rate:
        import soxr

        x = soxr.resample(x, rate, target_rate, quality="HQ").astype(np.float32)
    return np.clip(x, -1.0, 1.0)


def to_mono(audio: np.ndarray, rate: int, target_rate: int) -> np.ndarray:
    """Mono float32 at target_rate (soxr, high quality), limited to [-1, 1]."""
    mono = audio.mean(axis=1) if audio.ndim == 2 else audio
    mono = np.ascontiguousarray(mono, dtype=np.float32)
    if rate != target_rate:
        import soxr

        mono = soxr.resample(mono, rate, target_rate, quality="HQ").astype(np.float32)
    return np.clip(mono, -1.0, 1.0)
