"""FD-musicnn: the Fréchet distance between sets of clips on musicnn's pretrained embedding.

    FD(X, Y) = |μ_X − μ_Y|² + Tr(Σ_X + Σ_Y − 2 (Σ_X Σ_Y)^½)

over per-clip embeddings: the mean over a clip's 3 s patches of the 200-unit penultimate layer of
MSD_musicnn (musicnn 0.1.0, weights inside its wheel), computed at 16 kHz. It runs offline. It is
NOT the paper's FAD (VGGish) nor stable-audio-metrics' FD-openl3: another network, another layer,
per-clip rather than per-frame statistics. Its numbers compare runs of this pipeline with each
other only. See docs/metrics.md (FD-musicnn) and scripts/musicnn_embed.py.

musicnn needs TensorFlow, which never shares a process with torch here: the embeddings come from
``scripts/musicnn_embed.py`` run by ``.venv-musicnn/bin/python`` (envs/musicnn.lock, built by
``make setup``) as a subprocess, one for all the clips not yet cached. The cache holds one .npy per
clip, keyed by the WAV's sha256, under a folder named after the model, the layer and the hashes of
the embedding script and of the lock, so that changing either recomputes everything.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import scipy.linalg

from eisbach.atomic import atomic_path
from eisbach.provenance import file_sha256

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
MUSICNN_VENV = REPO / ".venv-musicnn"
MUSICNN_LOCK = REPO / "envs" / "musicnn.lock"
EMBED_SCRIPT = REPO / "scripts" / "musicnn_embed.py"
NAME = "FD-musicnn"
DEFAULT_MODEL = "MSD_musicnn"
LAYER = "penultimate"
DEFAULTS = {"enabled": True, "bootstrap": 200, "alpha": 0.05, "seed": 0, "model": DEFAULT_MODEL}


class MusicnnEnvMissing(FileNotFoundError):
    """The separate TensorFlow environment that computes musicnn embeddings is not built."""


def _sqrtm(a: np.ndarray) -> np.ndarray:
    # a singular product divides by zero inside the Schur step; the caller checks the result
    with np.errstate(divide="ignore", invalid="ignore"):
        return scipy.linalg.sqrtm(a, disp=False)[0]


def frechet_distance(x, y, eps: float = 1e-6) -> float:
    """Fréchet distance between Gaussians fitted to x [n, d] and y [m, d] (n, m > 1)."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"embeddings must be [n, d] and [m, d]; got {x.shape} and {y.shape}")
    if len(x) < 2 or len(y) < 2:
        raise ValueError(f"a covariance needs at least 2 rows; got {len(x)} and {len(y)}")
    return frechet_from_stats(*gaussian_stats(x), *gaussian_stats(y), eps=eps)


def gaussian_stats(x) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (ddof 1) of the rows of x [n, d]."""
    x = np.asarray(x, np.float64)
    return x.mean(axis=0), np.atleast_2d(np.cov(x, rowvar=False))


def frechet_from_stats(mu_x, sigma_x, mu_y, sigma_y, eps: float = 1e-6) -> float:
    """|mu_x - mu_y|^2 + Tr(S_x + S_y - 2 (S_x S_y)^1/2), as the standard FID/FAD code does:
    scipy.linalg.sqrtm of S_x S_y; when the product is singular (a non-finite root) both
    covariances get ``eps`` on their diagonal; a small imaginary part from round-off is dropped,
    a large one is an error."""
    mu_x, mu_y = np.atleast_1d(mu_x), np.atleast_1d(mu_y)
    sigma_x, sigma_y = np.atleast_2d(sigma_x), np.atleast_2d(sigma_y)
    if mu_x.shape != mu_y.shape or sigma_x.shape != sigma_y.shape:
        raise ValueError(f"statistics of {mu_x.shape} and {mu_y.shape} dimensions")
    diff = mu_x - mu_y
    covmean = _sqrtm(sigma_x @ sigma_y)
    if not np.isfinite(covmean).all() or (
        np.iscomplexobj(covmean) and not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3)
    ):
        log.info("%s: singular covariance product; adding %g to the diagonals", NAME, eps)
        offset = np.eye(sigma_x.shape[0]) * eps
        covmean = _sqrtm((sigma_x + offset) @ (sigma_y + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"imaginary component {np.max(np.abs(covmean.imag)):.3g} in sqrtm")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma_x) + np.trace(sigma_y) - 2 * np.trace(covmean))


def _short_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def musicnn_python(cfg: dict | None = None) -> Path:
    """The interpreter of the musicnn env: ``evaluate.fd.python`` if set, else .venv-musicnn."""
    python = Path((cfg or {}).get("python") or MUSICNN_VENV / "bin" / "python")
    if not python.exists():
        raise MusicnnEnvMissing(
            f"{NAME} needs the musicnn environment, and {python} does not exist. Build it with "
            f"`make setup` (scripts/setup_musicnn_env.sh, from envs/musicnn.lock), or turn the "
            f"metric off with evaluate.fd.enabled: false."
        )
    return python


def cache_folder(cache_dir, model: str = DEFAULT_MODEL) -> Path:
    """Where a model's per-clip embeddings live: invalidated by any change of script or lock."""
    key = f"musicnn-{model}-{LAYER}-{_short_hash(EMBED_SCRIPT)}-{_short_hash(MUSICNN_LOCK)}"
    return Path(cache_dir) / key


def _run_embedder(python: Path, paths: list[str], model: str, threads: int, out: Path) -> dict:
    with tempfile.TemporaryDirectory(prefix="musicnn-") as tmp:
        listing = Path(tmp) / "paths.json"
        listing.write_text(json.dumps(paths))
        npz = Path(tmp) / "embeddings.npz"
        argv = [str(python), str(EMBED_SCRIPT), "--list", str(listing), "--out", str(npz)]
        argv += ["--model", model, "--threads", str(threads)]
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONNOUSERSITE="1")
        env.pop("PYTHONPATH", None)  # the main env's packages must not leak into the TF env
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
        if proc.returncode != 0:
            raise RuntimeError(
                f"{EMBED_SCRIPT.name} failed (exit {proc.returncode}) under {python}:\n"
                + proc.stderr[-4000:]
            )
        with np.load(npz, allow_pickle=False) as data:
            result = {k: data[k] for k in data.files}
    meta = json.loads(str(result["meta"]))
    log.info(
        "%s: embedded %d clips at %s clips/s (model load %ss)",
        NAME,
        len(paths),
        meta.get("clips_per_s"),
        meta.get("model_load_s"),
    )
    out.mkdir(parents=True, exist_ok=True)
    # without the timings (logged above at INFO; the evaluate rule's benchmark file times the
    # stage): this file is under results/, whose bytes two clean runs share (issue 24)
    kept = {k: v for k, v in meta.items() if k not in ("model_load_s", "embed_s", "clips_per_s")}
    (out / "last_run.json").write_text(json.dumps(kept, indent=2) + "\n")
    return result


def musicnn_embeddings(
    paths: Sequence[str | os.PathLike],
    cache_dir,
    *,
    model: str = DEFAULT_MODEL,
    threads: int = 0,
    python: str | os.PathLike | None = None,
) -> np.ndarray:
    """[len(paths), 200] float32 musicnn embeddings, NaN rows for clips musicnn could not read.

    Cached per clip by sha256 under ``cache_folder(cache_dir, model)``: only clips not cached yet
    go to the subprocess (one process for all of them; none when everything is cached). Failed
    clips are logged and not cached, so a rerun retries them."""
    paths = [Path(p) for p in paths]
    folder = cache_folder(cache_dir, model)
    digests = [file_sha256(p) for p in paths]
    todo: dict[str, Path] = {}
    for digest, path in zip(digests, paths, strict=True):
        if not (folder / f"{digest}.npy").exists():
            todo.setdefault(digest, path)
    if todo:
        interpreter = musicnn_python({"python": python})
        result = _run_embedder(interpreter, [str(p) for p in todo.values()], model, threads, folder)
        for digest, emb, status, path in zip(
            todo, result["embeddings"], result["status"], todo.values(), strict=True
        ):
            if str(status) != "ok":
                log.warning("%s: %s: %s", NAME, path, status)
                continue
            with atomic_path(folder / f"{digest}.npy", suffix=".tmp.npy") as tmp:
                np.save(tmp, emb.astype(np.float32))
    rows = []
    for digest in digests:
        cached = folder / f"{digest}.npy"
        rows.append(np.load(cached) if cached.exists() else None)
    dim = next((r.shape[0] for r in rows if r is not None), 200)
    return np.stack([np.full(dim, np.nan, np.float32) if r is None else r for r in rows])


def _fd_config(cfg: dict | None) -> dict:
    cfg = dict(cfg or {})
    if isinstance(cfg.get("fd"), dict):  # the whole `evaluate` mapping was passed
        cfg = {**{k: cfg[k] for k in ("seed", "alpha") if k in cfg}, **cfg["fd"]}
    return DEFAULTS | cfg


def bootstrap_fd(x: np.ndarray, y: np.ndarray, n_boot: int, seed: int, alpha: float):
    """Percentile interval of FD over resamples of the clips of both sets (each at its own size).

    A resample repeats clips, which shrinks the covariances' rank: the interval shows the spread
    from the choice of clips, not a calibrated interval of the population FD (FD is biased upward
    at small n)."""
    rng = np.random.default_rng(seed)
    reps = []
    for _ in range(int(n_boot)):
        xi = x[rng.integers(0, len(x), len(x))]
        yi = y[rng.integers(0, len(y), len(y))]
        try:
            reps.append(frechet_distance(xi, yi))
        except ValueError:
            continue
    if not reps:
        return None, None, 0
    lo, hi = np.quantile(reps, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi), len(reps)


def fd_table(
    groups: dict[str, list[Path]],
    references: dict[str, list[Path]],
    cfg: dict,
    cache_dir: Path,
) -> list[dict]:
    """One row per (group, reference set): FD-musicnn with a bootstrap interval over clips.

    ``cfg`` is the ``evaluate.fd`` mapping (the whole ``evaluate`` mapping works too): enabled
    (default true), bootstrap (resamples; 0 for none; default 200), alpha (0.05), seed (0),
    model (MSD_musicnn), threads (TF intra-op threads; 0 = all), python (the musicnn env's
    interpreter; default .venv-musicnn/bin/python). A pair with fewer than 2 readable clips on a
    side gets ``fd: None`` and a reason. All clips are embedded in one subprocess call."""
    cfg = _fd_config(cfg)
    base = {"metric": NAME, "embedding": NAME, "model": cfg["model"], "layer": LAYER}
    pairs = [(g, r) for g in groups for r in references]
    if not cfg["enabled"]:
        return [
            base
            | {"group": g, "reference": r, "fd": None, "reason": "evaluate.fd.enabled is false"}
            for g, r in pairs
        ]
    sets = {("group", k): list(v) for k, v in groups.items()}
    sets |= {("reference", k): list(v) for k, v in references.items()}
    every = list(dict.fromkeys(str(p) for clips in sets.values() for p in clips))
    emb, dim = {}, 200
    if every:
        matrix = musicnn_embeddings(
            every,
            cache_dir,
            model=cfg["model"],
            threads=int(cfg.get("threads", 0)),
            python=cfg.get("python"),
        )
        emb, dim = dict(zip(every, matrix, strict=True)), matrix.shape[1]

    def stack(clips) -> np.ndarray:
        return np.array([emb[str(p)] for p in clips], np.float64).reshape(len(clips), dim)

    rows = []
    for g, r in pairs:
        rows.append(base | _pair_row(g, r, stack(groups[g]), stack(references[r]), cfg))
    return rows


def _pair_row(group: str, reference: str, x: np.ndarray, y: np.ndarray, cfg: dict) -> dict:
    ok_x = x[np.isfinite(x).all(axis=1)]
    ok_y = y[np.isfinite(y).all(axis=1)]
    row = {
        "group": group,
        "reference": reference,
        "n_group": int(len(ok_x)),
        "n_reference": int(len(ok_y)),
        "n_unreadable": int(len(x) - len(ok_x) + len(y) - len(ok_y)),
        "fd": None,
        "ci_low": None,
        "ci_high": None,
        "n_boot": 0,
        "reason": None,
    }
    if len(ok_x) < 2 or len(ok_y) < 2:
        row["reason"] = (
            f"FD needs at least 2 embedded clips per set (a covariance); "
            f"group {group!r} has {len(ok_x)}, reference {reference!r} has {len(ok_y)}"
        )
        return row
    row["fd"] = frechet_distance(ok_x, ok_y)
    if min(len(ok_x), len(ok_y)) <= ok_x.shape[1]:
        row["note"] = (
            f"fewer clips than the {ok_x.shape[1]} embedding dimensions: rank-deficient "
            "covariances; FD is biased upward at small n, compare only rows of equal n"
        )
    n_boot = int(cfg["bootstrap"])
    if n_boot > 0:
        lo, hi, done = bootstrap_fd(ok_x, ok_y, n_boot, int(cfg["seed"]), float(cfg["alpha"]))
        row |= {"ci_low": lo, "ci_high": hi, "n_boot": done}
    return row
