"""FD-infinity and equal-n FDs: fadtk's method reproduced by fadtk itself, and FD-infinity of one
distribution that does not drift with the number of clips."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from eisbach import fd_inf
from eisbach.frechet import frechet_distance, frechet_from_stats, gaussian_stats

D, FRAMES = 8, 20
RNG = np.random.default_rng(20)
BETWEEN = np.diag(np.linspace(1.0, 0.2, D))  # clip-to-clip spread
WITHIN = 0.5 * np.eye(D)  # frame-to-frame spread inside a clip


def clips(n, rng, shift=0.0):
    means = rng.multivariate_normal(np.full(D, shift), BETWEEN, n)
    return [m + rng.multivariate_normal(np.zeros(D), WITHIN, FRAMES) for m in means]


@pytest.fixture(scope="module")
def reference():
    return gaussian_stats(np.concatenate(clips(400, np.random.default_rng(1))))


@pytest.fixture
def fadtk_fad():
    fadtk = pytest.importorskip("fadtk", reason="fadtk is in envs/requirements.lock (no-deps part)")
    grad = torch.is_grad_enabled()
    try:
        # fadtk's constructor turns autograd off for the whole process; it reads ml.name only
        yield fadtk, fadtk.FrechetAudioDistance(SimpleNamespace(name="x", sr=1), load_model=False)
    finally:
        torch.set_grad_enabled(grad)


def test_frechet_matches_fadtk(fadtk_fad, reference):
    fadtk, _ = fadtk_fad
    x = np.concatenate(clips(12, np.random.default_rng(2), shift=0.3))
    mine = frechet_from_stats(*gaussian_stats(x), *reference)
    theirs = fadtk.calc_frechet_distance(*gaussian_stats(x), *reference)
    assert mine == pytest.approx(float(theirs), rel=1e-9, abs=1e-9)
    assert frechet_distance(x, x[::-1]) == pytest.approx(0.0, abs=1e-9)


def test_fadtk_inf_matches_fadtk_score_inf(fadtk_fad, reference, tmp_path):
    """The same frames, the same draws (np.random.seed / RandomState(seed)): the same fit."""
    _, fad = fadtk_fad
    frames = np.concatenate(clips(40, np.random.default_rng(3), shift=0.2))
    stats = tmp_path / "ref.npz"
    np.savez(stats, **{"x.mu": reference[0], "x.cov": reference[1]})
    files = []
    for i, chunk in enumerate(np.array_split(frames, 4)):
        files.append(tmp_path / f"e{i}.npy")
        np.save(files[-1], chunk)
    np.random.seed(7)
    theirs = fad.score_inf(str(stats), files, steps=10, min_n=100)
    mine = fd_inf.fadtk_inf(frames, *reference, steps=10, min_n=100, rng=np.random.RandomState(7))
    assert mine.score == pytest.approx(float(theirs.score), rel=1e-9)
    assert mine.slope == pytest.approx(float(theirs.slope), rel=1e-9)
    assert mine.r2 == pytest.approx(float(theirs.r2), rel=1e-9)
    assert [n for n, _ in mine.points] == [int(n) for n, _ in theirs.points]


def test_fd_inf_agrees_across_4_8_16_clips(reference):
    """One distribution, three sets of 4, 8 and 16 clips: the plain FD falls with n (the bias),
    FD-infinity's intervals overlap and each holds the FD of the population."""
    rng = np.random.default_rng(4)
    truth = frechet_from_stats(np.zeros(D), BETWEEN + WITHIN, *reference)
    plain, inf = {}, {}
    for n in (4, 8, 16):
        sets = clips(n, rng)
        plain[n] = frechet_from_stats(*gaussian_stats(np.concatenate(sets)), *reference)
        inf[n] = fd_inf.inf_interval(sets, *reference, seed=0)
        assert inf[n]["n"] == n
    assert plain[4] > 2 * plain[16], plain
    for n, row in inf.items():
        assert row["ci_low"] <= truth <= row["ci_high"], (n, row, truth)
    assert max(r["ci_low"] for r in inf.values()) <= min(r["ci_high"] for r in inf.values()), inf


def test_equal_n_subsamples_with_a_fixed_seed(reference):
    rng = np.random.default_rng(5)
    groups = {"small": clips(4, rng), "large": clips(16, rng), "tiny": clips(2, rng)}
    first = fd_inf.equal_n(groups, *reference, n=4, repeats=10, seed=3)
    again = fd_inf.equal_n(groups, *reference, n=4, repeats=10, seed=3)
    assert first == again
    assert first["n"] == 4
    assert first["groups"]["small"]["subsets"] == 1 and first["groups"]["small"]["fd_sd"] == 0
    large = first["groups"]["large"]
    assert large["subsets"] == 10 and large["fd_sd"] > 0
    assert large["q_low"] <= large["fd_mean"] <= large["q_high"]
    assert (
        first["groups"]["tiny"]["fd"] is None
        and "2 clips < n = 4" in first["groups"]["tiny"]["reason"]
    )


def test_too_few_clips_are_refused(reference):
    with pytest.raises(ValueError, match="at least 4 clips"):
        fd_inf.inf_interval(clips(3, RNG), *reference)
