"""Diversity and cross-seed structural consistency of one prompt's samples (P2, P3).

For the samples of one run and one prompt across sampling seeds:

* ``vendi``: the Vendi score (vendi-score's ``score_K``, q = 1: the exponential of the entropy
  of the eigenvalues of K/n) with an RBF kernel on the clips' embeddings (eisbach.metrics: the
  mean and standard deviation of each mel band's level in dB, relative to the clip's loudest
  bin). K = exp(-d^2 / (2 sigma^2)), d the RMS difference over the embedding in dB, sigma
  ``VENDI_SIGMA_DB``. It is the effective number of distinct clips: 1 when all are alike, n
  when all differ by much more than sigma. A fixed sigma in dB keeps the scale absolute (a
  median-distance bandwidth would make any set look equally diverse).
* ``vendi_musicnn``: the Vendi score (q = 1) on a learned music embedding, musicnn's 200-unit
  penultimate layer (MSD_musicnn, the same embedding as FD-musicnn, eisbach.frechet), with the
  cosine-similarity kernel the Vendi score's authors use for learned embeddings (negative
  cosines clipped to 0). A spectral embedding counts four drones on four roots as four distinct
  clips; a network trained to tag music reads them as one kind of sound. NaN where the musicnn
  environment is not built or evaluate.fd is off.
* ``consistency``: the mean Pearson correlation, over pairs of seeds, of the clips' fixed-size
  self-similarity matrices (upper triangle, diagonal excluded): high when the seeds share a
  form (where sections start and return), whatever their detail.
"""

from __future__ import annotations

import itertools

import numpy as np

VENDI_SIGMA_DB = 3.0


def _score_K():
    import warnings

    with warnings.catch_warnings():  # vendi-score 0.0.3 touches a deprecated scipy namespace
        warnings.simplefilter("ignore", DeprecationWarning)
        from vendi_score.vendi import score_K

    def quiet(kernel, q):
        with warnings.catch_warnings():  # ... when it is imported and when it is called
            warnings.simplefilter("ignore", DeprecationWarning)
            return score_K(kernel, q=q)

    return quiet


def vendi(embeddings: list[np.ndarray], sigma_db: float = VENDI_SIGMA_DB) -> float:
    score_K = _score_K()
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        return float("nan")
    sq = np.sum((x[:, None, :] - x[None, :, :]) ** 2, axis=-1) / x.shape[1]
    kernel = np.exp(-sq / (2.0 * sigma_db**2))
    return float(np.real(score_K(kernel, q=1)))


def vendi_cosine(embeddings: list[np.ndarray]) -> float:
    """Vendi score (q = 1) with K = max(cos(x_i, x_j), 0) over learned embeddings."""
    score_K = _score_K()

    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2 or not np.isfinite(x).all():
        return float("nan")
    unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    kernel = np.clip(unit @ unit.T, 0.0, None)
    return float(np.real(score_K(kernel, q=1)))


def consistency(ssms: list[np.ndarray]) -> float:
    mats = [np.asarray(s, dtype=np.float64) for s in ssms]
    if len(mats) < 2:
        return float("nan")
    iu = np.triu_indices(mats[0].shape[0], k=1)
    vecs = [m[iu] for m in mats]
    corrs = []
    for a, b in itertools.combinations(vecs, 2):
        if a.std() == 0 or b.std() == 0:
            continue
        corrs.append(float(np.corrcoef(a, b)[0, 1]))
    return float(np.mean(corrs)) if corrs else float("nan")


def per_prompt(
    rows: list[dict], analyses: dict[str, object], learned: dict[str, np.ndarray] | None = None
) -> list[dict]:
    """One row per (run, prompt): seeds, Vendi scores and consistency, with the run's labels.
    ``analyses`` maps a sample's sha256 to its eisbach.metrics.Analysis; ``learned`` maps it to
    its musicnn embedding (None: ``vendi_musicnn`` is NaN)."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["run_id"], row["prompt_id"]), []).append(row)
    out = []
    for (run_id, prompt_id), members in sorted(groups.items()):
        found = [analyses[m["sha256"]] for m in members]
        embeddings = [a.embedding for a in found if a.embedding is not None]
        ssms = [a.ssm for a in found if a.ssm is not None]
        first = members[0]
        out.append(
            {
                "run_id": run_id,
                "prompt_id": prompt_id,
                "group": first["group"],
                "scheme": first["scheme"],
                "lam": first["lam"],
                "adapter": first["adapter"],
                "train_seed": first["train_seed"],
                "n_seeds": len(members),
                "vendi": vendi(embeddings),
                "vendi_musicnn": vendi_cosine([learned[m["sha256"]] for m in members])
                if learned
                else float("nan"),
                "consistency": consistency(ssms),
            }
        )
    return out
