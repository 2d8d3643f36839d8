"""Section boundaries of one clip by Laplacian structural segmentation (McFee & Ellis 2014).

B. McFee and D. P. W. Ellis, "Analyzing song structure with spectral clustering", ISMIR 2014,
as librosa documents it (its gallery's "Laplacian segmentation"), on fixed frames instead of
beats (generated clips need not have a steady beat):

1. frames of ``SEG_HOP_S`` (the analysis frames' chroma median-aggregated, MFCC mean-aggregated);
2. a recurrence graph on chroma (``librosa.segment.recurrence_matrix``, affinity, mutual
   k-nearest neighbours, width 3) filtered along its diagonals (``timelag_filter`` of a median
   filter) so that repeated passages link as a whole;
3. a path graph linking each frame to the next with weight exp(-|dMFCC|^2 / median);
4. their sum weighted by mu (McFee & Ellis, eq. 7: each frame's expected degree balanced), its
   normalised Laplacian (``scipy.sparse.csgraph.laplacian``) and the eigenvectors of its smallest
   eigenvalues, median-filtered in time;
5. k-means (scikit-learn, fixed seed) on the first k row-normalised eigenvectors for k in
   ``K_RANGE``; k is the one whose clustering has the largest mean silhouette (a standard
   choice of the number of clusters; McFee & Ellis leave k to the user).

A section boundary is a frame where the cluster label changes. Repetition is what ties frames
into one cluster, so two consecutive copies of one section (A A) read as one section: the method
finds where the material changes, not where it restarts.

A clip has no section boundary (k = 1) when even its best clustering separates its sections by
less than ``MIN_SECTION_CONTRAST_DB``: the RMS difference, in dB over the 64 mel bands, between
the mean spectra of two consecutive sections. A steady arpeggio and a drone are then one
section.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SEG_HOP_S = 0.256  # segmentation frame (8 analysis frames of 32 ms); resolves sections from ~2 s
K_RANGE = (2, 3, 4)
REC_WIDTH = 3  # frames a recurrence link must be apart (librosa's default)
LAG_FILTER = 7  # frames of the diagonal median filter (1.8 s)
EIG_FILTER = 9  # frames of the eigenvectors' median filter (2.3 s)
MIN_SECTION_CONTRAST_DB = 1.5
MIN_FRAMES = 12  # fewer segmentation frames (3 s): no segmentation is attempted


@dataclass(frozen=True)
class Segmentation:
    boundaries: np.ndarray  # indices into the analysis frames where a new section starts
    k: int  # sections' cluster count (1: no boundary)
    silhouette: float  # of the chosen clustering (NaN for k = 1)
    contrast_db: float  # smallest mean-spectrum difference between consecutive sections


def _aggregate(x: np.ndarray, size: int, how) -> np.ndarray:
    n = x.shape[1] // size
    return how(x[:, : n * size].reshape(x.shape[0], n, size), axis=2)


def _laplacian_embedding(chroma: np.ndarray, mfcc: np.ndarray) -> np.ndarray:
    """The eigenvectors (columns, ascending eigenvalue) of the normalised Laplacian of the
    recurrence + path graph, median-filtered in time."""
    import librosa
    import scipy.linalg
    import scipy.ndimage
    import scipy.sparse.csgraph

    rec = librosa.segment.recurrence_matrix(
        chroma, width=REC_WIDTH, mode="affinity", sym=True
    ).astype(np.float64)
    lag_filter = librosa.segment.timelag_filter(scipy.ndimage.median_filter)
    rec = lag_filter(rec, size=(1, LAG_FILTER))
    rec = 0.5 * (rec + rec.T)  # the lag-domain filter leaves it slightly asymmetric
    step = np.sum(np.diff(mfcc, axis=1) ** 2, axis=0)
    scale = float(np.median(step))
    path_sim = np.exp(-step / scale) if scale > 0 else np.ones_like(step)
    path = np.diag(path_sim, k=1) + np.diag(path_sim, k=-1)
    deg_path, deg_rec = path.sum(axis=1), rec.sum(axis=1)
    total = deg_path + deg_rec
    mu = float(deg_path @ total / max(float(np.sum(total**2)), 1e-12))
    graph = mu * rec + (1.0 - mu) * path
    lap = scipy.sparse.csgraph.laplacian(graph, normed=True)
    _, vecs = scipy.linalg.eigh(lap)
    return scipy.ndimage.median_filter(vecs, size=(EIG_FILTER, 1))


def _contrast_db(mel_db: np.ndarray, bounds: np.ndarray) -> float:
    edges = np.concatenate([[0], bounds, [mel_db.shape[1]]])
    means = [
        mel_db[:, a:b].mean(axis=1) for a, b in zip(edges[:-1], edges[1:], strict=True) if b > a
    ]
    diffs = [
        float(np.sqrt(np.mean((x - y) ** 2))) for x, y in zip(means[:-1], means[1:], strict=True)
    ]
    return min(diffs) if diffs else 0.0


def segment(chroma: np.ndarray, mfcc: np.ndarray, mel_db: np.ndarray, frame_s: float):
    """Segmentation of a clip from its per-frame chroma [12, T], MFCC [n, T] and mel in dB
    [64, T] (frames of ``frame_s`` seconds). Boundaries index those frames."""
    from threadpoolctl import threadpool_limits

    # a few hundred frames: scikit-learn's OpenMP threads cost more than they save (k-means
    # took 0.12 s a fit on a busy 2-core machine, 40x the STFT; benchmarks/metrics_speed.py)
    with threadpool_limits(limits=1):
        return _segment(chroma, mfcc, mel_db, frame_s)


def _segment(chroma: np.ndarray, mfcc: np.ndarray, mel_db: np.ndarray, frame_s: float):
    import sklearn.cluster
    import sklearn.metrics

    size = max(1, int(round(SEG_HOP_S / frame_s)))
    c = _aggregate(chroma, size, np.median)
    m = _aggregate(mfcc, size, np.mean)
    none = Segmentation(np.zeros(0, dtype=int), 1, float("nan"), 0.0)
    if c.shape[1] < MIN_FRAMES:
        return none
    vecs = _laplacian_embedding(c, m)
    norms = np.sqrt(np.cumsum(vecs**2, axis=1))
    best = None
    for k in K_RANGE:
        x = vecs[:, :k] / np.maximum(norms[:, k - 1 : k], 1e-12)
        labels = sklearn.cluster.KMeans(n_clusters=k, n_init=10, random_state=0).fit_predict(x)
        if len(set(labels)) < 2:
            continue
        score = float(sklearn.metrics.silhouette_score(x, labels))
        if best is None or score > best[0]:
            best = (score, k, labels)
    if best is None:
        return none
    score, k, labels = best
    bounds = (1 + np.flatnonzero(labels[1:] != labels[:-1])) * size
    contrast = _contrast_db(mel_db, bounds)
    if contrast < MIN_SECTION_CONTRAST_DB:
        return Segmentation(np.zeros(0, dtype=int), 1, score, contrast)
    return Segmentation(bounds.astype(int), k, score, contrast)
