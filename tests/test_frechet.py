"""FD-musicnn: the Fréchet distance against closed forms, and the real musicnn subprocess on
generated signals (its env, .venv-musicnn, is built by `make setup`, which `make test` runs)."""

import json
import subprocess

import numpy as np
import pytest
import soundfile as sf

from eisbach import frechet
from eisbach.frechet import (
    MusicnnEnvMissing,
    fd_table,
    frechet_distance,
    musicnn_embeddings,
    musicnn_python,
)

RNG = np.random.default_rng(0)


def exact_moments(n: int, mean: np.ndarray, cov: np.ndarray, seed: int) -> np.ndarray:
    """n samples whose sample mean and (n-1)-normalised covariance are exactly mean and cov."""
    z = np.random.default_rng(seed).standard_normal((n, len(mean)))
    z -= z.mean(axis=0)
    z = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False))).T
    return z @ np.linalg.cholesky(cov).T + mean


def rotation(d: int, seed: int) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))
    return q


def test_identical_sets_give_zero():
    x = RNG.standard_normal((50, 8))
    assert abs(frechet_distance(x, x)) < 1e-8


def test_shifted_mean_gives_squared_shift():
    x = RNG.standard_normal((60, 6))
    delta = np.array([0.5, -1.0, 2.0, 0.0, 0.25, 3.0])
    assert frechet_distance(x, x + delta) == pytest.approx(delta @ delta, rel=1e-8)


def test_two_gaussians_closed_form():
    """Covariances sharing eigenvectors commute: Tr(Σ1 + Σ2 - 2(Σ1Σ2)^½) = Σ(√a - √b)²."""
    d = 5
    q = rotation(d, 1)
    a, b = np.array([1.0, 2.0, 0.5, 4.0, 0.1]), np.array([2.0, 0.5, 0.5, 1.0, 0.3])
    mu1, mu2 = np.arange(d, dtype=float), np.arange(d, dtype=float)[::-1] * 0.5
    x = exact_moments(400, mu1, q @ np.diag(a) @ q.T, seed=2)
    y = exact_moments(300, mu2, q @ np.diag(b) @ q.T, seed=3)
    want = (mu1 - mu2) @ (mu1 - mu2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(x, y) == pytest.approx(want, rel=1e-8)
    assert frechet_distance(y, x) == pytest.approx(want, rel=1e-8)


def test_fewer_clips_than_dimensions_stays_finite():
    """The real case: a handful of clips in 200 dimensions gives singular covariances."""
    x, y = RNG.standard_normal((4, 200)), RNG.standard_normal((3, 200)) + 1.0
    fd = frechet_distance(x, y)
    assert np.isfinite(fd) and fd > 0
    assert abs(frechet_distance(x, x)) < 1e-3


def test_needs_two_rows_and_matching_dims():
    with pytest.raises(ValueError, match="at least 2"):
        frechet_distance(np.zeros((1, 3)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match=r"\[n, d\]"):
        frechet_distance(np.zeros((4, 3)), np.zeros((4, 2)))


def test_missing_env_names_it(tmp_path):
    with pytest.raises(MusicnnEnvMissing, match=r"make setup"):
        musicnn_python({"python": str(tmp_path / "nope" / "python")})
    wav = tmp_path / "a.wav"
    sf.write(wav, np.zeros(1600, np.float32), 16000)
    with pytest.raises(MusicnnEnvMissing, match="musicnn environment"):
        fd_table({"g": [wav]}, {"r": [wav]}, {"python": str(tmp_path / "nope")}, tmp_path)


def test_disabled_rows_say_why(tmp_path):
    rows = fd_table({"a": [], "b": []}, {"train": []}, {"enabled": False}, tmp_path)
    assert [(r["group"], r["reference"], r["fd"]) for r in rows] == [
        ("a", "train", None),
        ("b", "train", None),
    ]
    assert all(r["metric"] == "FD-musicnn" and "enabled" in r["reason"] for r in rows)


def test_too_few_clips_give_a_reason_not_an_error(tmp_path, monkeypatch):
    """Embedding is stubbed here: this is about the table's bookkeeping."""
    paths = [tmp_path / f"{i}.wav" for i in range(5)]
    fake = {str(p): RNG.standard_normal(200) for p in paths}
    fake[str(paths[4])] = np.full(200, np.nan)  # unreadable clip
    monkeypatch.setattr(
        frechet, "musicnn_embeddings", lambda ps, *a, **k: np.stack([fake[p] for p in ps])
    )
    groups = {"one": paths[:1], "three": paths[1:4], "with_bad": [paths[0], paths[4]]}
    rows = fd_table(groups, {"ref": paths[:4]}, {"bootstrap": 20}, tmp_path)
    by = {r["group"]: r for r in rows}
    assert by["one"]["fd"] is None and "at least 2" in by["one"]["reason"]
    assert by["with_bad"]["fd"] is None and by["with_bad"]["n_unreadable"] == 1
    ok = by["three"]
    assert ok["fd"] > 0 and ok["reason"] is None and (ok["n_group"], ok["n_reference"]) == (3, 4)
    assert ok["ci_low"] <= ok["ci_high"] and ok["n_boot"] > 0 and "rank-deficient" in ok["note"]
    # the whole `evaluate` mapping works as cfg too
    assert fd_table({}, {}, {"fd": {"enabled": False}, "seed": 1}, tmp_path) == []


# ---- the real musicnn, through its own environment -------------------------------------------

SR = 22050


@pytest.fixture(scope="module")
def signals(tmp_path_factory):
    """3 s clips (one musicnn patch each): two pairs of sines, and a pair of noises."""
    root = tmp_path_factory.mktemp("signals")
    t = np.arange(3 * SR) / SR
    rng = np.random.default_rng(7)
    clips = {
        "sine_a": [np.sin(2 * np.pi * 220 * t), np.sin(2 * np.pi * 247 * t)],
        "sine_b": [np.sin(2 * np.pi * 330 * t), np.sin(2 * np.pi * 294 * t)],
        "noise": [rng.standard_normal(t.size) * 0.3, rng.standard_normal(t.size) * 0.3],
    }
    out = {}
    for name, waves in clips.items():
        out[name] = []
        for i, wave in enumerate(waves):
            path = root / f"{name}{i}.wav"
            sf.write(path, (0.3 * wave / np.abs(wave).max()).astype(np.float32), SR)
            out[name].append(path)
    return out


@pytest.fixture(scope="module")
def env_python():
    try:
        return musicnn_python()
    except MusicnnEnvMissing as exc:
        pytest.fail(f"{exc} (`make test` builds it through `make setup`)")


@pytest.fixture(scope="module")
def embedded(signals, env_python, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    paths = [p for clips in signals.values() for p in clips]
    return cache, paths, musicnn_embeddings(paths, cache)


@pytest.mark.slow
def test_real_embeddings_shape_and_cache(embedded, monkeypatch):
    cache, paths, emb = embedded
    assert emb.shape == (6, 200) and emb.dtype == np.float32 and np.isfinite(emb).all()
    folder = frechet.cache_folder(cache)
    assert sorted(p.stem for p in folder.glob("*.npy")) == sorted(
        frechet.file_sha256(p) for p in paths
    )
    meta = json.loads((folder / "last_run.json").read_text())
    assert (meta["model"], meta["layer"], meta["dim"], meta["sample_rate"]) == (
        "MSD_musicnn",
        "penultimate",
        200,
        16000,
    )

    def no_subprocess(*args, **kwargs):
        raise AssertionError("a cached clip was embedded again")

    monkeypatch.setattr(subprocess, "run", no_subprocess)
    again = musicnn_embeddings(list(reversed(paths)), cache)
    np.testing.assert_array_equal(again, emb[::-1])


@pytest.mark.slow
def test_real_embeddings_deterministic_and_only_new_clips(embedded, tmp_path, monkeypatch):
    """A fresh cache recomputes the same numbers; a new clip is the only one sent."""
    cache, paths, emb = embedded
    fresh = musicnn_embeddings(paths[:2], tmp_path / "fresh")
    np.testing.assert_allclose(fresh, emb[:2], rtol=0, atol=1e-6)
    new = tmp_path / "new.wav"
    sf.write(new, np.sin(2 * np.pi * 440 * np.arange(2 * SR) / SR).astype(np.float32) * 0.3, SR)
    calls = []
    real_run = subprocess.run

    def counting_run(argv, *args, **kwargs):
        calls.append(json.loads(open(argv[argv.index("--list") + 1]).read()))
        return real_run(argv, *args, **kwargs)

    monkeypatch.setattr(subprocess, "run", counting_run)
    out = musicnn_embeddings([*paths, new], cache)
    assert calls == [[str(new)]]  # 2 s: shorter than one patch, repeat-padded like training
    assert out.shape == (7, 200) and np.isfinite(out).all()


@pytest.mark.slow
def test_real_fd_orders_noise_far_from_sines(embedded, signals):
    cache, _, _ = embedded
    rows = fd_table(
        {"sine_a": signals["sine_a"], "noise": signals["noise"]},
        {"sine_b": signals["sine_b"]},
        {"bootstrap": 0},
        cache,
    )
    fd = {r["group"]: r["fd"] for r in rows}
    print("FD-musicnn on test signals:", fd)
    assert fd["noise"] > fd["sine_a"] > 0
    assert all(r["embedding"] == "FD-musicnn" and r["n_group"] == 2 for r in rows)


@pytest.mark.slow
def test_patches_match_musicnn_batch_data(signals, env_python, tmp_path):
    """Our log-mel patches are musicnn.extractor.batch_data's, for a clip of whole patches."""
    wav = tmp_path / "long.wav"
    t = np.arange(7 * SR) / SR
    sf.write(wav, (0.3 * np.sin(2 * np.pi * 200 * t * (1 + t / 7))).astype(np.float32), SR)
    code = (
        "import sys, numpy as np; sys.path.insert(0, sys.argv[1]);"
        "import musicnn_embed as m; from musicnn.extractor import batch_data;"
        "n = m.n_frames_per_patch(); ours, padded, _ = m.patches(sys.argv[2], n);"
        "theirs, _ = batch_data(sys.argv[2], n, n);"
        "assert n == 187 and not padded and ours.shape == theirs.shape, (ours.shape, theirs.shape);"
        "np.testing.assert_array_equal(ours, theirs); print('ok', ours.shape)"
    )
    proc = subprocess.run(
        [str(env_python), "-c", code, str(frechet.EMBED_SCRIPT.parent), str(wav)],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ok (2, 187, 96)" in proc.stdout
