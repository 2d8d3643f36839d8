"""FD-openl3's embedding as stable-audio-metrics computes it (src/openl3_fd.py, examples/
musiccaps_no-audio.py): openl3, content type "music", input representation "mel256", 512-dim
embedding, hop 0.5 s (1 s windows, centred), audio peak-normalised to -1 dBFS (pyloudnorm) and
resampled with soxr to 44.1 kHz, the evaluation bandwidth, which openl3 then resamples to its
48 kHz input (resampy, kaiser_best); two channels: each channel embedded on its own and the two
512-dim frames concatenated (1024 dims), a mono clip copied to both. The FD is over all frames of
all clips (not per-clip means).

openl3 0.4.2 (TensorFlow) is an sdist whose build downloads its weights, so it cannot be installed
from a package registry alone; torchopenl3 1.0.1 is the PyTorch port of the same network, whose
weights are openl3's converted (torchopenl3_mel256_music_512.pth.tar). Its front end follows
kapre 0.1.4 (openl3 0.3.x); stable-audio-metrics runs openl3 0.4.2 on kapre 0.3.7. How far the
two embeddings differ has not been measured here (no weights on this machine).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from eisbach.anchors.weights import load_state_dict

CONTENT_TYPE = "music"
INPUT_REPR = "mel256"
EMBEDDING_SIZE = 512
HOP_S = 0.5
SAMPLE_RATE = 44100
CHANNELS = 2
PEAK_DB = -1.0
SETTINGS = f"{CONTENT_TYPE}-{INPUT_REPR}-{EMBEDDING_SIZE}-hop{HOP_S}-{SAMPLE_RATE}-ch{CHANNELS}"
WEIGHTS_FILE = f"torchopenl3_{INPUT_REPR}_{CONTENT_TYPE}_{EMBEDDING_SIZE}.pth.tar"


def build():
    """torchopenl3's network at stable-audio-metrics' settings, randomly initialised."""
    from torchopenl3.models import PytorchOpenl3

    return PytorchOpenl3(
        content_type=CONTENT_TYPE, input_repr=INPUT_REPR, embedding_size=EMBEDDING_SIZE
    )


def load(weights: Path, device: str):
    model = build()
    model.load_state_dict(load_state_dict(weights), strict=True)
    return model.eval().to(device)


def read_audio(path: Path) -> np.ndarray:
    """[channels, samples] at SAMPLE_RATE, peak-normalised, as stable-audio-metrics reads it."""
    import librosa
    import pyloudnorm
    import soxr

    audio, rate = librosa.load(path, sr=None, mono=False)
    audio = np.atleast_2d(audio).T  # [samples, channels]
    audio = pyloudnorm.normalize.peak(audio, PEAK_DB)
    audio = soxr.resample(audio, rate, SAMPLE_RATE)
    return np.atleast_2d(audio.T)


def embed(path: Path, model, device: str, batch_size: int = 32) -> np.ndarray:
    """[frames, 1024] float32: the left and the right channel's openl3 frames side by side."""
    import torch
    import torchopenl3

    audio = read_audio(path)
    channels = [audio[0], audio[0]] if audio.shape[0] == 1 else [audio[0], audio[1]]
    frames = []
    for channel in channels:
        wave = torch.as_tensor(channel, dtype=torch.float64, device=device)
        emb, _ = torchopenl3.get_audio_embedding(
            [wave],
            SAMPLE_RATE,
            model=model,
            hop_size=HOP_S,
            center=True,
            batch_size=batch_size,
            verbose=False,
            sampler="resampy",
        )
        frames.append(emb[0].detach().cpu().numpy())
    return np.concatenate(frames, axis=1).astype(np.float32)
