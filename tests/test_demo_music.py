"""Tests for the offline demo-music generator (eisbach.demo_music)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from eisbach.demo_music import DemoClip, build_demo_midi, render_demo_clips

SR = 16000
SECONDS = 6.0


@pytest.fixture(scope="module")
def clips() -> list[DemoClip]:
    return render_demo_clips(8, SECONDS, SR, seed=0)


def band_profile(x: np.ndarray, sr: int, t0: float, t1: float, trim: float = 0.25) -> np.ndarray:
    """Mean log energy in 32 log-spaced bands over [t0 + trim, t1 - trim] (numpy FFT only)."""
    n_fft, hop, n_bands = 1024, 512, 32
    seg = x[int((t0 + trim) * sr) : int((t1 - trim) * sr)].astype(np.float64)
    n = 1 + (len(seg) - n_fft) // hop
    assert n >= 4, "segment too short for the spectral profile"
    idx = np.arange(n_fft)[None, :] + hop * np.arange(n)[:, None]
    power = np.abs(np.fft.rfft(seg[idx] * np.hanning(n_fft), axis=1)) ** 2
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    edges = np.geomspace(50.0, sr / 2, n_bands + 1)
    bands = np.stack(
        [power[:, (freqs >= lo) & (freqs < hi)].sum(1) for lo, hi in zip(edges[:-1], edges[1:])],
        axis=1,
    )
    return np.log10(bands + 1e-10).mean(axis=0)


def dist(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a - b) ** 2)))


def aba_distances(clip: DemoClip) -> tuple[float, float]:
    """(d(A1, A2), min(d(A1, B), d(A2, B)))."""
    (a0, a1, la), (b0, b1, lb), (c0, c1, lc) = clip.sections
    assert (la, lb, lc) == ("A", "B", "A")
    A1 = band_profile(clip.audio, clip.sample_rate, a0, a1)
    B = band_profile(clip.audio, clip.sample_rate, b0, b1)
    A2 = band_profile(clip.audio, clip.sample_rate, c0, c1)
    return dist(A1, A2), min(dist(A1, B), dist(A2, B))


def halves_distance(clip: DemoClip) -> float:
    T = len(clip.audio) / clip.sample_rate
    return dist(
        band_profile(clip.audio, clip.sample_rate, 0.0, T / 2),
        band_profile(clip.audio, clip.sample_rate, T / 2, T),
    )


# --------------------------------------------------------------------------- determinism


def test_deterministic_and_seed_dependent():
    a = render_demo_clips(4, 4.0, SR, seed=7)
    b = render_demo_clips(4, 4.0, SR, seed=7)
    c = render_demo_clips(4, 4.0, SR, seed=8)
    for x, y in zip(a, b, strict=True):
        assert x.audio.tobytes() == y.audio.tobytes()
        assert (x.id, x.kind, x.caption, x.aspect_list, x.sections) == (
            y.id,
            y.kind,
            y.caption,
            y.aspect_list,
            y.sections,
        )
    for x, z in zip(a, c, strict=True):
        assert x.kind == z.kind
        assert not np.array_equal(x.audio, z.audio)


def test_clip_does_not_depend_on_n_clips():
    short = render_demo_clips(2, 3.0, SR, seed=3)
    long = render_demo_clips(5, 3.0, SR, seed=3)
    for x, y in zip(short, long[:2], strict=True):
        assert np.array_equal(x.audio, y.audio)
        assert x.caption == y.caption


# --------------------------------------------------------------------------- format


def test_format(clips):
    n = int(round(SECONDS * SR))
    assert len(clips) == 8
    assert [c.id for c in clips] == [f"demo-{i:03d}" for i in range(8)]
    for c in clips:
        assert isinstance(c, DemoClip)
        assert c.kind in {"aba", "drone", "texture"}
        assert c.sample_rate == SR
        assert c.audio.dtype == np.float32
        assert c.audio.shape == (n,)
        assert np.all(np.isfinite(c.audio))
        peak = float(np.max(np.abs(c.audio)))
        assert 0.2 < peak < 0.9
        # Not silent over long stretches: every second carries signal.
        for i in range(int(SECONDS)):
            assert np.sqrt(np.mean(c.audio[i * SR : (i + 1) * SR] ** 2)) > 1e-3
        assert isinstance(c.caption, str) and len(c.caption.split()) >= 8
        assert c.aspect_list and all(isinstance(t, str) and t.strip() for t in c.aspect_list)
        # Sections tile [0, seconds].
        assert c.sections[0][0] == 0.0
        assert c.sections[-1][1] == pytest.approx(SECONDS)
        for (s0, e0, _), (s1, _, _) in zip(c.sections, c.sections[1:]):
            assert e0 == pytest.approx(s1)
            assert e0 > s0
        if c.kind == "aba":
            assert [lab for _, _, lab in c.sections] == ["A", "B", "A"]
            assert "a-b-a form" in c.aspect_list
        else:
            assert [lab for _, _, lab in c.sections] == [c.kind]
    ids = [c.id for c in clips]
    assert len(set(ids)) == len(ids)


def test_kind_mix():
    kinds = [c.kind for c in render_demo_clips(4, 2.0, SR, seed=0)]
    assert {"aba", "drone", "texture"} <= set(kinds)
    assert kinds.count("aba") == 2
    # The long-run mix: half aba, a quarter each of drone and texture.
    from eisbach.demo_music import _KIND_CYCLE

    cyc = [_KIND_CYCLE[i % len(_KIND_CYCLE)] for i in range(24)]
    assert (cyc.count("aba"), cyc.count("drone"), cyc.count("texture")) == (12, 6, 6)


@pytest.mark.parametrize(
    ("seconds", "sr"), [(2.3, 22050), (1.77, 24000), (2.0, 8000), (0.5, 16000)]
)
def test_exact_length_at_other_rates(seconds, sr):
    (clip,) = render_demo_clips(1, seconds, sr, seed=1)
    assert clip.audio.shape == (int(round(seconds * sr)),)
    assert clip.sample_rate == sr
    assert 0.2 < float(np.max(np.abs(clip.audio))) < 0.9


# --------------------------------------------------------------------------- structure


def test_aba_sections_are_real(clips):
    abas = [c for c in clips if c.kind == "aba"]
    assert len(abas) == 4
    for c in abas:
        d_aa, d_ab = aba_distances(c)
        assert d_aa < 0.5 * d_ab, (c.id, d_aa, d_ab)


def test_drone_and_texture_are_static(clips):
    d_ab = min(aba_distances(c)[1] for c in clips if c.kind == "aba")
    drones = [c for c in clips if c.kind == "drone"]
    textures = [c for c in clips if c.kind == "texture"]
    assert drones and textures
    for c in drones:
        assert halves_distance(c) < 0.3 * d_ab, (c.id, halves_distance(c), d_ab)
    for c in textures:
        assert halves_distance(c) < 0.5 * d_ab, (c.id, halves_distance(c), d_ab)


@pytest.mark.parametrize("seed", range(6))
def test_aba_score_contrasts(seed):
    """At the score level B differs from A in program, register (~2 octaves) and density."""
    pm, caption, tags, sections, gates = build_demo_midi("aba", np.random.default_rng(seed), 8.0)
    a_inst, b_inst = pm.instruments
    assert a_inst.program != b_inst.program
    third = 8.0 / 3
    a1 = [n for n in a_inst.notes if n.start < third]
    a2 = [n for n in a_inst.notes if n.start >= 2 * third]
    assert [(n.pitch, round(n.start + 2 * third, 6)) for n in a1] == [
        (n.pitch, round(n.start, 6)) for n in a2
    ]
    assert all(third - 1e-6 <= n.start and n.end <= 2 * third for n in b_inst.notes)
    assert abs(np.mean([n.pitch for n in a1]) - np.mean([n.pitch for n in b_inst.notes])) >= 18
    onsets_a = len({round(n.start, 6) for n in a1})
    onsets_b = len({round(n.start, 6) for n in b_inst.notes})
    assert max(onsets_a, onsets_b) >= 2.5 * min(onsets_a, onsets_b)
    assert gates[0] is not None and gates[1] is not None
    assert pm.instruments[0].notes and "A-B-A" in caption


def test_drone_score_is_one_held_chord():
    pm, caption, _, sections, _ = build_demo_midi("drone", np.random.default_rng(0), 8.0)
    notes = [n for inst in pm.instruments for n in inst.notes]
    assert len(pm.instruments) == 1 and len(notes) >= 3
    assert all(n.start == 0.0 and n.end >= 8.0 for n in notes)
    assert sections == [(0.0, 8.0, "drone")]
    assert "drone" in caption


def test_render_speed():
    t0 = time.perf_counter()
    out = render_demo_clips(24, 8.0, SR, seed=0)
    elapsed = time.perf_counter() - t0
    assert len(out) == 24
    assert elapsed < 10.0, f"24 x 8 s took {elapsed:.1f} s"


def test_character_prompts_name_trained_styles():
    """Each of the paper's character prompts opens the captions of one style, so the tiny
    model's tokenizer knows its words."""
    import yaml
    from conftest import REPO

    from eisbach.demo_music import CHARACTER_THEMES

    prompts = {
        p["text"]
        for p in yaml.safe_load((REPO / "config/config.yaml").read_text())["sample"]["prompts"]
    }
    assert set(CHARACTER_THEMES.values()) == prompts
    opened = {}
    for kind in ("aba", "drone", "texture"):
        for seed in range(12):
            _, caption, *_ = build_demo_midi(kind, np.random.default_rng(seed), 6.0)
            owner = [name for name in prompts if caption.startswith(f"{name}'s theme. ")]
            assert len(owner) == 1, caption
            if owner:
                opened.setdefault(owner[0], set()).add(kind)
    assert opened == {
        "Little Piglet Prince": {"aba"},
        "Professor Pallas Cat": {"aba"},
        "Raccoon Mathematician": {"texture"},
        "Seal Lawyer": {"drone"},
    }
