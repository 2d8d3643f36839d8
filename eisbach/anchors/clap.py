"""CLAP score as stable-audio-metrics computes it (src/clap_score.py): laion_clap's CLAP_Module
with enable_fusion=True (HTSAT-tiny audio encoder, RoBERTa text encoder, fusion "aff_2d") and
the checkpoint 630k-audioset-fusion-best.pt (its default); the state dict loaded strictly after
dropping ``text_branch.embeddings.position_ids``. Audio at 48 kHz mono, peak-normalised to
-1 dBFS, quantised to int16 and back, embedded by ``get_audio_embedding_from_data``; the prompt by
``get_text_embedding``; the score is their cosine (eps 1e-8), averaged over samples.

CLAP_Module builds its text encoder and tokenizer with from_pretrained("roberta-base"), so
roberta-base must be in the Hugging Face cache (``hf_cache``); it is read offline
(HF_HUB_OFFLINE=1), and the checkpoint then replaces its weights.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np

from eisbach.anchors.weights import load_state_dict

CHECKPOINT = "630k-audioset-fusion-best.pt"
SAMPLE_RATE = 48000
PEAK_DB = -1.0
SETTINGS = f"fusion-{CHECKPOINT}-{SAMPLE_RATE}"
TEXT_MODEL = "roberta-base"


@contextlib.contextmanager
def offline_hub(cache: str | os.PathLike | None):
    """HF lookups served from ``cache`` (or the default cache) only, for the duration."""
    names = ("HF_HUB_OFFLINE", "HF_HUB_CACHE", "TRANSFORMERS_OFFLINE")
    saved = {k: os.environ.get(k) for k in names}
    os.environ["HF_HUB_OFFLINE"] = os.environ["TRANSFORMERS_OFFLINE"] = "1"
    if cache:
        os.environ["HF_HUB_CACHE"] = str(cache)
    try:
        import huggingface_hub.constants as hub

        saved_hub = (hub.HF_HUB_OFFLINE, hub.HF_HUB_CACHE)
        hub.HF_HUB_OFFLINE = True
        if cache:
            hub.HF_HUB_CACHE = str(cache)
        try:
            yield
        finally:
            hub.HF_HUB_OFFLINE, hub.HF_HUB_CACHE = saved_hub
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def build(device: str, hf_cache=None):
    """laion_clap's fusion CLAP at its own defaults, randomly initialised (roberta-base's config
    and tokenizer from the HF cache)."""
    with offline_hub(hf_cache):
        import laion_clap

        return laion_clap.CLAP_Module(enable_fusion=True, device=device)


def load(weights: Path, device: str, hf_cache=None):
    model = build(device, hf_cache)
    state = load_state_dict(weights)
    state.pop("text_branch.embeddings.position_ids", None)
    model.model.load_state_dict(state, strict=True)
    model.eval()
    return model


def text_embeddings(model, texts: list[str]) -> np.ndarray:
    import torch

    texts = list(texts)
    # laion_clap's tokenizer squeezes a batch of one text to 1-D, which roberta then refuses:
    # embed it twice and keep one.
    batch = texts * 2 if len(texts) == 1 else texts
    with torch.no_grad():
        emb = model.get_text_embedding(batch, use_tensor=True).cpu().numpy()
    return emb[: len(texts)]


def audio_embedding(path: Path, model, seed: int = 0) -> np.ndarray:
    """One clip's CLAP audio embedding. The fusion input picks random 10 s chunks of a longer
    clip (numpy's global generator), so it is seeded per clip for reproducible scores."""
    import librosa
    import pyloudnorm
    import torch

    audio, _ = librosa.load(path, sr=SAMPLE_RATE, mono=True)
    audio = pyloudnorm.normalize.peak(audio, PEAK_DB).reshape(1, -1)
    audio = (np.clip(audio, -1.0, 1.0) * 32767.0).astype(np.int16)
    audio = torch.from_numpy((audio / 32767.0).astype(np.float32))
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        with torch.no_grad():
            emb = model.get_audio_embedding_from_data(x=audio, use_tensor=True)
    finally:
        np.random.set_state(state)
    return emb[0].cpu().numpy()


def cosine(audio: np.ndarray, text: np.ndarray) -> float:
    import torch

    a = torch.as_tensor(audio, dtype=torch.float32).unsqueeze(0)
    t = torch.as_tensor(text, dtype=torch.float32).unsqueeze(0)
    return float(torch.nn.functional.cosine_similarity(a, t, dim=1, eps=1e-8)[0])
