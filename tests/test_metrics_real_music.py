"""The judge on real recordings no one here tuned on (../shared/data/music, CC BY-SA): section
boundaries of pieces built from them scored with mir_eval.segment, invariances of every metric
on real music, and the guards that keep drones from winning. docs/metrics.md quotes these
readings.

Each clip is analysed once in module-scoped fixtures (librosa's first call pays its numba JIT)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from real_music import RATE, built_pieces, load_music, mp3_round_trip

from eisbach import probe_signals as P
from eisbach.metrics import METRICS, analyse

TABLE2 = [name for name, spec in METRICS.items() if spec.table2]
TOLERANCE = 0.05
# Where a metric is not meant to be invariant to a change (docs/metrics.md says why):
NOT_INVARIANT = {
    # the music above 4 kHz is gone at 8 kHz: the top octave band (3.2-6.4 kHz) of the contrast
    # and the upper mel bands of PCA, flux and timbre lose it, and the frame RMS its energy
    "8 kHz source": {
        "spectral_contrast_db",
        "pca_coverage",
        "flux_sparsity",
        "ssm_block_scale",
        "dynamic_range_db",
        # K-weighting's shelf lifts the band above 1.5 kHz, where the lost content was
        "loudness_range_lu",
    },
    # onsets become decays: the flux is a positive change, so its distribution is not symmetric
    # in time, and a segmentation's frames shift; time reversal is for levels and spectra
    "time reversal": {"flux_sparsity", "ssm_block_scale"},
}


@pytest.fixture(scope="module")
def music():
    return load_music()


@pytest.fixture(scope="module")
def excerpts(music):
    """The metrics of 10 s of each excerpt, no joint in it."""
    return {
        name: analyse(audio[5 * RATE : 15 * RATE], RATE).metrics for name, audio in music.items()
    }


def _f_measures(piece: dict, analysis) -> tuple[float, float]:
    import warnings

    import mir_eval

    est = analysis.boundaries_s
    end = piece["audio"].size / RATE
    estimated = np.stack([np.r_[0.0, est], np.r_[est, end]], axis=1)
    with warnings.catch_warnings():  # a piece read as one section: mir_eval warns, scores 0
        warnings.simplefilter("ignore", UserWarning)
        f = [
            mir_eval.segment.detection(piece["intervals"], estimated, window=w, trim=True)[2]
            for w in (0.5, 3.0)
        ]
    return f[0], f[1]


@pytest.fixture(scope="module")
def structure(music):
    out = []
    for piece in built_pieces(music):
        analysis = analyse(piece["audio"], RATE)
        lengths = np.diff(piece["intervals"], axis=1).ravel()
        f05, f3 = _f_measures(piece, analysis)
        out.append(
            piece
            | {
                "f05": f05,
                "f3": f3,
                # the same statistic as the metric over the built sections
                "true_block_s": float(np.sum(lengths**2) / np.sum(lengths)),
                "block_s": analysis.metrics["ssm_block_scale"],
            }
        )
    return out


def _ratio(p: dict) -> float:
    return p["block_s"] / p["true_block_s"]


def test_boundaries_of_built_pieces_score_f3_of_at_least_0_8(structure):
    f3 = np.mean([p["f3"] for p in structure])
    assert f3 >= 0.8, {p["name"]: round(p["f3"], 2) for p in structure}
    # the tighter window: most joints across tracks found to 0.5 s in the gapless ABAB pieces
    abab = [p for p in structure if p["name"].startswith("ABAB") and p["name"].endswith("across")]
    assert len(abab) == 3 and all(p["f05"] >= 0.65 for p in abab)


def test_block_scale_tracks_the_built_section_length_where_sections_alternate(structure):
    for p in structure:
        if p["form"] == "ABAB":
            assert _ratio(p) == pytest.approx(1.0, abs=0.25), p["name"]
    blocks = [
        p["block_s"] for p in structure if p["name"] in {f"ABAB {s}s across" for s in (2, 4, 8)}
    ]
    assert blocks == sorted(blocks)  # 2 < 4 < 8 s


@pytest.mark.xfail(
    strict=True,
    reason="issue 22 goal not met: repetition ties A A into one section (AABA reads 1.45-1.95x "
    "the built length), and 3 of 7 ABAC pieces merge sections (8 s across 2.5x, 2 s within "
    "with gaps 1.6x, 4 s within one section)",
)
def test_block_scale_within_25_percent_on_every_built_piece(structure):
    assert all(abs(_ratio(p) - 1.0) <= 0.25 for p in structure)


def test_a_steady_arpeggio_has_no_section_boundary():
    out = analyse(P.arpeggio(), 16_000).metrics
    assert out["n_sections"] == 1.0 and math.isnan(out["ssm_block_scale"])
    assert out["static_clip"] == 0.0  # it has notes: Table 2 keeps it


@pytest.mark.xfail(
    strict=True,
    reason="issue 22 goal not met: 6 of 8 single 10 s excerpts (no joint) read 2-4 sections, "
    "their own changes of texture",
)
def test_single_excerpts_have_no_section_boundary(excerpts):
    assert all(m["n_sections"] == 1.0 for m in excerpts.values())


# --- invariances on real music ------------------------------------------------------------
def _changes(y: np.ndarray) -> dict:
    return {
        "gain -40 dB": (P.with_gain(y, -40.0), RATE),
        "DC offset 0.05": (y + np.float32(0.05), RATE),
        "MP3 64 kbps": (mp3_round_trip(y, RATE, 64)[0], RATE),
        "8 kHz source": (P.resampled(y, RATE, 8_000), 8_000),
        "48 kHz source": (P.resampled(y, RATE, 48_000), 48_000),
        "time reversal": (np.ascontiguousarray(y[::-1]), RATE),
    }


@pytest.fixture(scope="module")
def invariances(music):
    out = {}
    for name in ("muldjord-chaos_god", "singularity-nebula"):
        y = music[name][10 * RATE : 20 * RATE]
        ref = analyse(y, RATE).metrics
        for change, args in _changes(y).items():
            out[(name, change)] = (ref, analyse(*args).metrics)
    return out


@pytest.mark.parametrize(
    "change",
    [
        "gain -40 dB",
        "DC offset 0.05",
        "MP3 64 kbps",
        "8 kHz source",
        "48 kHz source",
        "time reversal",
    ],
)
def test_metrics_on_real_music_are_invariant(invariances, change):
    for (_, which), (ref, changed) in invariances.items():
        if which != change:
            continue
        for name in [*TABLE2, "loudness_range_lu"]:
            if name in NOT_INVARIANT.get(change, ()):
                continue
            rel = abs(changed[name] - ref[name]) / abs(ref[name])
            assert rel <= TOLERANCE, f"{name} moved {100 * rel:.1f}% under {change}"


def test_mp3_round_trip_is_near_64_kbps(music):
    _, kbps = mp3_round_trip(music["singularity-nebula"][: 10 * RATE], RATE, 64)
    assert 56 <= kbps <= 80  # variable bit rate: 64.5 and 75 kbps on two excerpts


def test_a_fade_in_counts_as_dynamics(music):
    """Documented: the dynamic range reads a fade as dynamics (it is a change of level)."""
    y = music["singularity-nebula"][10 * RATE : 20 * RATE]
    fade = y * np.linspace(0.0, 1.0, y.size, dtype=np.float32) ** 2
    assert (
        analyse(fade, RATE).metrics["dynamic_range_db"]
        > analyse(y, RATE).metrics["dynamic_range_db"] + 6.0
    )


# --- the static guard and diversity --------------------------------------------------------
def _organ_chord(seconds: float = 10.0, rate: int = 16_000) -> np.ndarray:
    chord = [P.harmonic(P.midi_hz(m), int(seconds * rate), rate, 8, 0.8) for m in (48, 55, 64)]
    return np.asarray(0.3 * sum(chord), np.float32)


def test_a_sustained_chord_is_static_and_real_music_is_not(excerpts):
    """A sustained organ chord out-scores real music on spectral contrast; static_clip flags it,
    and Table 2 leaves static clips out of every metric (tests/test_evaluate.py)."""
    chord = analyse(_organ_chord(), 16_000).metrics
    assert chord["static_clip"] == 1.0
    for name, real in excerpts.items():
        assert real["static_clip"] == 0.0, name
        assert chord["spectral_contrast_db"] > real["spectral_contrast_db"], name


@pytest.fixture(scope="module")
def four_and_four(music, tmp_path_factory):
    """Four real excerpts from four tracks and four drones on four roots, as 10 s WAVs, with
    their analyses and musicnn embeddings (NaN rows... never: the env runs or the test skips)."""
    from eisbach.atomic import write_wav
    from eisbach.frechet import MUSICNN_VENV, musicnn_embeddings

    if not (MUSICNN_VENV / "bin" / "python").exists():
        pytest.skip(f"the musicnn env is not built ({MUSICNN_VENV}; `make setup` builds it)")
    folder = tmp_path_factory.mktemp("vendi")
    names = [
        "muldjord-armygeddon",
        "muldjord-chaos_god",
        "singularity-nebula",
        "singularity-coherence",
    ]
    clips = {f"real-{n}": (music[n][10 * RATE : 20 * RATE], RATE) for n in names}
    clips |= {
        f"drone-{f:g}": (P.drone(10.0, 16_000, f), 16_000) for f in (55.0, 82.4, 110.0, 146.8)
    }
    paths = {}
    for name, (audio, rate) in clips.items():
        paths[name] = folder / f"{name}.wav"
        write_wav(paths[name], audio, rate)
    learned = musicnn_embeddings(list(paths.values()), folder / "cache", threads=2)
    return {
        name: (analyse(*clips[name]).embedding, emb)
        for name, emb in zip(paths, learned, strict=True)
    }


def test_vendi_on_musicnn_counts_four_real_pieces_above_four_drones(four_and_four):
    from eisbach.diversity import vendi, vendi_cosine

    real = [v for k, v in four_and_four.items() if k.startswith("real")]
    drones = [v for k, v in four_and_four.items() if k.startswith("drone")]
    learned_real, learned_drones = (
        vendi_cosine([e for _, e in real]),
        vendi_cosine([e for _, e in drones]),
    )
    assert learned_real > learned_drones + 0.5, (learned_real, learned_drones)
    # the spectral embedding alone reads the drones as diverse as (or more than) real music
    assert vendi([s for s, _ in drones]) > 3.0


def test_consistency_of_real_music_with_itself_at_minus_20_db(music):
    from eisbach.diversity import consistency

    y = music["singularity-coherence"][5 * RATE : 15 * RATE]
    ssm = analyse(y, RATE).ssm
    assert consistency([ssm, analyse(P.with_gain(y, -20.0), RATE).ssm]) > 0.999
