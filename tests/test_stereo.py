"""Stereo through the data and latents stages (data.channels 2); mono stays mono (the demo)."""

import numpy as np
import pytest
import soundfile as sf

from eisbach.audio_checks import to_channels
from eisbach.latents import load_clip
from eisbach.provenance import file_sha256


def test_to_channels_keeps_stereo_and_resamples():
    rng = np.random.default_rng(0)
    stereo = 0.1 * rng.standard_normal((22050, 2)).astype(np.float32)
    out = to_channels(stereo, 22050, 44100, 2)
    assert out.shape == (44100, 2)
    assert not np.allclose(out[:, 0], out[:, 1])
    assert to_channels(stereo, 22050, 22050, 1).shape == (22050,)
    np.testing.assert_allclose(to_channels(stereo, 22050, 22050, 1), stereo.mean(axis=1), atol=1e-7)
    mono = stereo[:, 0]
    both = to_channels(mono, 22050, 22050, 2)
    assert both.shape == (22050, 2) and np.array_equal(both[:, 0], both[:, 1])
    with pytest.raises(ValueError, match="data.channels must be 1 or 2"):
        to_channels(stereo, 22050, 22050, 3)


def test_load_clip_gives_the_backend_its_channels(tmp_path):
    rng = np.random.default_rng(1)
    stereo = (0.1 * rng.standard_normal((800, 2))).astype(np.float32)
    path = tmp_path / "s.wav"
    sf.write(path, stereo, 16000, subtype="FLOAT")
    sha = file_sha256(path)
    two = load_clip(str(path), sha, 16000, channels=2)
    assert two.shape == (2, 800)
    np.testing.assert_array_equal(two, stereo.T)
    assert load_clip(str(path), sha, 16000).shape == (800,)  # a mono backend: the average
    sf.write(tmp_path / "m.wav", stereo[:, 0], 16000, subtype="FLOAT")
    dup = load_clip(str(tmp_path / "m.wav"), file_sha256(tmp_path / "m.wav"), 16000, channels=2)
    assert dup.shape == (2, 800) and np.array_equal(dup[0], dup[1])
