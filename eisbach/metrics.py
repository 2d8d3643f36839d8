"""Structure metrics for the Eisbach log-barrier claims (barrier vs. unweighted "Table 2").

Every metric is computed from one mono clip by :func:`compute_metrics`; the claimed
direction of each (barrier vs. baseline) is recorded in :data:`METRICS`.  Group
comparisons use :func:`bootstrap_ci` and :func:`verdict`.

Shared analysis (all metrics)
-----------------------------
* STFT: ``n_fft = 2048`` (128 ms at 16 kHz), ``hop = 512`` (32 ms), Hann window, centred
  frames; frame ``t`` of every feature below is frame ``t`` of the RMS envelope.
* Silence gate: frame RMS (``librosa.feature.rms``, same framing) in dBFS
  (``20 log10 rms``, full scale = 1.0).  A frame passes when its level is above
  ``-80 dBFS`` **and** within ``60 dB`` of the loudest frame.  The pass mask is eroded by
  one window length (4 frames) on each side, clip edges counting as silence, so an
  *active* frame's whole analysis window lies in non-silent audio: centred-framing
  padding and the clicks where sound meets digital silence never enter a metric, and
  prepending/appending silence leaves every metric (nearly) unchanged.  All metrics use
  active frames only.  With fewer than :data:`MIN_ACTIVE_FRAMES` (8, about 0.26 s)
  active frames the clip counts as silent and every metric is NaN (any clip shorter
  than about 0.5 s therefore gives NaN).

Metric definitions
------------------
``ssm_block_scale`` (s)
    Two per-frame features: chroma (12 bins, ``chroma_stft`` of the power STFT, no tuning
    estimation) and a log-compressed 64-band mel spectrum ``log1p(1000 * mel / max(mel))``
    (gain invariant, non-negative, so stationary noise is self-similar, unlike MFCCs).
    Each is L2-normalised per frame, averaged over a centred moving window of about
    :data:`SSM_SMOOTH_S` s (17 frames at 16 kHz; this bridges single notes so that a
    sustained harmony or arpeggio counts as one block) and re-normalised.  The
    self-similarity matrix over the active frames is the mean of the two cosine
    similarity matrices.  For every frame ``i`` we take the contiguous run of frames ``j``
    around ``i`` (forward and backward along row ``i``) whose similarity to ``i`` stays at
    or above :data:`SSM_THRESHOLD` (0.9); the metric is the mean run length in seconds
    over all active frames.  A frame inside a homogeneous block of length ``B`` has run
    ``B``, so the value is the frame-weighted mean block length ``sum(B^2) / sum(B)``.
    A clip that never changes (a drone, stationary noise) scores its whole active
    duration, the maximum possible, so values are comparable only between clips of
    equal length.
``spectral_contrast_db`` (dB)
    Mean of ``librosa.feature.spectral_contrast`` (magnitude STFT, ``fmin = 200 Hz``,
    up to 6 octave bands, fewer when the Nyquist frequency requires it) over all bands
    and active frames.  librosa's convention is used as is (``power_to_db`` applied to
    band peak/valley magnitudes).
``flux_sparsity`` (Gini coefficient, 0-1)
    Spectral flux = ``librosa.onset.onset_strength`` with ``lag=1, max_size=1,
    center=False``: the mean over 128 mel bands of the positive increase of the log-mel
    spectrogram (dB) from frame ``t-1`` to ``t``, kept for pairs of consecutive active
    frames.  The metric is the Gini coefficient of these flux values: near 1 when the
    flux is concentrated in a few peaks (transitions), lower when change is spread
    uniformly (about 0.1 for white noise).  0 when the flux is identically zero.  Being
    scale free, it reflects numerical jitter for a perfectly static synthetic tone.
``flux_mean`` (dB per frame)
    Mean of the same spectral flux over active frames (secondary statistic).
``pca_coverage`` (dB^2)
    Features: log-mel spectrogram (64 mel bands, dB relative to the clip's loudest bin,
    floored at -80 dB) of the active frames, centred per band and divided by
    ``sqrt(64)`` so that a frame's distance from the mean is its RMS-over-bands dB
    deviation.  Standardisation is to a fixed dB scale rather than per-band z-scores:
    z-scoring would inflate the numerical jitter of a steady drone to unit variance.  The
    frames are projected on the first two principal components (SVD, sign fixed so that
    each component's largest-magnitude loading is positive) and the metric is the area of
    the convex hull of the 2-D trajectory (``scipy.spatial.ConvexHull``), in dB^2.  It
    is invariant to overall gain; a degenerate (collinear or constant) trajectory has
    area 0.
``dynamic_range_db`` (dB)
    ``p95 - p5`` of the active frames' RMS level in dB (percentiles, never max/min, so
    single clicks or fade tails do not dominate; silence is removed by the gate above,
    so appended digital silence leaves the value unchanged).

``compute_metrics`` raises ``ValueError`` only for malformed input (not 1-D, or
non-finite samples, or a non-positive sample rate); silent, near-silent or empty clips
give NaN, never an exception.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "METRICS",
    "MetricSpec",
    "bootstrap_ci",
    "compute_metrics",
    "verdict",
]

# --- analysis constants ------------------------------------------------------------------
N_FFT = 2048
HOP_LENGTH = 512
GATE_ABS_DBFS = -80.0
GATE_REL_DB = 60.0
MIN_ACTIVE_FRAMES = 8
SSM_THRESHOLD = 0.9
SSM_SMOOTH_S = 0.5
SSM_N_MELS = 64
SSM_MEL_GAMMA = 1000.0
CONTRAST_FMIN = 200.0
CONTRAST_MAX_BANDS = 6
FLUX_N_MELS = 128
PCA_N_MELS = 64
PCA_TOP_DB = 80.0
_SSM_ROW_CHUNK = 512
_BOOT_BLOCK_ELEMENTS = 2_000_000
_EPS = 1e-12


@dataclass(frozen=True)
class MetricSpec:
    """Metadata for one metric: what it is and which direction the paper claims."""

    name: str
    description: str
    unit: str
    higher_is_barrier: bool
    # False for secondary statistics whose direction the paper does not state: no verdict.
    table2: bool = True


_SPECS = [
    MetricSpec(
        name="ssm_block_scale",
        description=(
            "Mean over active frames of the length (s) of the contiguous run of frames "
            "whose similarity to that frame stays >= 0.9 in the mean of the chroma and "
            "compressed-mel cosine self-similarity matrices (0.5 s smoothed features), "
            "i.e. the frame-weighted mean homogeneous-block length."
        ),
        unit="s",
        higher_is_barrier=True,
    ),
    MetricSpec(
        name="spectral_contrast_db",
        description=(
            "Mean of librosa spectral_contrast (octave-band peak-to-valley level, fmin "
            "200 Hz) over bands and active frames."
        ),
        unit="dB",
        higher_is_barrier=True,
    ),
    MetricSpec(
        name="flux_sparsity",
        description=(
            "Gini coefficient of the spectral flux (librosa onset_strength, positive "
            "log-mel difference) over active frames; high means few strong peaks."
        ),
        unit="gini",
        higher_is_barrier=True,
    ),
    MetricSpec(
        name="flux_mean",
        description=(
            "Mean spectral flux (librosa onset_strength) over active frames; secondary "
            "statistic whose lower-for-barrier direction is inferred from the claim of "
            "longer coherent sections with change concentrated at transitions."
        ),
        unit="dB/frame",
        higher_is_barrier=False,
        table2=False,
    ),
    MetricSpec(
        name="pca_coverage",
        description=(
            "Convex-hull area of the active frames' 2-D PCA trajectory of the log-mel "
            "spectrogram (dB re clip max, centred, RMS-over-bands dB scale)."
        ),
        unit="dB^2",
        higher_is_barrier=True,
    ),
    MetricSpec(
        name="dynamic_range_db",
        description=(
            "95th minus 5th percentile of frame RMS level (dBFS) over frames above "
            "-80 dBFS and within 60 dB of the loudest frame."
        ),
        unit="dB",
        higher_is_barrier=True,
    ),
]

METRICS: dict[str, MetricSpec] = {spec.name: spec for spec in _SPECS}


# --- helpers -----------------------------------------------------------------------------
def _nan_result() -> dict[str, float]:
    return {name: float("nan") for name in METRICS}


def _frame_level_db(audio: np.ndarray) -> np.ndarray:
    import librosa

    rms = librosa.feature.rms(y=audio, frame_length=N_FFT, hop_length=HOP_LENGTH, center=True)[0]
    with np.errstate(divide="ignore"):
        return 20.0 * np.log10(rms.astype(np.float64))


def _active_mask(level_db: np.ndarray) -> np.ndarray:
    """Gate silence, then drop frames whose analysis window reaches silence or the clip edge.

    A frame passes the gate when its level is above ``GATE_ABS_DBFS`` and within
    ``GATE_REL_DB`` of the loudest frame.  The gate mask is then eroded by
    ``N_FFT // HOP_LENGTH`` frames (one window length) on each side, positions outside the
    clip counting as gated.  A gated frame's window holds (almost) no signal, so every
    kept frame's window lies inside non-silent audio: the zero padding of centred framing
    and the clicks at silence/sound boundaries never enter a metric.
    """
    import scipy.ndimage

    finite = np.isfinite(level_db)
    if not finite.any():
        return np.zeros_like(level_db, dtype=bool)
    loudest = float(np.max(level_db[finite]))
    floor = max(GATE_ABS_DBFS, loudest - GATE_REL_DB)
    gate = finite & (level_db > floor)
    radius = N_FFT // HOP_LENGTH
    return scipy.ndimage.binary_erosion(
        gate, structure=np.ones(2 * radius + 1, dtype=bool), border_value=0
    )


def _unit_rows(x: np.ndarray) -> np.ndarray:
    """L2-normalise each row; all-zero rows stay zero."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > _EPS)


def _run_lengths(feats: list[np.ndarray], threshold: float) -> np.ndarray:
    """Per-frame length (in frames) of the contiguous run with similarity >= threshold.

    ``feats`` are (T, d_k) row-normalised feature matrices; the similarity matrix is the
    mean of their Gram matrices.  Rows are processed in chunks to bound memory.
    """
    n = feats[0].shape[0]
    cols = np.arange(n)
    runs = np.empty(n, dtype=np.int64)
    for start in range(0, n, _SSM_ROW_CHUNK):
        stop = min(n, start + _SSM_ROW_CHUNK)
        rows = np.arange(start, stop)
        sim = sum(f[start:stop] @ f.T for f in feats) / len(feats)
        broken = sim < threshold
        after = broken & (cols[None, :] > rows[:, None])
        before = broken & (cols[None, :] < rows[:, None])
        # first break strictly after i (n if none), last break strictly before i (-1 if none)
        first_after = np.where(after.any(axis=1), np.argmax(after, axis=1), n)
        last_before = np.where(before.any(axis=1), n - 1 - np.argmax(before[:, ::-1], axis=1), -1)
        runs[start:stop] = first_after - last_before - 1
    return runs


def _smooth_frames(sample_rate: int) -> int:
    """Odd number of frames spanning about ``SSM_SMOOTH_S`` seconds."""
    return max(1, int(round(SSM_SMOOTH_S * sample_rate / HOP_LENGTH))) | 1


def _ssm_block_scale(power: np.ndarray, active: np.ndarray, sample_rate: int) -> float:
    import librosa
    import scipy.ndimage

    chroma = librosa.feature.chroma_stft(S=power, sr=sample_rate, n_fft=N_FFT, tuning=0.0)
    mel = librosa.feature.melspectrogram(S=power, sr=sample_rate, n_fft=N_FFT, n_mels=SSM_N_MELS)
    mel = mel[:, active]
    timbre = np.log1p(SSM_MEL_GAMMA * mel / max(float(np.max(mel)), _EPS))
    window = _smooth_frames(sample_rate)
    feats = []
    for f in (chroma[:, active], timbre):
        f = _unit_rows(f.T.astype(np.float64))  # (T_active, d)
        f = scipy.ndimage.uniform_filter1d(f, size=window, axis=0, mode="nearest")
        feats.append(_unit_rows(f))
    runs = _run_lengths(feats, SSM_THRESHOLD)
    return float(np.mean(runs) * HOP_LENGTH / sample_rate)


def _contrast_bands(sample_rate: int) -> int:
    nyquist = 0.5 * sample_rate
    n_bands = CONTRAST_MAX_BANDS
    while n_bands > 1 and CONTRAST_FMIN * 2.0 ** (n_bands - 1) >= nyquist:
        n_bands -= 1
    return n_bands


def _spectral_contrast_db(magnitude: np.ndarray, active: np.ndarray, sample_rate: int) -> float:
    import librosa

    if CONTRAST_FMIN >= 0.5 * sample_rate:
        return float("nan")
    contrast = librosa.feature.spectral_contrast(
        S=magnitude,
        sr=sample_rate,
        n_fft=N_FFT,
        hop_length=HOP_LENGTH,
        fmin=CONTRAST_FMIN,
        n_bands=_contrast_bands(sample_rate),
    )
    return float(np.mean(contrast[:, active]))


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


def _flux(power: np.ndarray, active: np.ndarray, sample_rate: int) -> np.ndarray:
    """Spectral flux between consecutive active frames (dB, mean over mel bands)."""
    import librosa

    mel_db = librosa.power_to_db(
        librosa.feature.melspectrogram(S=power, sr=sample_rate, n_fft=N_FFT, n_mels=FLUX_N_MELS),
        ref=1.0,
    )
    # onset_env[t] = mean_b max(0, L[b, t] - L[b, t-1]) for t >= 1 (onset_env[0] is padding)
    onset_env = librosa.onset.onset_strength(
        S=mel_db, sr=sample_rate, lag=1, max_size=1, center=False, detrend=False
    ).astype(np.float64)
    pairs = np.zeros_like(active)
    pairs[1:] = active[1:] & active[:-1]
    return onset_env[: active.size][pairs]


def _pca_coverage(power: np.ndarray, active: np.ndarray, sample_rate: int) -> float:
    import librosa
    from scipy.spatial import ConvexHull, QhullError

    mel = librosa.feature.melspectrogram(S=power, sr=sample_rate, n_fft=N_FFT, n_mels=PCA_N_MELS)
    mel = mel[:, active]
    mel_db = librosa.power_to_db(mel, ref=float(np.max(mel)), top_db=PCA_TOP_DB)
    x = mel_db.T.astype(np.float64)  # (T_active, n_mels)
    x = (x - x.mean(axis=0)) / math.sqrt(x.shape[1])
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    comps = vt[:2]
    # deterministic sign: largest-magnitude loading of each component is positive
    signs = np.sign(comps[np.arange(comps.shape[0]), np.argmax(np.abs(comps), axis=1)])
    signs[signs == 0] = 1.0
    comps = comps * signs[:, None]
    scores = x @ comps.T
    if scores.shape[1] < 2 or np.ptp(scores, axis=0).min() <= 1e-9:
        return 0.0
    try:
        return float(ConvexHull(scores).volume)  # 2-D "volume" is the area
    except QhullError:
        return 0.0


# --- public API --------------------------------------------------------------------------
def compute_metrics(audio: np.ndarray, sample_rate: int) -> dict[str, float]:
    """Compute every metric in :data:`METRICS` for one mono clip.

    See the module docstring for the exact definitions.  Silent or near-silent clips
    (fewer than :data:`MIN_ACTIVE_FRAMES` gated frames) give NaN for every metric.
    """
    import librosa

    y = np.asarray(audio)
    if y.ndim != 1:
        raise ValueError(f"compute_metrics expects mono 1-D audio, got shape {y.shape}")
    if int(sample_rate) <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    sample_rate = int(sample_rate)
    y = y.astype(np.float32, copy=False)
    if y.size and not np.all(np.isfinite(y)):
        raise ValueError("audio contains non-finite samples")
    if y.size < 2:
        return _nan_result()

    level_db = _frame_level_db(y)
    active = _active_mask(level_db)
    if int(active.sum()) < MIN_ACTIVE_FRAMES:
        return _nan_result()

    stft = librosa.stft(y, n_fft=N_FFT, hop_length=HOP_LENGTH, center=True)
    magnitude = np.abs(stft).astype(np.float64)
    power = magnitude**2
    n = min(magnitude.shape[1], level_db.size)
    magnitude, power, level_db, active = magnitude[:, :n], power[:, :n], level_db[:n], active[:n]
    if int(active.sum()) < MIN_ACTIVE_FRAMES:
        return _nan_result()

    flux = _flux(power, active, sample_rate)
    act_db = level_db[active]
    p5, p95 = np.percentile(act_db, [5.0, 95.0])
    out = {
        "ssm_block_scale": _ssm_block_scale(power, active, sample_rate),
        "spectral_contrast_db": _spectral_contrast_db(magnitude, active, sample_rate),
        "flux_sparsity": _gini(flux),
        "flux_mean": float(np.mean(flux)),
        "pca_coverage": _pca_coverage(power, active, sample_rate),
        "dynamic_range_db": float(p95 - p5),
    }
    return {name: float(out[name]) for name in METRICS}


def bootstrap_ci(
    x: np.ndarray,
    y: np.ndarray,
    n_boot: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[float, float, float]:
    """Percentile bootstrap CI for ``mean(x) - mean(y)``.

    Pass barrier values as ``x`` and baseline values as ``y`` so that the interval feeds
    :func:`verdict` directly.  NaNs are dropped from each group; the groups are
    resampled independently (with replacement, each at its own size) with
    ``numpy.random.default_rng(seed)``, in blocks of replicates (``x`` then ``y`` per
    block) to bound memory.  Returns ``(mean(x) - mean(y), lo, hi)`` where ``lo``/``hi``
    are the ``alpha/2`` and ``1 - alpha/2`` quantiles of the bootstrap differences.
    Raises ``ValueError`` naming the group that is empty after dropping NaNs.
    """
    if int(n_boot) < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0.0 < float(alpha) < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    groups = {}
    for label, values in (("x", x), ("y", y)):
        v = np.asarray(values, dtype=np.float64).ravel()
        v = v[~np.isnan(v)]
        if v.size == 0:
            raise ValueError(f"group {label!r} is empty after dropping NaNs")
        groups[label] = v
    gx, gy = groups["x"], groups["y"]
    rng = np.random.default_rng(seed)
    n_boot = int(n_boot)
    block = max(1, min(n_boot, _BOOT_BLOCK_ELEMENTS // max(gx.size, gy.size)))
    diffs = np.empty(n_boot, dtype=np.float64)
    for start in range(0, n_boot, block):
        k = min(block, n_boot - start)
        mx = gx[rng.integers(0, gx.size, size=(k, gx.size))].mean(axis=1)
        my = gy[rng.integers(0, gy.size, size=(k, gy.size))].mean(axis=1)
        diffs[start : start + k] = mx - my
    lo, hi = np.quantile(diffs, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(gx.mean() - gy.mean()), float(lo), float(hi)


def verdict(diff_lo: float, diff_hi: float, higher_is_barrier: bool) -> str:
    """Classify a barrier-minus-baseline CI (from :func:`bootstrap_ci`) against the claim.

    ``"supported"`` if the CI lies strictly on the claimed side of 0, ``"contradicted"``
    if strictly on the opposite side, ``"inconclusive"`` otherwise (including NaN bounds).
    """
    lo, hi = float(diff_lo), float(diff_hi)
    if math.isnan(lo) or math.isnan(hi):
        return "inconclusive"
    if lo > 0.0:
        return "supported" if higher_is_barrier else "contradicted"
    if hi < 0.0:
        return "contradicted" if higher_is_barrier else "supported"
    return "inconclusive"
