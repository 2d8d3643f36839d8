"""The held-out loss: the same inputs for every run, so that runs pair up clip by clip."""

import numpy as np
import pytest
import torch
from conftest import TINY_BACKEND, write_clip_store

from eisbach.backends import get_backend
from eisbach.heldout import clip_noise, heldout_loss, summarize

CAPTIONS = ["a low organ drone", "a bright piano melody then strings", "a static marimba ostinato"]
NO_AUTOCAST = torch.autocast("cpu", enabled=False)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("heldout")
    backend = get_backend("tiny", TINY_BACKEND, root)
    backend.build_text_encoder(CAPTIONS)
    lengths = [6000 + 700 * i for i in range(8)]
    write_clip_store(backend, root / "store", CAPTIONS, lengths, eval_every=3)  # c0, c3, c6
    return backend, root / "store"


def score(backend, model, store, **cfg):
    return heldout_loss(backend, model, store, cfg, torch.device("cpu"), NO_AUTOCAST)


def test_every_eval_clip_at_every_t_and_repeatable(store):
    backend, path = store
    model = backend.new_dit(0)
    rows = score(backend, model, path, t=[0.2, 0.8], batch_size=2)
    assert [(r["sample_id"], r["t"]) for r in rows] == [
        ("c0", 0.2),
        ("c3", 0.2),
        ("c0", 0.8),
        ("c3", 0.8),
        ("c6", 0.2),
        ("c6", 0.8),
    ]
    assert all(np.isfinite(r["loss"]) and r["loss"] > 0 for r in rows)
    assert score(backend, model, path, t=[0.2, 0.8], batch_size=2) == rows
    assert model.training, "scoring must leave the model in training mode"
    summary = summarize(rows)
    assert summary["clips"] == 3 and set(summary["by_t"]) == {"0.2", "0.8"}
    assert summary["mean"] == pytest.approx(np.mean([r["loss"] for r in rows]))


def test_runs_differ_only_by_their_weights(store):
    backend, path = store
    a = score(backend, backend.new_dit(0), path)
    b = score(backend, backend.new_dit(1), path)
    assert [(r["sample_id"], r["t"]) for r in a] == [(r["sample_id"], r["t"]) for r in b]
    assert [r["loss"] for r in a] != [r["loss"] for r in b]
    assert len(a) == 3 * 5  # the default grid of 5 timesteps


def test_noise_depends_only_on_its_key():
    a = clip_noise(0, "c1", 2, (4, 10))
    assert torch.equal(a, clip_noise(0, "c1", 2, (4, 10)))
    for other in (clip_noise(1, "c1", 2, (4, 10)), clip_noise(0, "c2", 2, (4, 10))):
        assert not torch.equal(a, other)
    assert not torch.equal(a, clip_noise(0, "c1", 3, (4, 10)))


def test_a_store_without_eval_clips_scores_nothing(tmp_path):
    backend = get_backend("tiny", TINY_BACKEND, tmp_path)
    backend.build_text_encoder(CAPTIONS)
    write_clip_store(backend, tmp_path / "store", CAPTIONS, [6000, 7000])
    assert score(backend, backend.new_dit(0), tmp_path / "store") == []
    assert summarize([]) == {"clips": 0, "mean": None, "by_t": {}}
