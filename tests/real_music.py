"""Real recordings for the metric tests: the eight CC BY-SA excerpts of ../shared/data/music
(its README gives sources and licences), and pieces of known form cut and joined from them."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from eisbach import probe_signals as P

MUSIC = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "music"
RATE = 22_050
FORMS = ("ABAB", "ABAC", "AABA")


def load_music() -> dict[str, np.ndarray]:
    import soundfile as sf

    files = sorted(MUSIC.glob("*.ogg"))
    if not files:
        pytest.skip(f"the real-music excerpts are absent ({MUSIC}: ../shared is not checked out)")
    out = {}
    for path in files:
        audio, rate = sf.read(path, dtype="float32")
        assert rate == RATE and audio.ndim == 1, path
        out[path.stem] = audio
    return out


def built_pieces(music: dict[str, np.ndarray]) -> list[dict]:
    """ABAB, ABAC and AABA at sections of 2, 4 and 8 s across different tracks (each letter a
    different excerpt), at 2 and 4 s within one track (each letter another place of it), and
    two with 0.25 s gaps. Fixed choices, so every run scores the same pieces."""
    names = sorted(music)
    rng = np.random.default_rng(22)
    specs = [(f, s, "across", 0.0) for s in (2.0, 4.0, 8.0) for f in FORMS]
    specs += [(f, s, "within", 0.0) for s in (2.0, 4.0) for f in FORMS]
    specs += [("ABAB", 4.0, "across", 0.25), ("ABAC", 2.0, "within", 0.25)]
    pieces = []
    for form, section, mode, gap in specs:
        if mode == "across":
            picked = rng.choice(len(names), 3, replace=False)
            starts = rng.uniform(0.0, 40.0 - section - 0.5, 3)
            cuts = {c: (music[names[i]], float(t)) for c, i, t in zip("ABC", picked, starts)}
        else:
            track = names[int(rng.integers(len(names)))]
            slots = rng.permutation(np.arange(0.0, 40.0 - section, section))[:3]
            cuts = {c: (music[track], float(t)) for c, t in zip("ABC", slots)}
        audio, intervals = P.built_piece(cuts, form, section, RATE, gap)
        pieces.append(
            {
                "name": f"{form} {section:g}s {mode}" + (f" gap {gap:g}s" if gap else ""),
                "form": form,
                "section_s": section,
                "mode": mode,
                "audio": audio,
                "intervals": intervals,
            }
        )
    return pieces


def mp3_round_trip(y: np.ndarray, rate: int, kbps: int = 64) -> tuple[np.ndarray, float]:
    """The clip encoded to MP3 and decoded again by libsndfile (soundfile), at about ``kbps``
    (libsndfile sets MP3 quality by a compression level, 0 best to 1 smallest), and the bit
    rate it came out at."""
    import soundfile as sf

    # libsndfile 1.2's LAME: level 0.1 gave 64.5 kbps on 10 s of these 22.05 kHz excerpts
    buf = io.BytesIO()
    sf.write(buf, y, rate, format="MP3", compression_level=0.1 if kbps == 64 else 0.5)
    bits = 8 * buf.tell() / (y.size / rate) / 1000
    buf.seek(0)
    out, _ = sf.read(buf, dtype="float32")
    return out[: y.size], bits
