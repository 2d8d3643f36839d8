"""Offline, deterministic demo music with known structure.

This is the default demo dataset of the pipeline (MusicCaps needs YouTube).
Each clip is composed as MIDI with :mod:`pretty_midi` and rendered with
:mod:`tinysoundfont` through the General MIDI soundfont ``TimGM6mb.sf2`` that
ships inside the ``pretty_midi`` package, so the clips have real instrument
timbres while needing no network and no extra data files.

Three kinds of clip are produced, with ground-truth section labels:

``aba``
    A-B-A (ternary) pieces. The sections contrast in register (B two octaves
    below or above A), timbre (a plucked/struck GM program against a sustained
    one) and density (eighth-note melody against slow sustained chords). The
    second A repeats the first literally. Transitions are sparse and clear: the
    outgoing part stops just before the boundary (its release tail is faded out
    within 0.12 s) and the incoming part starts on it.
``drone``
    One sustained program (organ, pad, strings, choir) holding one chord for
    the whole clip with no change.
``texture``
    A static texture with no sectional change: either a one-bar ostinato
    repeated unchanged, or a dense, stationary cluster of retriggered notes.

Everything (key, mode, tempo, programs, notes) is drawn from a per-clip
:class:`numpy.random.Generator` seeded by ``(seed, clip_index)``, and the
synthesiser has no random state, so the same arguments give bitwise identical
audio, and clip ``i`` does not depend on ``n_clips``.

Rendering notes: a fresh ``tinysoundfont.Synth`` is used per instrument part
(the soundfont bytes are read once and cached), MIDI events are applied in time
order and ``Synth.generate_simple`` renders the exact number of frames between
events. (``Synth.generate`` with the package's ``Sequencer`` rounds each
inter-event gap *up* to whole frames, so event times drift; stepping ourselves
keeps them sample-exact.) Each part is rendered at ``max(sample_rate, 22050)``
Hz, levelled to a common RMS over the time it plays, summed to mono, resampled
to ``sample_rate`` with a polyphase filter when that is lower, and the clip is
peak-normalised to 0.5.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

__all__ = ["DemoClip", "render_demo_clips", "build_demo_midi", "soundfont_path"]

# Kinds cycle so that every prefix of length >= 3 holds all kinds and the long-run
# mix is 1/2 aba, 1/4 drone, 1/4 texture.
_KIND_CYCLE = ("aba", "drone", "texture", "aba")

_MIN_RENDER_RATE = 22050
_TARGET_PEAK = 0.5
_PART_RMS = 0.1
_FADE_OUT_S = 0.02
_BOUNDARY_GAP_S = 0.06  # silence left before a section boundary by the outgoing part
_GATE_FADE_S = 0.12  # release tails are faded out over this long after a part's section ends

# General MIDI programs (0-based) grouped by role. All were checked to sound in
# TimGM6mb.sf2; the sustained ones hold a steady level for 8+ s.
_PLUCKY_MID = (0, 1, 4, 6, 11, 12, 24, 45, 46)  # melody around C4-C5
_PLUCKY_HIGH = (0, 8, 9, 10, 11, 13, 46)  # melody around C6-C7
_SUSTAINED = (16, 19, 20, 48, 49, 52, 89)  # chords
_DRONE = (16, 19, 20, 21, 48, 49, 52, 89)  # not 88 (new age pad): it evolves
_OSTINATO = (4, 6, 8, 10, 11, 12, 24, 46)
_CLUSTER = (0, 8, 11, 12, 45, 46)

_SCALES = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "minor": (0, 2, 3, 5, 7, 8, 10),
}
# Chord progressions as scale-degree roots (0 = tonic), one chord per two beats.
_PROGRESSIONS = {
    "major": ((0, 4, 5, 3), (0, 3, 4, 0), (0, 5, 3, 4), (0, 3, 0, 4)),
    "minor": ((0, 5, 2, 6), (0, 3, 4, 0), (0, 6, 5, 4), (0, 3, 6, 2)),
}
_NOTE_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
_MOOD = {"major": "bright and cheerful", "minor": "melancholic and gentle"}

# The paper's four character prompts name the demo's four styles of clip, so that the tiny
# model's tokenizer has seen their words and each prompt asks for music it was trained on
# (unseen words all map to [UNK], and a prompt of [UNK]s gives a noise-like average). The
# Seal Lawyer's drones give the judge a prompt whose right answer is "static". The name opens
# the caption because captions are truncated to backend.tiny.max_text_tokens.
CHARACTER_THEMES = {
    "aba-melody-first": "Little Piglet Prince",
    "aba-chords-first": "Professor Pallas Cat",
    "texture": "Raccoon Mathematician",
    "drone": "Seal Lawyer",
}


def _theme(style: str, caption: str) -> str:
    return f"{CHARACTER_THEMES[style]}'s theme. {caption}"


@dataclass(frozen=True)
class DemoClip:
    id: str  # e.g. "demo-000"
    kind: str  # "aba" | "drone" | "texture"
    caption: str  # English caption describing the music
    aspect_list: list[str]  # short MusicCaps-style tags
    audio: np.ndarray  # float32 mono, shape [n_samples], peak 0.5
    sample_rate: int
    sections: list[tuple[float, float, str]]  # (start_s, end_s, label)


# --------------------------------------------------------------------------- helpers


def soundfont_path() -> str:
    """Path of the General MIDI soundfont shipped with pretty_midi."""
    import pretty_midi

    return os.path.join(os.path.dirname(pretty_midi.__file__), "TimGM6mb.sf2")


@functools.lru_cache(maxsize=1)
def _soundfont_bytes() -> bytes:
    with open(soundfont_path(), "rb") as fh:
        return fh.read()


def _instrument_name(program: int) -> str:
    """Caption-friendly GM name (pretty_midi.program_to_instrument_name, lower-cased).

    'Pad 2 (warm)' -> 'warm pad', 'String Ensemble 1' -> 'string ensemble'.
    """
    import pretty_midi

    name = pretty_midi.program_to_instrument_name(program)
    qualifier = ""
    if "(" in name:
        name, _, rest = name.partition("(")
        qualifier = rest.rstrip(")").strip()
    words = [w for w in name.split() if not w.isdigit()]
    if qualifier:
        words = [qualifier, *words]
    return " ".join(words).lower()


def _tempo_word(bpm: float) -> str:
    if bpm < 90:
        return "slow"
    if bpm <= 120:
        return "moderate"
    return "fast"


def _pitch(tonic: int, scale: tuple[int, ...], degree: int) -> int:
    octave, step = divmod(degree, len(scale))
    return tonic + 12 * octave + scale[step]


def _triad(root_degree: int) -> tuple[int, int, int]:
    return (root_degree, root_degree + 2, root_degree + 4)


def _tonic_near(key: int, target: int) -> int:
    """MIDI note of pitch class `key` within [-6, +5] semitones of `target`."""
    return target + ((key - target % 12 + 6) % 12) - 6


def _gap(t0: float, t1: float) -> float:
    """Silence the outgoing part leaves before a section boundary at `t1`."""
    return min(_BOUNDARY_GAP_S, 0.1 * (t1 - t0))


def _add_note(inst, pitch: int, vel: int, start: float, end: float) -> None:
    import pretty_midi

    if end - start > 1e-3 and 0 <= pitch <= 127:
        velocity = int(np.clip(vel, 1, 127))
        note = pretty_midi.Note(velocity=velocity, pitch=int(pitch), start=start, end=end)
        inst.notes.append(note)


# --------------------------------------------------------------------------- composition


def _melody(inst, rng, tonic, scale, prog, bpm, t0, t1, lo=0, hi=9):
    """Plucky eighth-note melody in scale degrees [lo, hi] relative to `tonic`."""
    eighth = 30.0 / bpm
    gap = _gap(t0, t1)
    n_slots = max(1, int(math.floor((t1 - t0 - gap) / eighth + 1e-9)))
    cur = int(rng.integers(lo + 2, hi - 1))
    for i in range(n_slots):
        beat = i // 2
        chord = _triad(prog[(beat // 2) % len(prog)])
        if i % 2 == 0:
            cands = sorted(
                {d + 7 * k for d in chord for k in range(-2, 3) if lo <= d + 7 * k <= hi},
                key=lambda d: (abs(d - cur), d),
            )
            cur = cands[int(rng.integers(0, min(2, len(cands))))]
        else:
            step = int(rng.choice((-1, 1)))
            cur = cur + step if lo <= cur + step <= hi else cur - step
        start = t0 + i * eighth
        end = min(start + 0.9 * eighth, t1 - gap)
        accent = 12 if i % 8 == 0 else (6 if i % 2 == 0 else 0)
        vel = 78 + accent + int(rng.integers(-4, 5))
        _add_note(inst, _pitch(tonic, scale, cur), vel, start, end)


def _chords(inst, rng, tonic, scale, prog, bpm, t0, t1, low=False):
    """Sustained chords, one per two beats.

    Middle register (``low=False``): close triad on `tonic` plus the root an octave
    below. Low register: open voicing (root, fifth, tenth) on `tonic`, which keeps
    chords two octaves down from turning to mud.
    """
    span = 120.0 / bpm
    gap = _gap(t0, t1)
    n = max(1, int(math.ceil((t1 - t0 - gap) / span - 1e-9)))
    for i in range(n):
        start = t0 + i * span
        end = min(start + span, t1 - gap)
        root = prog[i % len(prog)]
        root = root - 7 if root >= 4 else root  # keep roots within a fourth/fifth of the tonic
        vel = 76 + int(rng.integers(-3, 4))
        if low:
            pitches = [_pitch(tonic, scale, d) for d in (root, root + 4, root + 9)]
        else:
            pitches = [_pitch(tonic, scale, d) for d in _triad(root)]
            pitches.append(_pitch(tonic - 12, scale, root))
        for p in pitches:
            _add_note(inst, p, vel, start, end)


def build_demo_midi(kind: str, rng: np.random.Generator, seconds: float):
    """Compose one clip.

    Returns ``(pm, caption, aspect_list, sections, gates)`` where ``gates[i]`` is
    ``None`` or the list of ``(start_s, end_s)`` spans in which instrument ``i`` of
    ``pm`` may sound (its release tail is faded out after each span ends).
    """
    import pretty_midi

    key = int(rng.integers(0, 12))
    mode = str(rng.choice(("major", "minor")))
    scale = _SCALES[mode]
    bpm = float(rng.integers(76, 141))
    key_name = f"{_NOTE_NAMES[key]} {mode}"
    pm = pretty_midi.PrettyMIDI(initial_tempo=bpm)

    if kind == "aba":
        third = seconds / 3.0
        bounds = [(0.0, third, "A"), (third, 2 * third, "B"), (2 * third, float(seconds), "A")]
        progs = _PROGRESSIONS[mode]
        prog = progs[int(rng.integers(0, len(progs)))]
        melody_in_a = bool(rng.integers(0, 2))
        if melody_in_a:
            # A: plucky melody around C4-C5; B: sustained chords two octaves lower (C2-C3).
            mel_prog = int(rng.choice(_PLUCKY_MID))
            chd_prog = int(rng.choice(_SUSTAINED))
            tonic_a = _tonic_near(key, 60)
            a_inst = pretty_midi.Instrument(program=mel_prog)
            b_inst = pretty_midi.Instrument(program=chd_prog)
            _melody(a_inst, rng, tonic_a, scale, prog, bpm, 0.0, third, lo=2, hi=11)
            _chords(b_inst, rng, tonic_a - 24, scale, prog, bpm, third, 2 * third, low=True)
        else:
            # A: sustained chords around C4; B: plucky melody two octaves higher (C6-C7).
            chd_prog = int(rng.choice(_SUSTAINED))
            mel_prog = int(rng.choice(_PLUCKY_HIGH))
            tonic_a = _tonic_near(key, 60)
            a_inst = pretty_midi.Instrument(program=chd_prog)
            b_inst = pretty_midi.Instrument(program=mel_prog)
            _chords(a_inst, rng, tonic_a, scale, prog, bpm, 0.0, third)
            _melody(b_inst, rng, tonic_a + 24, scale, prog, bpm, third, 2 * third, lo=0, hi=8)
        # A2 repeats A1 literally.
        for note in list(a_inst.notes):
            _add_note(
                a_inst,
                note.pitch,
                note.velocity,
                note.start + 2 * third,
                min(note.end + 2 * third, seconds),
            )
        pm.instruments.extend([a_inst, b_inst])
        mel, chd = _instrument_name(mel_prog), _instrument_name(chd_prog)
        tempo = _tempo_word(bpm)
        if melody_in_a:
            caption = _theme(
                "aba-melody-first",
                f"An A-B-A piece in {key_name}: a plucky eighth-note {mel} melody in a middle-high "
                f"register, then slow, sustained {chd} chords two octaves lower, then the {mel} "
                "melody returns unchanged. "
                f"{tempo.capitalize()} tempo around {int(bpm)} BPM, {_MOOD[mode]}, "
                "with clear, sparse transitions between sections.",
            )
            tags = [mel, chd, "high register melody", "low sustained chords"]
        else:
            caption = _theme(
                "aba-chords-first",
                f"An A-B-A piece in {key_name}: slow, sustained {chd} chords in the middle "
                f"register, then a bright, plucky eighth-note {mel} melody two octaves higher, "
                f"then the {chd} chords return unchanged. "
                f"{tempo.capitalize()} tempo around {int(bpm)} BPM, {_MOOD[mode]}, "
                "with clear, sparse transitions between sections.",
            )
            tags = [chd, mel, "sustained chords", "high register melody"]
        tags += [
            "a-b-a form",
            "sparse transitions",
            "contrasting sections",
            f"{mode} key",
            f"{tempo} tempo",
            *_MOOD[mode].split(" and "),
            "instrumental",
        ]
        gates = [[bounds[0][:2], bounds[2][:2]], [bounds[1][:2]]]
        return pm, caption, tags, bounds, gates

    if kind == "drone":
        program = int(rng.choice(_DRONE))
        voicing = str(rng.choice(("open fifth", "triad")))
        tonic = _tonic_near(key, 48)
        inst = pretty_midi.Instrument(program=program)
        degrees = (0, 4, 7) if voicing == "open fifth" else (0, 2, 4, 7)
        end = float(seconds) + 1.0  # held past the end of the clip: no release inside it
        for d in degrees:
            _add_note(inst, _pitch(tonic, scale, d), 80, 0.0, end)
        _add_note(inst, tonic - 12, 80, 0.0, end)
        pm.instruments.append(inst)
        name = _instrument_name(program)
        chord_desc = (
            f"open-fifth chord on {_NOTE_NAMES[key]}"
            if voicing == "open fifth"
            else f"{key_name} chord"
        )
        caption = _theme(
            "drone",
            f"A flat, static {name} drone holding one {chord_desc} for the whole clip with no "
            "change: no melody, no rhythm, no sections.",
        )
        tags = [
            name,
            "drone",
            "static",
            "sustained chord",
            "no change",
            "no rhythm",
            "ambient",
            "instrumental",
        ]
        return pm, caption, tags, [(0.0, float(seconds), "drone")], [None]

    if kind == "texture":
        variant = str(rng.choice(("ostinato", "cluster")))
        if variant == "ostinato":
            program = int(rng.choice(_OSTINATO))
            tonic = _tonic_near(key, 64)
            length = int(rng.choice((4, 6, 8)))
            step = 15.0 / bpm if bpm < 100 else 30.0 / bpm  # sixteenths when slow, else eighths
            pool = [0, 2, 4, 7, 9, 11]  # tonic chord tones across ~1.5 octaves
            pattern = [int(rng.choice(pool)) for _ in range(length)]
            pattern[0] = 0
            inst = pretty_midi.Instrument(program=program)
            n = int(math.ceil(seconds / step)) + 1
            for i in range(n):
                start = i * step
                _add_note(
                    inst,
                    _pitch(tonic, scale, pattern[i % length]),
                    84 if i % length == 0 else 74,
                    start,
                    start + 0.85 * step,
                )
            pm.instruments.append(inst)
            name = _instrument_name(program)
            tempo = _tempo_word(bpm)
            caption = _theme(
                "texture",
                f"A static texture: one {length}-note {name} ostinato pattern in {key_name} "
                "repeated unchanged for the whole clip, with no sectional change. "
                f"{tempo.capitalize()} tempo around {int(bpm)} BPM, hypnotic and repetitive.",
            )
            tags = [
                name,
                "ostinato",
                "repetitive",
                "static texture",
                "no sectional change",
                f"{mode} key",
                f"{tempo} tempo",
                "hypnotic",
                "instrumental",
            ]
        else:
            program = int(rng.choice(_CLUSTER))
            tonic = _tonic_near(key, 67)
            inst = pretty_midi.Instrument(program=program)
            width = int(rng.integers(5, 8))
            rate = float(rng.uniform(2.5, 4.0))  # onsets per second per cluster note
            for d in range(width):
                pitch = _pitch(tonic, scale, d)
                t = float(rng.uniform(0.0, 1.0 / rate))
                while t < seconds:
                    gap = float(rng.uniform(0.5, 1.5)) / rate
                    _add_note(inst, pitch, int(rng.integers(60, 90)), t, t + 0.8 * gap)
                    t += gap
            pm.instruments.append(inst)
            name = _instrument_name(program)
            caption = _theme(
                "texture",
                f"A static texture: a dense, shimmering cluster of {width} adjacent {key_name} "
                f"scale tones on {name}, retriggered rapidly and "
                "irregularly for the whole clip, with no melody and no sectional change.",
            )
            tags = [
                name,
                "tone cluster",
                "dense",
                "static texture",
                "no sectional change",
                "shimmering",
                "no melody",
                "instrumental",
            ]
        return pm, caption, tags, [(0.0, float(seconds), "texture")], [None]

    raise ValueError(f"unknown demo clip kind {kind!r}")


# --------------------------------------------------------------------------- rendering


def _render_instrument(inst, n_frames: int, rate: int) -> tuple[np.ndarray, np.ndarray]:
    """Render one pretty_midi Instrument to mono float64; also return its 'playing' mask."""
    import tinysoundfont

    synth = tinysoundfont.Synth(samplerate=rate)
    sfid = synth.sfload(_soundfont_bytes())
    chan = 0
    synth.program_select(chan, sfid, 0, int(inst.program))
    events = []
    mask = np.zeros(n_frames, dtype=bool)
    for note in inst.notes:
        on = int(round(note.start * rate))
        off = int(round(note.end * rate))
        events.append((on, 1, note.pitch, note.velocity))
        events.append((off, 0, note.pitch, 0))
        mask[max(on, 0) : max(min(off, n_frames), 0)] = True
    # Note-offs sort before note-ons at the same frame so repeated notes retrigger.
    events.sort()
    buf = memoryview(bytearray(n_frames * 2 * 4))
    pos = 0
    for frame, is_on, pitch, vel in events:
        frame = min(frame, n_frames)
        if frame > pos:
            synth.generate_simple(frame - pos, buffer=buf[pos * 8 : frame * 8])
            pos = frame
        if pos >= n_frames:
            break
        if is_on:
            synth.noteon(chan, pitch, vel)
        else:
            synth.noteoff(chan, pitch)
    if pos < n_frames:
        synth.generate_simple(n_frames - pos, buffer=buf[pos * 8 :])
    stereo = np.frombuffer(buf, dtype=np.float32).reshape(n_frames, 2)
    return stereo.astype(np.float64).mean(axis=1), mask


def _resample(x: np.ndarray, src: int, dst: int, n_out: int) -> np.ndarray:
    if src != dst:
        ratio = Fraction(dst, src)
        if max(ratio.numerator, ratio.denominator) <= 1000:
            from scipy.signal import resample_poly

            x = resample_poly(x, ratio.numerator, ratio.denominator)
        else:
            from scipy.signal import resample

            x = resample(x, int(round(len(x) * dst / src)))
    if len(x) >= n_out:
        return x[:n_out]
    return np.pad(x, (0, n_out - len(x)))


def _gate(spans, n_frames: int, rate: int) -> np.ndarray:
    """Envelope that is 1 inside `spans` and fades out (raised cosine) after each span ends."""
    env = np.zeros(n_frames)
    n_fade = max(1, int(round(_GATE_FADE_S * rate)))
    ramp = 0.5 * (1.0 + np.cos(np.pi * np.arange(1, n_fade + 1) / n_fade))
    for start, end in spans:
        i0, i1 = int(round(start * rate)), min(int(round(end * rate)), n_frames)
        env[i0:i1] = 1.0
        tail = ramp[: max(0, min(n_fade, n_frames - i1))]
        env[i1 : i1 + len(tail)] = np.maximum(env[i1 : i1 + len(tail)], tail)
    return env


def _render_pm(pm, seconds: float, sample_rate: int, gates=None) -> np.ndarray:
    n_out = int(round(seconds * sample_rate))
    rate = max(int(sample_rate), _MIN_RENDER_RATE)
    n_frames = int(math.ceil(seconds * rate)) + 64
    mix = np.zeros(n_frames, dtype=np.float64)
    for i, inst in enumerate(pm.instruments):
        part, mask = _render_instrument(inst, n_frames, rate)
        if gates is not None and gates[i] is not None:
            part = part * _gate(gates[i], n_frames, rate)
        active = part[mask] if mask.any() else part
        rms = float(np.sqrt(np.mean(active**2)))
        if rms > 0:
            mix += part * (_PART_RMS / rms)
    y = _resample(mix, rate, int(sample_rate), n_out)
    n_fade = min(len(y), int(round(_FADE_OUT_S * sample_rate)))
    if n_fade > 1:
        y[-n_fade:] *= np.linspace(1.0, 0.0, n_fade)
    peak = float(np.max(np.abs(y))) if len(y) else 0.0
    if not np.isfinite(peak) or peak <= 0.0:
        raise RuntimeError("demo clip rendered silent or non-finite")
    return (y * (_TARGET_PEAK / peak)).astype(np.float32)


def render_demo_clips(n_clips: int, seconds: float, sample_rate: int, seed: int) -> list[DemoClip]:
    """Render `n_clips` deterministic demo clips of `seconds` s at `sample_rate` Hz.

    Kinds cycle aba, drone, texture, aba, ... ; clip `i` depends only on
    (`i`, `seconds`, `sample_rate`, `seed`).
    """
    if n_clips < 0:
        raise ValueError("n_clips must be >= 0")
    if seconds <= 0 or sample_rate <= 0:
        raise ValueError("seconds and sample_rate must be positive")
    clips = []
    for i in range(n_clips):
        kind = _KIND_CYCLE[i % len(_KIND_CYCLE)]
        rng = np.random.default_rng(np.random.SeedSequence([int(seed) % (1 << 64), i]))
        pm, caption, tags, sections, gates = build_demo_midi(kind, rng, float(seconds))
        audio = _render_pm(pm, float(seconds), int(sample_rate), gates)
        clips.append(
            DemoClip(
                id=f"demo-{i:03d}",
                kind=kind,
                caption=caption,
                aspect_list=list(tags),
                audio=audio,
                sample_rate=int(sample_rate),
                sections=[(float(a), float(b), str(lab)) for a, b, lab in sections],
            )
        )
    return clips
