"""Structure metrics for the Table 2 claims, validated on signals whose answer is known.

docs/metrics.md defines every metric (formula, librosa calls, parameters, units, what it is
invariant to) and justifies it against the paper's wording. In short:

* Every clip is analysed at one internal rate (``ANALYSIS_RATE``, 16 kHz mono) with frames
  fixed in seconds, so the source sample rate barely moves a metric.
* DC is removed first (the clip's mean, then a 20 Hz high-pass), before any level or spectrum.
* Silence is gated relative to the clip: a frame is active within 60 dB of the clip's loudest
  frame (eroded by one window), never by an absolute level, so gain does not move the gate; a
  clip whose peak is below -120 dBFS is silent. Every metric uses active frames only; under 8
  active frames gives NaN.
* Spectra are floored at ``FLOOR_DB`` below the clip's loudest bin before any logarithm, so a
  quiet noise floor (-70 dBFS) under music does not move the metrics; all metrics are relative
  to the clip's own level, so gain does not move them.
* ``ssm_block_scale`` comes from Laplacian structural segmentation (eisbach.structure, McFee &
  Ellis 2014): the frame-weighted mean length of its sections, NaN for a clip with no section
  boundary (``n_sections`` = 1).
* ``static_clip`` = 1 for a clip whose sound never changes (no onset stands out of its flux: a
  drone, a sustained chord, stationary noise). Table 2 leaves static clips out of every metric
  and shows their share per group, so a drone cannot win any claim.

:func:`analyse` returns the metrics with the clip's fixed-size self-similarity matrix (for
cross-seed consistency) and its embedding (for the Vendi score); :func:`compute_metrics`
returns the metrics alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "ANALYSIS_RATE",
    "METRICS",
    "Analysis",
    "MetricSpec",
    "analyse",
    "bootstrap_ci",
    "compute_metrics",
]

ANALYSIS_RATE = 16_000
N_FFT = 2048  # 128 ms
HOP_LENGTH = 512  # 32 ms
N_MELS = 64
SILENT_PEAK_DBFS = -120.0  # a clip peaking below this is silence (below 20-bit resolution)
GATE_REL_DB = 60.0
DC_HIGHPASS_HZ = 20.0
MIN_ACTIVE_FRAMES = 8
FLOOR_DB = 60.0  # spectra floored this far below the clip's loudest bin
SSM_SMOOTH_S = 0.25
N_MFCC = 20
STATIC_PEAKINESS = 1.5  # onset peakiness below this: no onset stands out (drone 1.0, noise 1.25)
LRA_PEAK_DBFS = -1.0  # clips are normalised to this peak before EBU R128's absolute -70 LUFS gate
SSM_GRID = 64  # the fixed-size SSM kept for cross-seed consistency
CONTRAST_FMIN = 200.0
CONTRAST_BANDS = 5  # octaves 200 Hz .. 6.4 kHz, below any resampler's cutoff at 16 kHz
CONTRAST_FMAX = CONTRAST_FMIN * 2.0**CONTRAST_BANDS
CONTRAST_SMOOTH_S = 0.25
FLUX_SOFT_DB = 0.5  # dB/frame added before the Gini: jitter of a static tone is not "sparse"
_EPS = 1e-12


@dataclass(frozen=True)
class MetricSpec:
    """One metric: what it is and which direction the paper claims for the barrier."""

    name: str
    description: str
    unit: str
    higher_is_barrier: bool
    # False for secondary statistics whose direction the paper does not state: no verdict.
    table2: bool = True


_SPECS = [
    MetricSpec(
        "ssm_block_scale",
        "Frame-weighted mean section length of a Laplacian structural segmentation (McFee & "
        "Ellis 2014: chroma recurrence + MFCC path graph, k-means on its eigenvectors, k by "
        "silhouette); NaN for a clip with no section boundary (n_sections = 1)",
        "s",
        True,
    ),
    MetricSpec(
        "spectral_contrast_db",
        "Mean librosa spectral_contrast over octave bands 200 Hz-6.4 kHz and active frames, "
        "the spectrum floored 60 dB below its loudest bin",
        "dB",
        True,
    ),
    MetricSpec(
        "flux_sparsity",
        "Gini coefficient of the spectral flux (librosa onset_strength of the floored log-mel) "
        "plus 0.5 dB/frame; high when change comes in a few peaks (transitions)",
        "gini",
        True,
    ),
    MetricSpec(
        "pca_coverage",
        "Area of the 1-sigma ellipse of the active frames' log-mel trajectory on its first two "
        "principal components (pi sqrt(l1 l2)), a length-robust coverage",
        "dB^2",
        True,
    ),
    MetricSpec(
        "dynamic_range_db",
        "95th minus 5th percentile of the active frames' RMS level (DC removed, frames gated "
        "60 dB below the clip's loudest; fades count)",
        "dB",
        True,
    ),
    MetricSpec(
        "flux_mean",
        "Mean spectral flux over active frames (secondary: no stated direction)",
        "dB/frame",
        False,
        table2=False,
    ),
    MetricSpec(
        "onset_peakiness",
        "95th percentile over median of the spectral flux (each + 0.5 dB/frame): how much the "
        "note onsets stand out of the flux between them (secondary: the samples against the "
        "training clips, no stated direction)",
        "ratio",
        False,
        table2=False,
    ),
    MetricSpec(
        "loudness_range_lu",
        "EBU R128 loudness range (EBU Tech 3342, libebur128 via pyebur128: 3 s short-term "
        "loudness, relative gate -20 LU, 10th to 95th percentile) of the clip normalised to "
        "-1 dBFS peak (secondary: the standard's range, beside dynamic_range_db)",
        "LU",
        False,
        table2=False,
    ),
    MetricSpec(
        "n_sections",
        "Sections of the Laplacian segmentation (1: no section boundary, ssm_block_scale NaN)",
        "count",
        False,
        table2=False,
    ),
    MetricSpec(
        "static_clip",
        "1 when no onset stands out of the clip's spectral flux (onset_peakiness < 1.5: a drone, "
        "a sustained chord, stationary noise), else 0; Table 2 leaves static clips out",
        "flag",
        False,
        table2=False,
    ),
]

METRICS: dict[str, MetricSpec] = {spec.name: spec for spec in _SPECS}


@dataclass
class Analysis:
    metrics: dict[str, float]
    ssm: np.ndarray | None  # [SSM_GRID, SSM_GRID] over the clip's duration, None when silent
    embedding: np.ndarray | None  # mean and std of the floored log-mel (dB), None when silent
    # where the segmentation's sections start, in s from the clip's start (not cached)
    boundaries_s: np.ndarray | None = None


def _nan_analysis() -> Analysis:
    return Analysis({name: float("nan") for name in METRICS}, None, None)


def _seconds_to_frames(seconds: float) -> int:
    return max(1, int(round(seconds * ANALYSIS_RATE / HOP_LENGTH)))


def _active_mask(level_db: np.ndarray) -> np.ndarray:
    """Gate silence, then drop frames whose analysis window reaches silence or the clip edge,
    so that centred-framing padding and clicks at silence boundaries never enter a metric."""
    import scipy.ndimage

    finite = np.isfinite(level_db)
    if not finite.any():
        return np.zeros_like(level_db, dtype=bool)
    gate = finite & (level_db > float(np.max(level_db[finite])) - GATE_REL_DB)
    radius = N_FFT // HOP_LENGTH
    return scipy.ndimage.binary_erosion(
        gate, structure=np.ones(2 * radius + 1, dtype=bool), border_value=0
    )


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > _EPS)


def _self_similarity(chroma: np.ndarray, mel_db: np.ndarray, active: np.ndarray) -> np.ndarray:
    """Mean of the chroma and timbre cosine self-similarity matrices over every frame of the
    clip, for cross-seed consistency; gated frames are similar to nothing, so the matrix spans
    the clip's duration and a gain change (which moves no relative gate) leaves it unchanged."""
    import scipy.ndimage

    timbre = mel_db - mel_db.min()  # non-negative dB above the floor
    window = _seconds_to_frames(SSM_SMOOTH_S) | 1
    sims = []
    for feat in (chroma, timbre):
        f = _unit_rows(feat.T.astype(np.float64)) * active[:, None]
        f = scipy.ndimage.uniform_filter1d(f, size=window, axis=0, mode="nearest")
        f = _unit_rows(f) * active[:, None]
        sims.append(f @ f.T)
    return 0.5 * (sims[0] + sims[1])


def _grid_ssm(ssm: np.ndarray) -> np.ndarray:
    """The SSM resampled to SSM_GRID x SSM_GRID over the clip, for clips of any length."""
    import scipy.ndimage

    zoom = SSM_GRID / ssm.shape[0]
    return scipy.ndimage.zoom(ssm, zoom, order=1, mode="nearest")[:SSM_GRID, :SSM_GRID]


def _block_scale(chroma: np.ndarray, mel_db: np.ndarray) -> tuple[float, int, np.ndarray]:
    """(frame-weighted mean section length in s, number of sections, boundary frames) of the
    active frames' Laplacian segmentation; NaN when it finds no boundary."""
    import librosa

    from eisbach.structure import segment

    mfcc = librosa.feature.mfcc(S=mel_db, n_mfcc=N_MFCC)
    seg = segment(chroma, mfcc, mel_db, HOP_LENGTH / ANALYSIS_RATE)
    if seg.boundaries.size == 0:
        return float("nan"), 1, seg.boundaries
    edges = np.concatenate([[0], seg.boundaries, [mel_db.shape[1]]])
    lengths = np.diff(edges).astype(np.float64)
    block = float(np.sum(lengths**2) / np.sum(lengths) * HOP_LENGTH / ANALYSIS_RATE)
    return block, int(lengths.size), seg.boundaries


def _loudness_range_lu(y: np.ndarray) -> float:
    """EBU Tech 3342 loudness range by libebur128, the clip first normalised to a fixed peak so
    that the standard's absolute -70 LUFS gate never depends on the clip's gain."""
    import pyebur128

    peak = float(np.max(np.abs(y)))
    if y.size < 3 * ANALYSIS_RATE or peak <= 0.0:
        return float("nan")
    state = pyebur128.R128State(1, ANALYSIS_RATE, pyebur128.MeasurementMode.MODE_LRA)
    x = np.ascontiguousarray(y * (10.0 ** (LRA_PEAK_DBFS / 20.0) / peak), dtype=np.float64)
    state.add_frames(x, x.size)
    return float(pyebur128.get_loudness_range(state))


def _spectral_contrast_db(power: np.ndarray, freqs: np.ndarray) -> float:
    """librosa's contrast of the spectrum averaged over CONTRAST_SMOOTH_S: a partial that lasts
    is a peak, while the bin-to-bin scatter of noise within one frame averages out."""
    import librosa
    import scipy.ndimage

    # the lowest band starts above the DC high-pass, whose stop band would be its valley
    keep = (freqs >= 2.0 * DC_HIGHPASS_HZ) & (freqs <= CONTRAST_FMAX)
    window = _seconds_to_frames(CONTRAST_SMOOTH_S)
    smooth = scipy.ndimage.uniform_filter1d(power[keep], size=window, axis=1, mode="nearest")
    contrast = librosa.feature.spectral_contrast(
        S=np.sqrt(smooth),
        sr=ANALYSIS_RATE,
        freq=freqs[keep],
        fmin=CONTRAST_FMIN,
        n_bands=CONTRAST_BANDS,
    )
    return float(np.mean(contrast))


def _gini(values: np.ndarray) -> float:
    """Gini coefficient of non-negative values (0 = uniform, -> 1 = one spike)."""
    v = np.sort(np.asarray(values, dtype=np.float64).ravel())
    n = v.size
    total = float(v.sum())
    if n == 0:
        return float("nan")
    if total <= 0.0:
        return 0.0
    ranks = np.arange(1, n + 1)
    return float(np.sum((2 * ranks - n - 1) * v) / (n * total))


def _peakiness(values: np.ndarray) -> float:
    """p95 / median: onsets spike out of a low floor; a smear or a drone stays near 1."""
    p50, p95 = np.percentile(values, [50.0, 95.0])
    return float(p95 / p50)


def _flux(mel_db: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Spectral flux (dB/frame, mean over mel bands of the positive change) between consecutive
    active frames."""
    import librosa

    env = librosa.onset.onset_strength(
        S=mel_db, sr=ANALYSIS_RATE, lag=1, max_size=1, center=False, detrend=False
    ).astype(np.float64)
    return env[: pairs.size][pairs]


def _pca_coverage(mel_db: np.ndarray) -> float:
    x = mel_db.T.astype(np.float64)
    x = (x - x.mean(axis=0)) / math.sqrt(x.shape[1])
    eig = np.sort(np.linalg.eigvalsh(np.cov(x, rowvar=False)))[::-1]
    l1, l2 = max(float(eig[0]), 0.0), max(float(eig[1]), 0.0)
    return float(math.pi * math.sqrt(l1 * l2))


def _prepare(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    y = np.asarray(audio)
    if y.ndim != 1:
        raise ValueError(f"metrics expect mono 1-D audio, got shape {y.shape}")
    if int(sample_rate) <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    y = y.astype(np.float32, copy=False)
    if y.size and not np.all(np.isfinite(y)):
        raise ValueError("audio contains non-finite samples")
    if int(sample_rate) != ANALYSIS_RATE and y.size > 1:
        import librosa

        y = librosa.resample(y, orig_sr=int(sample_rate), target_sr=ANALYSIS_RATE)
    return _remove_dc(y)


def _remove_dc(y: np.ndarray) -> np.ndarray:
    """The clip's mean removed, then a zero-phase 2nd-order Butterworth high-pass at 20 Hz (slow
    drift): a DC offset must move no level and no spectrum."""
    import scipy.signal

    y = y.astype(np.float64) - float(np.mean(y)) if y.size else y.astype(np.float64)
    if y.size > 64:
        sos = scipy.signal.butter(2, DC_HIGHPASS_HZ, "highpass", fs=ANALYSIS_RATE, output="sos")
        y = scipy.signal.sosfiltfilt(sos, y)
    return y.astype(np.float32)


def analyse(audio: np.ndarray, sample_rate: int) -> Analysis:
    """Every metric of :data:`METRICS` for one mono clip, with its SSM and embedding.

    Raises ValueError only for malformed input (not 1-D, non-finite, rate <= 0); silent or
    too-short clips give NaN metrics and no SSM or embedding."""
    import librosa

    y = _prepare(audio, sample_rate)
    if y.size < N_FFT or not np.max(np.abs(y)) > 10.0 ** (SILENT_PEAK_DBFS / 20.0):
        return _nan_analysis()
    rms = librosa.feature.rms(y=y, frame_length=N_FFT, hop_length=HOP_LENGTH, center=True)[0]
    with np.errstate(divide="ignore"):
        level_db = 20.0 * np.log10(rms.astype(np.float64))
    active = _active_mask(level_db)
    if int(active.sum()) < MIN_ACTIVE_FRAMES:
        return _nan_analysis()

    magnitude = np.abs(librosa.stft(y, n_fft=N_FFT, hop_length=HOP_LENGTH, center=True))
    n = min(magnitude.shape[1], level_db.size)
    magnitude, level_db, active = magnitude[:, :n].astype(np.float64), level_db[:n], active[:n]
    floor = float(np.max(magnitude[:, active])) * 10.0 ** (-FLOOR_DB / 20.0)
    magnitude = np.maximum(magnitude, floor)
    power = magnitude**2
    mel = librosa.feature.melspectrogram(S=power, sr=ANALYSIS_RATE, n_fft=N_FFT, n_mels=N_MELS)
    mel_floor = float(np.max(mel[:, active])) * 10.0 ** (-FLOOR_DB / 10.0)
    mel_db = 10.0 * np.log10(np.maximum(mel, mel_floor))

    pairs = np.zeros_like(active)
    pairs[1:] = active[1:] & active[:-1]
    flux = _flux(mel_db, pairs)
    act_mel = mel_db[:, active]
    chroma = librosa.feature.chroma_stft(S=power, sr=ANALYSIS_RATE, n_fft=N_FFT, tuning=0.0)
    ssm = _self_similarity(chroma, mel_db, active)
    block, n_sections, bounds = _block_scale(chroma[:, active], act_mel)
    boundaries_s = np.flatnonzero(active)[bounds] * HOP_LENGTH / ANALYSIS_RATE
    peakiness = _peakiness(flux + FLUX_SOFT_DB) if flux.size else float("nan")
    p5, p95 = np.percentile(level_db[active], [5.0, 95.0])
    freqs = librosa.fft_frequencies(sr=ANALYSIS_RATE, n_fft=N_FFT)
    metrics = {
        "ssm_block_scale": block,
        "spectral_contrast_db": _spectral_contrast_db(power[:, active], freqs),
        "flux_sparsity": _gini(flux + FLUX_SOFT_DB) if flux.size else float("nan"),
        "pca_coverage": _pca_coverage(act_mel),
        "dynamic_range_db": float(p95 - p5),
        "flux_mean": float(np.mean(flux)) if flux.size else float("nan"),
        "onset_peakiness": peakiness,
        "loudness_range_lu": _loudness_range_lu(y),
        "n_sections": float(n_sections),
        "static_clip": float(peakiness < STATIC_PEAKINESS),
    }
    rel = act_mel - act_mel.max()
    embedding = np.concatenate([rel.mean(axis=1), rel.std(axis=1)])
    return Analysis(
        {k: float(metrics[k]) for k in METRICS}, _grid_ssm(ssm), embedding, boundaries_s
    )


def compute_metrics(audio: np.ndarray, sample_rate: int) -> dict[str, float]:
    """The metrics of :func:`analyse` alone."""
    return analyse(audio, sample_rate).metrics


def bootstrap_ci(x, y, n_boot: int = 2000, seed: int = 0, alpha: float = 0.05):
    """(mean(x) - mean(y), lo, hi): a percentile bootstrap (scipy.stats.bootstrap, via
    eisbach.stats) of the difference of means of two independent groups, NaNs dropped. Raises
    ValueError naming the group that is empty."""
    from eisbach.stats import independent_bootstrap

    if int(n_boot) < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0.0 < float(alpha) < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    groups = []
    for label, values in (("x", x), ("y", y)):
        v = np.asarray(values, dtype=np.float64).ravel()
        v = v[~np.isnan(v)]
        if v.size == 0:
            raise ValueError(f"group {label!r} is empty after dropping NaNs")
        groups.append(v)
    diff, lo, hi, _ = independent_bootstrap(*groups, n_boot, seed, alpha)
    return diff, lo, hi
