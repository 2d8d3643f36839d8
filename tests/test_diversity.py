"""Vendi score and cross-seed consistency on embeddings and SSMs with a known answer, and the
evaluate stage's cache of analyses keyed by the clip's sha256."""

import numpy as np
import pytest

from eisbach import probe_signals as P
from eisbach.atomic import write_wav
from eisbach.diversity import consistency, vendi
from eisbach.evaluate import analyse_clip
from eisbach.metrics import analyse
from eisbach.score_cache import ScoreCache


def test_vendi_counts_distinct_clips():
    same = [np.zeros(128)] * 4
    assert vendi(same) == pytest.approx(1.0)
    far = [np.full(128, 30.0 * k) for k in range(4)]  # 30 dB apart >> sigma
    assert vendi(far) == pytest.approx(4.0, rel=1e-3)
    near = [np.full(128, 1.0 * k) for k in range(4)]
    assert 1.0 < vendi(near) < vendi(far)
    assert np.isnan(vendi([np.zeros(128)]))


def test_vendi_on_real_analyses_separates_different_music_from_repeats():
    a = analyse(P.sections(1.0, 4.0), 16000).embedding
    b = analyse(P.drone(4.0), 16000).embedding
    c = analyse(P.noise(4.0), 16000).embedding
    assert vendi([a, a, a]) == pytest.approx(1.0)
    assert vendi([a, b, c]) > 2.5


def test_consistency_reads_the_form_not_the_detail():
    form1 = analyse(P.sections(1.0, 6.0, seed=0), 16000).ssm
    form1_other_detail = analyse(P.with_gain(P.sections(1.0, 6.0, seed=3), -6), 16000).ssm
    form2 = analyse(P.sections(2.0, 6.0), 16000).ssm
    assert consistency([form1, form1_other_detail]) > 0.95
    assert consistency([form1, form2]) < consistency([form1, form1_other_detail]) - 0.2
    assert np.isnan(consistency([form1]))


def test_analyses_are_cached_by_sha256_and_a_changed_clip_is_rescored(tmp_path):
    cache = ScoreCache(tmp_path / "cache")
    wav = tmp_path / "clip.wav"
    write_wav(wav, P.sections(1.0, 3.0), 16000)
    stats = {"scored": 0, "cached": 0}
    sha, first = analyse_clip(wav, cache, stats)
    again_sha, again = analyse_clip(wav, cache, stats)
    assert stats == {"scored": 1, "cached": 1} and again_sha == sha
    np.testing.assert_equal(again.metrics, first.metrics)
    np.testing.assert_array_equal(again.ssm, first.ssm)
    write_wav(wav, P.sections(0.5, 3.0), 16000)
    _, changed = analyse_clip(wav, cache, stats)
    assert stats["scored"] == 2 and changed.metrics != first.metrics
