"""Tests for eisbach.metrics on synthetic 16 kHz signals with known structure.

librosa's first call pays a numba JIT cost, so every clip's metrics are computed once in a
module-scoped fixture and shared by the tests.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from eisbach import metrics as M
from eisbach.metrics import METRICS, bootstrap_ci, compute_metrics, verdict

SR = 16_000


# --- synthetic signals -------------------------------------------------------------------
def _t(seconds: float) -> np.ndarray:
    return np.arange(int(round(seconds * SR))) / SR


def _harmonic(f0: float, seconds: float, n_harm: int = 6, rolloff: float = 0.6) -> np.ndarray:
    """Harmonic tone, peak-normalised to 1."""
    t = _t(seconds)
    y = np.zeros_like(t)
    for k in range(1, n_harm + 1):
        if f0 * k < SR / 2:
            y += rolloff ** (k - 1) * np.sin(2 * np.pi * f0 * k * t)
    return y / np.max(np.abs(y))


def _plucked(seconds: float, period: float, tau: float) -> np.ndarray:
    """Re-attacked envelope: a decay restarting every ``period`` seconds."""
    return 0.3 + 0.7 * np.exp(-np.mod(_t(seconds), period) / tau)


def _f32(y: np.ndarray) -> np.ndarray:
    return np.asarray(y, dtype=np.float32)


def sig_aba() -> np.ndarray:
    """A (plucked 440 Hz tone) - B (sustained 110 Hz tone + light noise) - A, 2.5 s each."""
    rng = np.random.default_rng(1)
    a = 0.5 * _harmonic(440.0, 2.5) * _plucked(2.5, 0.5, 0.15)
    b = 0.3 * _harmonic(110.0, 2.5, n_harm=4) + 0.05 * rng.standard_normal(int(2.5 * SR))
    return _f32(np.concatenate([a, b, a]))


def sig_random_notes(step: float, seconds: float = 7.5, seed: int = 2) -> np.ndarray:
    """A new random note (MIDI 48-83, harmonic timbre) every ``step`` seconds."""
    rng = np.random.default_rng(seed)
    notes = []
    for _ in range(int(round(seconds / step))):
        f0 = 440.0 * 2.0 ** ((int(rng.integers(48, 84)) - 69) / 12)
        notes.append(0.5 * _harmonic(f0, step) * _plucked(step, step, 0.1))
    return _f32(np.concatenate(notes))


def sig_drone(seconds: float = 7.5) -> np.ndarray:
    return _f32(0.5 * _harmonic(220.0, seconds))


def sig_white_noise(seconds: float = 7.5) -> np.ndarray:
    return _f32(0.3 * np.random.default_rng(3).standard_normal(int(seconds * SR)))


def sig_two_plucks(seconds: float = 7.5) -> np.ndarray:
    """Steady 330 Hz tone with two abrupt, fast-decaying 1320 Hz plucks at 2.5 s and 5 s."""
    t = _t(seconds)
    y = 0.3 * _harmonic(330.0, seconds)
    for t0 in (2.5, 5.0):
        on = t >= t0
        dt = t[on] - t0
        y[on] += 0.6 * np.exp(-dt / 0.05) * np.sin(2 * np.pi * 1320.0 * dt)
    return _f32(y)


def sig_timbre_sweep(seconds: float = 7.5) -> np.ndarray:
    """Five distinct timbres in turn: sine, bright tone, white noise, high tone, dark noise."""
    rng = np.random.default_rng(4)
    seg = seconds / 5
    n = int(round(seg * SR))
    t = _t(seg)
    dark = np.convolve(rng.standard_normal(n), np.ones(20) / 20, mode="same")
    parts = [
        0.5 * np.sin(2 * np.pi * 220.0 * t),
        0.5 * _harmonic(220.0, seg, n_harm=20, rolloff=0.95),
        0.2 * rng.standard_normal(n),
        0.5 * _harmonic(880.0, seg, n_harm=3),
        0.5 * dark,
    ]
    return _f32(np.concatenate(parts))


def sig_crescendo(span_db: float = 40.0, hold: float = 1.0, ramp: float = 6.0) -> np.ndarray:
    """330 Hz tone: ``hold`` s at -span dB, a linear-in-dB ramp up, ``hold`` s at 0 dB."""
    gain_db = np.concatenate(
        [
            np.full(int(hold * SR), -span_db),
            np.linspace(-span_db, 0.0, int(ramp * SR)),
            np.zeros(int(hold * SR)),
        ]
    )
    y = 0.8 * _harmonic(330.0, gain_db.size / SR) * 10.0 ** (gain_db / 20.0)
    return _f32(y)


def with_silence(y: np.ndarray, before: float = 1.0, after: float = 2.0) -> np.ndarray:
    return _f32(np.concatenate([np.zeros(int(before * SR)), y, np.zeros(int(after * SR))]))


SIGNALS = {
    "aba": sig_aba,
    "notes_025": lambda: sig_random_notes(0.25),
    "notes_010": lambda: sig_random_notes(0.10),
    "drone": sig_drone,
    "white_noise": sig_white_noise,
    "two_plucks": sig_two_plucks,
    "timbre_sweep": sig_timbre_sweep,
    "crescendo": sig_crescendo,
    "crescendo_padded": lambda: with_silence(sig_crescendo()),
    "drone_padded": lambda: with_silence(sig_drone()),
    # -100 dBFS hiss tail: below the absolute -80 dBFS floor, so it must be gated too
    "drone_hiss_tail": lambda: _f32(
        np.concatenate([sig_drone(), 1e-5 * np.random.default_rng(5).standard_normal(2 * SR)])
    ),
}


@pytest.fixture(scope="module")
def results() -> dict[str, dict[str, float]]:
    return {name: compute_metrics(make(), SR) for name, make in SIGNALS.items()}


# --- interface ---------------------------------------------------------------------------
def test_metric_specs_cover_outputs_and_directions(results):
    assert set(METRICS) == {
        "ssm_block_scale",
        "spectral_contrast_db",
        "flux_sparsity",
        "flux_mean",
        "pca_coverage",
        "dynamic_range_db",
    }
    for name, spec in METRICS.items():
        assert spec.name == name
        assert spec.description.strip() and spec.unit.strip()
        assert isinstance(spec.higher_is_barrier, bool)
    claimed_higher = {n for n, s in METRICS.items() if s.higher_is_barrier}
    assert claimed_higher == set(METRICS) - {"flux_mean"}
    for out in results.values():
        assert list(out) == list(METRICS)
        assert all(isinstance(v, float) for v in out.values())


def test_all_metrics_finite_on_normal_input(results):
    for name, out in results.items():
        bad = {k: v for k, v in out.items() if not math.isfinite(v)}
        assert not bad, f"{name}: non-finite {bad}"


def test_deterministic(results):
    for name in ("aba", "timbre_sweep", "white_noise"):
        assert compute_metrics(SIGNALS[name](), SR) == results[name]


@pytest.mark.parametrize(
    "audio",
    [
        np.zeros(8 * SR, dtype=np.float32),
        _f32(1e-6 * np.random.default_rng(6).standard_normal(8 * SR)),  # about -120 dBFS
        np.zeros(0, dtype=np.float32),
        _f32(0.5 * np.sin(2 * np.pi * 440.0 * _t(0.05))),  # 50 ms: too short to analyse
    ],
    ids=["zeros", "near_silent", "empty", "too_short"],
)
def test_silent_input_gives_nan(audio):
    out = compute_metrics(audio, SR)
    assert list(out) == list(METRICS)
    assert all(math.isnan(v) for v in out.values())


def test_malformed_input_raises():
    with pytest.raises(ValueError):
        compute_metrics(np.zeros((2, SR), dtype=np.float32), SR)
    with pytest.raises(ValueError):
        compute_metrics(np.full(SR, np.nan, dtype=np.float32), SR)


# --- 1. self-similarity block scale ------------------------------------------------------
def test_run_lengths_are_frame_weighted_block_lengths():
    # orthogonal one-hot blocks of 10, 20 and 10 frames -> sum(B^2)/sum(B) = 15 frames
    labels = np.repeat([0, 1, 2], [10, 20, 10])
    feats = np.eye(3)[labels]
    runs = M._run_lengths([feats], threshold=0.9)
    assert runs.tolist() == [10] * 10 + [20] * 20 + [10] * 10
    assert runs.mean() == pytest.approx(15.0)


def test_ssm_block_scale_orders_structure(results):
    aba = results["aba"]["ssm_block_scale"]
    notes = results["notes_025"]["ssm_block_scale"]
    drone = results["drone"]["ssm_block_scale"]
    # A-B-A has 2.5 s sections; the estimator should recover roughly that
    assert 1.8 < aba < 3.2
    assert notes < 0.6 and aba > 3 * notes
    # a drone never changes: its block is the whole analysed clip (7.5 s less one analysis
    # window at each edge), the largest value any 7.5 s clip can get
    assert drone >= 7.5 - 2 * M.N_FFT / SR - 0.05
    same_length = ["aba", "notes_025", "notes_010", "white_noise", "two_plucks", "timbre_sweep"]
    assert all(drone >= results[n]["ssm_block_scale"] for n in same_length)


# --- 2. spectral contrast ----------------------------------------------------------------
def test_spectral_contrast_tone_above_noise(results):
    tone = results["drone"]["spectral_contrast_db"]
    noise = results["white_noise"]["spectral_contrast_db"]
    assert tone > noise + 10.0


# --- 3. flux sparsity --------------------------------------------------------------------
def test_flux_sparsity_transitions_vs_continuous_change(results):
    plucks = results["two_plucks"]["flux_sparsity"]
    assert plucks > 0.9
    assert plucks > results["notes_010"]["flux_sparsity"] + 0.2
    assert plucks > results["white_noise"]["flux_sparsity"] + 0.5
    assert 0.0 <= results["white_noise"]["flux_sparsity"] < 0.3
    # the mean, by contrast, is larger for continuous change
    assert results["notes_010"]["flux_mean"] > 5 * results["two_plucks"]["flux_mean"]


# --- 4. PCA trajectory coverage ----------------------------------------------------------
def test_pca_coverage_sweep_above_drone(results):
    sweep = results["timbre_sweep"]["pca_coverage"]
    drone = results["drone"]["pca_coverage"]
    assert drone < 5.0
    assert sweep > 100.0 and sweep > 20 * max(drone, 1.0)


def test_pca_coverage_gain_invariant():
    y = sig_timbre_sweep()
    loud = compute_metrics(y, SR)["pca_coverage"]
    soft = compute_metrics(_f32(0.05 * y), SR)["pca_coverage"]
    assert soft == pytest.approx(loud, rel=0.02)


# --- 5. dynamic range --------------------------------------------------------------------
def test_dynamic_range_crescendo_and_constant(results):
    cresc = results["crescendo"]["dynamic_range_db"]
    assert 35.0 <= cresc <= 45.0
    assert cresc == pytest.approx(40.0, abs=2.0)
    assert results["drone"]["dynamic_range_db"] < 3.0


def test_dynamic_range_ignores_silence(results):
    for base, padded in [
        ("crescendo", "crescendo_padded"),
        ("drone", "drone_padded"),
        ("drone", "drone_hiss_tail"),
    ]:
        assert results[padded]["dynamic_range_db"] == pytest.approx(
            results[base]["dynamic_range_db"], abs=0.5
        ), padded


def test_other_metrics_nearly_unchanged_by_silence_padding(results):
    # the gate erodes one window into sound, so padding adds at most a few frames
    for base, padded in [("crescendo", "crescendo_padded"), ("drone", "drone_padded")]:
        ref, pad = results[base], results[padded]
        assert pad["ssm_block_scale"] == pytest.approx(ref["ssm_block_scale"], abs=0.2)
        for name in ("spectral_contrast_db", "flux_sparsity", "flux_mean", "pca_coverage"):
            assert pad[name] == pytest.approx(ref[name], rel=0.05, abs=1e-3), (padded, name)


# --- statistics --------------------------------------------------------------------------
def test_bootstrap_ci_difference_of_means():
    rng = np.random.default_rng(2024)
    x = rng.normal(1.0, 1.0, 200)
    y = rng.normal(0.0, 1.0, 200)
    diff, lo, hi = bootstrap_ci(x, y)
    assert diff == pytest.approx(x.mean() - y.mean())
    assert 0.0 < lo < 1.0 < hi
    assert lo < diff < hi
    assert 0.2 < hi - lo < 0.7  # about 2 * 1.96 * sqrt(2 / 200) = 0.55
    assert bootstrap_ci(x, y) == (diff, lo, hi)  # seeded -> reproducible
    assert bootstrap_ci(x, y, seed=1) != (diff, lo, hi)
    # NaNs are dropped, not propagated
    x_nan = np.concatenate([x, [np.nan, np.nan]])
    assert bootstrap_ci(x_nan, y) == (diff, lo, hi)


def test_bootstrap_ci_empty_group_raises():
    with pytest.raises(ValueError, match="'y'"):
        bootstrap_ci(np.ones(5), np.array([np.nan]))
    with pytest.raises(ValueError, match="'x'"):
        bootstrap_ci(np.array([]), np.ones(5))


@pytest.mark.parametrize(
    ("lo", "hi", "higher", "expected"),
    [
        (0.1, 0.5, True, "supported"),
        (0.1, 0.5, False, "contradicted"),
        (-0.5, -0.1, True, "contradicted"),
        (-0.5, -0.1, False, "supported"),
        (-0.1, 0.5, True, "inconclusive"),
        (-0.1, 0.5, False, "inconclusive"),
        (0.0, 0.5, True, "inconclusive"),
        (float("nan"), float("nan"), True, "inconclusive"),
    ],
)
def test_verdict_truth_table(lo, hi, higher, expected):
    assert verdict(lo, hi, higher) == expected
