"""Signals whose answer is known, for validating the structure metrics at any sample rate.

Tests and benchmarks/metrics_speed.py build their clips here, so that every metric is checked
on material a musician can reason about (sections of a known length, drones, stationary noise,
compressed dynamics), not on the demo's own music alone. Every generator is deterministic from
its seed and returns float32 mono in [-1, 1] at the requested rate.
"""

from __future__ import annotations

import numpy as np

# Two contrasting section types: (chord as MIDI notes, attacks per second, harmonics, rolloff,
# arpeggiated). A section is homogeneous over half a second, as a musician would hear it.
SECTION_A = ((72, 76, 79, 84), 8.0, 8, 0.7, True)  # high, bright C-major arpeggio
SECTION_B = ((45, 52, 57), 2.0, 3, 0.35, False)  # low, dark A-minor chords, re-struck


def midi_hz(note: float) -> float:
    return 440.0 * 2.0 ** ((note - 69.0) / 12.0)


def harmonic(f0: float, n: int, rate: int, n_harm: int = 6, rolloff: float = 0.6) -> np.ndarray:
    t = np.arange(n) / rate
    y = np.zeros(n)
    for k in range(1, n_harm + 1):
        if f0 * k < 0.45 * rate:
            y += rolloff ** (k - 1) * np.sin(2 * np.pi * f0 * k * t)
    peak = np.max(np.abs(y)) if n else 0.0
    return y / peak if peak > 0 else y


def _notes(section, seconds: float, rate: int, rng) -> np.ndarray:
    """Plucked notes of one section type: its chord arpeggiated, or struck whole."""
    chord, per_s, n_harm, rolloff, arpeggio = section
    n = int(round(seconds * rate))
    note_n = int(round(rate / per_s))
    y = np.zeros(n)
    for i, start in enumerate(range(0, n, note_n)):
        length = min(note_n, n - start)
        notes = [chord[i % len(chord)]] if arpeggio else chord
        env = np.exp(-np.arange(length) / rate / (0.4 / per_s))
        tone = sum(harmonic(midi_hz(m), length, rate, n_harm, rolloff) for m in notes)
        y[start : start + length] = tone / len(notes) * env
    return y * (1.0 + 0.01 * rng.standard_normal())


def sections(section_s: float, seconds: float = 10.0, rate: int = 16000, seed: int = 0):
    """Alternating A/B sections of ``section_s`` seconds: the block length is section_s."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * rate))
    out = np.zeros(n)
    k = 0
    for start in range(0, n, int(round(section_s * rate))):
        stop = min(n, start + int(round(section_s * rate)))
        kind = SECTION_A if k % 2 == 0 else SECTION_B
        level = 0.5 if k % 2 == 0 else 0.7
        out[start:stop] = level * _notes(kind, (stop - start) / rate, rate, rng)
        k += 1
    return np.asarray(out, np.float32)


def drone(seconds: float = 10.0, rate: int = 16000, f0: float = 110.0) -> np.ndarray:
    """A steady harmonic tone: no sections, no onsets."""
    n = int(round(seconds * rate))
    return np.asarray(0.5 * harmonic(f0, n, rate, n_harm=10, rolloff=0.8), np.float32)


def noise(seconds: float = 10.0, rate: int = 16000, seed: int = 0, color: str = "white"):
    """Stationary noise (white, or pink by 1/f shaping): no sections."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * rate))
    x = rng.standard_normal(n)
    if color == "pink":
        spec = np.fft.rfft(x)
        f = np.fft.rfftfreq(n, 1.0 / rate)
        spec[1:] /= np.sqrt(f[1:])
        spec[0] = 0.0
        x = np.fft.irfft(spec, n)
    return np.asarray(0.25 * x / np.std(x), np.float32)


def with_gain(y: np.ndarray, db: float) -> np.ndarray:
    return np.asarray(y * 10.0 ** (db / 20.0), np.float32)


def with_noise_floor(y: np.ndarray, dbfs: float = -70.0, seed: int = 1) -> np.ndarray:
    """White noise at ``dbfs`` RMS added under the signal."""
    floor = np.random.default_rng(seed).standard_normal(y.size) * 10.0 ** (dbfs / 20.0)
    return np.asarray(y + floor, np.float32)


def resampled(y: np.ndarray, rate: int, target: int) -> np.ndarray:
    import librosa

    return np.asarray(librosa.resample(y, orig_sr=rate, target_sr=target), np.float32)


def compressed(y: np.ndarray, rate: int, threshold_db: float = -30.0, ratio: float = 8.0):
    """A feed-forward RMS compressor (10 ms attack, 100 ms release) with make-up gain to the
    original peak: what mastering does to dynamics."""
    alpha_a = np.exp(-1.0 / (0.010 * rate))
    alpha_r = np.exp(-1.0 / (0.100 * rate))
    power = np.asarray(y, np.float64) ** 2
    env = np.empty_like(power)
    level = 0.0
    for i, p in enumerate(power):
        a = alpha_a if p > level else alpha_r
        level = a * level + (1 - a) * p
        env[i] = level
    level_db = 10.0 * np.log10(env + 1e-12)
    over = np.maximum(level_db - threshold_db, 0.0)
    gain = 10.0 ** (-(over * (1 - 1 / ratio)) / 20.0)
    out = y * gain
    return np.asarray(out * np.max(np.abs(y)) / max(np.max(np.abs(out)), 1e-12), np.float32)


def dynamic_piece(seconds: float = 10.0, rate: int = 16000, seed: int = 0) -> np.ndarray:
    """Sections whose loudness steps over 36 dB (pp to ff): a known wide dynamic range."""
    y = sections(2.0, seconds, rate, seed).astype(np.float64)
    n_sec = int(np.ceil(seconds / 2.0))
    levels_db = np.linspace(-36.0, 0.0, n_sec)
    gain = np.repeat(10.0 ** (levels_db / 20.0), int(round(2.0 * rate)))[: y.size]
    return np.asarray(y * gain, np.float32)


def built_piece(cuts: dict, form: str, section_s: float, rate: int, gap_s: float = 0.0):
    """A piece of known form cut and joined from recordings: ``cuts`` maps each letter of
    ``form`` (e.g. "ABAB") to (mono audio at ``rate``, start in s); every occurrence of a letter
    is the same cut of ``section_s`` seconds, and ``gap_s`` of digital silence may separate the
    sections. Returns (audio, reference intervals [n, 2] in s): the sections as a structure
    annotation would mark them, each joint (a gap's middle) a boundary, for mir_eval.segment."""
    n = int(round(section_s * rate))
    gap = np.zeros(int(round(gap_s * rate)), np.float32)
    parts, edges, t = [], [0.0], 0.0
    for i, letter in enumerate(form):
        audio, start = cuts[letter]
        first = int(round(start * rate))
        cut = np.asarray(audio[first : first + n], np.float32)
        if cut.size < n:
            raise ValueError(f"cut {letter!r} at {start} s is shorter than {section_s} s")
        if i:
            parts.append(gap)
            edges.append(t + gap_s / 2)
            t += gap_s
        parts.append(cut)
        t += section_s
    edges.append(t)
    intervals = np.stack([edges[:-1], edges[1:]], axis=1)
    return np.concatenate(parts), intervals


def arpeggio(seconds: float = 10.0, rate: int = 16000, seed: int = 0) -> np.ndarray:
    """One steady section: the C-major arpeggio of SECTION_A throughout (notes, no boundary)."""
    rng = np.random.default_rng(seed)
    return np.asarray(0.5 * _notes(SECTION_A, seconds, rate, rng), np.float32)


__all__ = [
    "arpeggio",
    "built_piece",
    "compressed",
    "drone",
    "dynamic_piece",
    "noise",
    "resampled",
    "sections",
    "with_gain",
    "with_noise_floor",
]
