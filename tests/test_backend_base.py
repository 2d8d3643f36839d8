"""The backend interface's shared parts, and the builders the Stable Audio backend tests use.

The builders make small models offline: a word-level tokenizer, an offline Hugging Face hub
cache in a temporary folder (so hub ids resolve through the real hf_hub_download and
from_pretrained with no network), weights that look trained (no all-zero matrix, which
peft's DoRA cannot adapt), and one training step through the backend interface.
"""

import contextlib
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from eisbach.backends import BACKENDS, get_backend, sa3_medium
from eisbach.backends.base import (
    ConditionedDiT,
    audio_tensor,
    check_state_dict,
    draw_timesteps,
    resolve_pretrained,
)
from eisbach.weighting import get_scheme

CAPTIONS = ["a low organ drone", "a bright piano melody then strings", "static marimba"]


# --- builders ------------------------------------------------------------------------------------


def word_tokenizer(folder: Path, captions=CAPTIONS):
    """A word-level tokenizer over the captions' words, saved for AutoTokenizer."""
    return sa3_medium.word_tokenizer(folder, captions)


def hub_cache_put(cache: Path, repo: str, source: Path) -> Path:
    """Puts the files of ``source`` into an offline hub cache as repository ``repo``."""
    commit = hashlib.sha1(repo.encode()).hexdigest()
    root = cache / f"models--{repo.replace('/', '--')}"
    snapshot = root / "snapshots" / commit
    shutil.copytree(source, snapshot, dirs_exist_ok=True)
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(commit)
    return snapshot


@contextlib.contextmanager
def offline_hub_cache(tmp_path_factory):
    """An empty Hugging Face hub cache in a temporary folder, offline, while in the block."""
    import huggingface_hub.constants as hub

    cache = tmp_path_factory.mktemp("hub-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(hub, "HF_HUB_CACHE", str(cache))
        mp.setattr(hub, "HF_HUB_OFFLINE", True)
        yield cache


@pytest.fixture(scope="module")
def offline_hub(tmp_path_factory):
    with offline_hub_cache(tmp_path_factory) as cache:
        yield cache


def pretrained_like(model: torch.nn.Module, seed: int = 0) -> None:
    """Fills the all-zero weights of a freshly built model (zero-initialised branches and
    convs) with small values, as training leaves them."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.is_floating_point() and p.numel() > 1 and not p.any():
                p.copy_(0.02 * torch.randn(p.shape, generator=g))


def save_model(model: torch.nn.Module, config: dict, folder: Path) -> Path:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()}, folder / "model.safetensors"
    )
    (folder / "model_config.json").write_text(json.dumps(config, indent=2))
    return folder


def tone(seconds: float, sample_rate: int, freq: float, channels: int = 2) -> np.ndarray:
    n = int(seconds * sample_rate)
    t = np.arange(n) / sample_rate
    mono = 0.3 * np.sin(2 * np.pi * freq * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
    return np.stack([mono * (1 - 0.2 * c) for c in range(channels)]).astype(np.float32)


def padded_batch(latents: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    channels, frames = latents[0].shape[0], max(z.shape[1] for z in latents)
    x0 = torch.zeros(len(latents), channels, frames)
    mask = torch.zeros(len(latents), frames, dtype=torch.bool)
    for b, z in enumerate(latents):
        x0[b, :, : z.shape[1]] = torch.from_numpy(z)
        mask[b, : z.shape[1]] = True
    return x0, mask


def train_one_step(backend, base_dir, latents, embeddings, masks, drop=(1,)):
    """One DoRA step through the backend interface, as the training loop takes it: returns
    (peft model, per-sample loss). Samples in ``drop`` have their caption dropped (zeroed)."""
    from peft import LoraConfig, get_peft_model

    dit = backend.load_dit(base_dir)
    torch.manual_seed(0)
    model = get_peft_model(
        dit,
        LoraConfig(
            r=4,
            lora_alpha=4,
            target_modules=backend.adapter_targets(dit),
            use_dora=True,
            lora_dropout=0.0,
        ),
    )
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    before = {n: p.detach().clone() for n, p in trainable.items()}
    assert trainable, "no adapter parameters"

    x0, mask = padded_batch(latents)
    cond = torch.from_numpy(np.asarray(embeddings)).clone()
    cond_mask = torch.from_numpy(np.asarray(masks))
    for b in drop:
        cond[b] = 0
    g = torch.Generator().manual_seed(0)
    t = backend.shift_timesteps(backend.sample_timesteps(len(latents), g), mask.sum(-1))
    noise = torch.randn(x0.shape, generator=g)
    x_t, target = backend.noisy_input(x0, noise, t)

    model.train()
    pred = backend.dit_forward(model, x_t, t, cond, cond_mask, mask=mask)
    assert pred.shape == x0.shape
    weights = get_scheme("eisbach", lam=0.5)(pred, target, t, mask).detach()
    sq = ((pred - target) ** 2) * mask[:, None]
    per_sample = sq.sum((1, 2)) / (mask.sum(1) * x0.shape[1])
    loss = (weights * per_sample).mean()
    assert torch.isfinite(loss)
    optimizer = torch.optim.AdamW(trainable.values(), lr=1e-3)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()

    changed = [n for n, p in trainable.items() if not torch.equal(p.detach(), before[n])]
    assert changed, "the step changed no adapter weight"
    for n, p in model.named_parameters():
        if n in frozen:
            assert torch.equal(p.detach(), frozen[n]), f"base weight {n} changed"
    return model, per_sample.detach()


# --- tests of the shared parts -----------------------------------------------------------------------


def test_registry_names_all_backends():
    assert BACKENDS == ("tiny", "stable-audio-tools", "stable-audio-3")
    with pytest.raises(ValueError, match="unknown backend 'sao'.*stable-audio-3"):
        get_backend("sao", {}, ".")


def test_trunc_logit_normal_matches_stable_audio_3():
    t = draw_timesteps("trunc_logit_normal", 200_000, torch.Generator().manual_seed(0))
    assert 0.0 <= t.min() and t.max() <= 1.0
    assert t.mean().item() == pytest.approx(0.54, abs=0.01)
    q10, q90 = torch.quantile(t[:50_000], torch.tensor([0.1, 0.9])).tolist()
    assert q10 == pytest.approx(0.24, abs=0.015) and q90 == pytest.approx(0.84, abs=0.015)
    again = draw_timesteps("trunc_logit_normal", 200_000, torch.Generator().manual_seed(0))
    assert torch.equal(again, t)
    with pytest.raises(ValueError, match="unknown timestep sampler 'cosine'.*log_snr"):
        draw_timesteps("cosine", 1, torch.Generator())


def test_audio_tensor_maps_channels():
    mono = np.ones(10, np.float32)
    assert audio_tensor(mono, 2).shape == (2, 10)
    assert audio_tensor(np.stack([mono, -mono]), 1).abs().max() == 0
    with pytest.raises(ValueError, match="channels, n"):
        audio_tensor(np.ones((10, 2), np.float32), 2)


def test_resolve_pretrained_errors_name_the_key(tmp_path, offline_hub, monkeypatch):
    with pytest.raises(ValueError, match="backend.pretrained is empty"):
        resolve_pretrained("")
    (tmp_path / "model_config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"backend.pretrained=.*lacks model.safetensors"):
        resolve_pretrained(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no such folder"):
        resolve_pretrained(str(tmp_path / "absent"))
    monkeypatch.setenv("HF_TOKEN", "hf_secret_token_value")
    with pytest.raises(RuntimeError, match="backend.pretrained='org/model'") as err:
        resolve_pretrained("org/model")
    assert "hf_secret_token_value" not in str(err.value)
    assert "HF_TOKEN" in str(err.value)


def test_check_state_dict_names_every_bad_key():
    module = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 1))
    state = dict(module.state_dict())
    state.pop("1.bias")
    state["0.weight"] = torch.zeros(4, 2)
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError) as err:
        check_state_dict(module, state, "model.safetensors")
    message = str(err.value)
    assert "1 missing: 1.bias" in message
    assert "1 unexpected: extra.weight" in message
    assert "0.weight (4, 2) != (3, 2)" in message


def test_conditioned_dit_rejects_conditioning_it_cannot_compute():
    with pytest.raises(ValueError, match="'lyrics'"):
        ConditionedDiT(
            torch.nn.Identity(),
            {},
            "prompt",
            {"cross_attn_cond_ids": ["prompt", "lyrics"]},
            assemble=None,
            latent_rate=10.0,
        )


def test_tiny_backend_defers_stable_audio_tools_import_time_compile():
    """Importing the model code through the tiny backend leaves torch's inductor unimported and
    torch.compile as it was; flex attention compiles only if it is ever called."""
    import subprocess
    import sys

    code = (
        "import sys, torch\n"
        "real = torch.compile\n"
        "from eisbach.backends.tiny import import_stable_audio_tools\n"
        "import_stable_audio_tools()\n"
        "from stable_audio_tools.models import transformer\n"
        "from torch.nn.attention.flex_attention import flex_attention\n"
        "assert torch.compile is real\n"
        "assert transformer.flex_attention_compiled.__wrapped__ is flex_attention\n"
        "print('inductor' if 'torch._inductor.compile_fx' in sys.modules else 'deferred')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == "deferred"
