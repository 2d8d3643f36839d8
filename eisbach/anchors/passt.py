"""KL-PaSST as stable-audio-metrics computes it (src/passt_kld.py): hear21passt's
``get_basic_model(mode="logits")``, whose default arch is passt_s_swa_p16_128_ap476 (PaSST-S,
AudioSet mAP .476, SWA; weights passt-s-f128-p16-s10-ap.476-swa.pt), audio at 32 kHz mono,
peak-normalised to -1 dBFS; 10 s windows with a 5 s hop, a window shorter than 10 s zero-padded
when it holds more than 15 % of 10 s (else passed as it is); the 527 logits averaged over
windows ("collect mean") and then softmaxed. KL(sample || reference) per pair, as
``F.kl_div((p_ref + 1e-6).log(), p_sample, reduction="sum")``, averaged over pairs.

stable-audio-metrics installs hear21passt from git (commit 3d4e7cf); this is the PyPI release
0.0.26, whose STFT already passes return_complex=False (the patch stable-audio-metrics applies).
"""

from __future__ import annotations

import contextlib
import io
from functools import partial
from pathlib import Path
from unittest import mock

import numpy as np

from eisbach.anchors.weights import load_state_dict

ARCH = "passt_s_swa_p16_128_ap476"
SAMPLE_RATE = 32000
WINDOW_S = 10
OVERLAP_S = 5
MIN_FILL = 0.15
PEAK_DB = -1.0
SETTINGS = f"{ARCH}-{SAMPLE_RATE}-w{WINDOW_S}-o{OVERLAP_S}-mean"
WEIGHTS_FILE = "passt-s-f128-p16-s10-ap.476-swa.pt"


def build():
    """hear21passt's basic wrapper (its mel front end and PaSST-S), randomly initialised.

    get_basic_model always asks for the pretrained net, which downloads; the same call is made
    with pretrained=False, so every other setting stays the library's own."""
    from hear21passt import base
    from hear21passt.models import passt

    no_download = partial(passt.get_model, pretrained=False)
    with mock.patch.object(base, "get_model_passt", no_download), quiet():
        return base.get_basic_model(mode="logits", arch=ARCH)


def quiet():
    """hear21passt prints the whole network and every tensor shape of its first forward pass;
    stable-audio-metrics silences it the same way."""
    return contextlib.redirect_stdout(io.StringIO())


def load(weights: Path, device: str):
    from hear21passt.models.passt import checkpoint_filter_fn

    model = build()
    state = checkpoint_filter_fn(load_state_dict(weights), model.net)
    model.net.load_state_dict(state, strict=True)
    return model.eval().to(device)


def windows(audio: np.ndarray) -> list[np.ndarray]:
    """stable-audio-metrics' analysis windows of a 32 kHz clip."""
    size = WINDOW_S * SAMPLE_RATE
    step = (WINDOW_S - OVERLAP_S) * SAMPLE_RATE
    out = []
    for start in range(0, max(step, len(audio) - step), step):
        window = audio[start : start + size]
        if len(window) < size and len(window) > int(size * MIN_FILL):
            window = np.pad(window, (0, size - len(window)))
        out.append(window.astype(np.float32))
    return out


def probabilities(path: Path, model, device: str) -> np.ndarray:
    """The 527 class probabilities of one clip (softmax of the window-mean logits)."""
    import librosa
    import pyloudnorm
    import torch

    audio, _ = librosa.load(path, sr=SAMPLE_RATE, mono=True)
    audio = pyloudnorm.normalize.peak(audio, PEAK_DB)
    logits = []
    with torch.no_grad(), quiet():
        for window in windows(audio):
            wave = torch.from_numpy(window).unsqueeze(0).to(device)
            logits.append(model(wave).squeeze(0))
    mean = torch.stack(logits).mean(dim=0)
    return torch.softmax(mean, dim=0).cpu().numpy()


def kl(p_sample: np.ndarray, p_reference: np.ndarray) -> float:
    """KL(sample || reference), with stable-audio-metrics' 1e-6 inside the reference's log."""
    import torch

    ref = torch.as_tensor(p_reference, dtype=torch.float32)
    sample = torch.as_tensor(p_sample, dtype=torch.float32)
    return float(torch.nn.functional.kl_div((ref + 1e-6).log(), sample, reduction="sum"))
