"""The stable-audio-3 backend, for real, with no download.

The stable_audio_3 wheel of the pinned commit (../shared/wheels/) is installed with --no-deps
into a temporary folder on sys.path (never into the environment). A small Stable Audio 3
model is built offline: a SAME autoencoder (patched stereo, transformer resampling blocks,
4096x down as SAME-L), a T5Gemma conditioner loading a tiny random T5Gemma and a word-level
tokenizer saved to a temporary folder (the conditioner's model_path), a timing conditioner,
inpainting inputs and a DiT with padding-mask attention. It is saved as model_config.json +
model.safetensors and loaded through the local-folder path; then encode, decode and one
DoRA step on every Linear/Conv1d that Stable Audio 3's own adapters target.

Skips only when ../shared is absent (no wheel to install).
"""

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_backend_base import (
    CAPTIONS,
    offline_hub_cache,
    pretrained_like,
    save_model,
    tone,
    train_one_step,
    word_tokenizer,
)

from eisbach.backends import get_backend

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
WHEEL = SHARED / "wheels" / "stable_audio_3-0.1.0-py3-none-any.whl"
SR = 44100
PATCH = 64
RATIO = 4096  # patch 64 x strides 4 x 16, as SAME-L's 4096x
LATENT = 16


@pytest.fixture(scope="module")
def offline_hub(tmp_path_factory):
    with offline_hub_cache(tmp_path_factory) as cache:
        yield cache


def test_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "stable_audio_3", None)
    from eisbach.backends.stable_audio_3 import SA3_COMMIT, import_stable_audio_3

    assert SA3_COMMIT == "636f906fc0ee54b3f06edf974dc7d3aa99d6841b"
    with pytest.raises(ImportError) as err:
        import_stable_audio_3()
    message = str(err.value)
    assert SA3_COMMIT in message and "--no-deps" in message and "stable-audio-3" in message


@pytest.fixture(scope="module")
def sa3(tmp_path_factory):
    """Installs the wheel with --no-deps into a temporary folder on sys.path."""
    if not SHARED.exists():
        pytest.skip("../shared is absent, so there is no stable_audio_3 wheel to install")
    assert WHEEL.exists(), f"{WHEEL} is missing"
    target = tmp_path_factory.mktemp("sa3-site")
    uv = Path(sys.executable).with_name("uv")
    if uv.exists():
        cmd = [str(uv), "pip", "install", "--python", sys.executable]
    else:
        cmd = [sys.executable, "-m", "pip", "install", "--quiet"]
    subprocess.run([*cmd, "--no-deps", "--target", str(target), str(WHEEL)], check=True)
    sys.path.insert(0, str(target))
    yield target
    sys.path.remove(str(target))


def same_config() -> dict:
    block = {"channels": 16, "c_mults": [1, 2], "strides": [4, 16], "transformer_depths": [1, 1]}
    return {
        "encoder": {
            "type": "same",
            "config": {**block, "in_channels": 2 * PATCH, "latent_dim": LATENT},
        },
        "decoder": {
            "type": "same",
            "config": {**block, "out_channels": 2 * PATCH, "latent_dim": LATENT},
        },
        "latent_dim": LATENT,
        "downsampling_ratio": RATIO,
        "io_channels": 2,
        "pretransform": {"config": {"channels": 2, "patch_size": PATCH}},
        "bottleneck": {"config": {"dim": LATENT}},
    }


def model_config(text_encoder: Path) -> dict:
    return {
        "model_type": "diffusion_cond",
        "sample_rate": SR,
        "sample_size": 4 * SR,
        "model": {
            "io_channels": LATENT,
            "pretransform": {"type": "autoencoder", "config": same_config()},
            "conditioning": {
                "configs": [
                    {
                        "id": "prompt",
                        "type": "t5gemma",
                        "config": {"model_path": str(text_encoder), "max_length": 8},
                    },
                    {
                        "id": "seconds_total",
                        "type": "number",
                        "config": {"min_val": 0, "max_val": 256},
                    },
                ],
                "cond_dim": 32,
            },
            "diffusion": {
                "type": "dit",
                "diffusion_objective": "rectified_flow",
                "cross_attention_cond_ids": ["prompt", "seconds_total"],
                "global_cond_ids": ["seconds_total"],
                "input_concat_ids": ["inpaint_mask", "inpaint_masked_input"],
                "mask_padding_attention": True,
                "config": {
                    "io_channels": LATENT,
                    "embed_dim": 64,
                    "depth": 2,
                    "num_heads": 2,
                    "cond_token_dim": 32,
                    "global_cond_dim": 32,
                    "input_concat_dim": 1 + LATENT,
                    "project_cond_tokens": False,
                    "transformer_type": "continuous_transformer",
                    "attn_kwargs": {"qk_norm": "rms"},
                },
            },
        },
    }


@pytest.fixture(scope="module")
def pretrained(sa3, tmp_path_factory, offline_hub):
    """A local folder with a small Stable Audio 3 model (and its tiny T5Gemma)."""
    import torch._dynamo
    from transformers import T5GemmaConfig, T5GemmaEncoderModel

    root = tmp_path_factory.mktemp("sa3")
    t5_dir = root / "t5gemma"
    tokenizer = word_tokenizer(t5_dir)
    module = {
        "vocab_size": len(tokenizer),
        "hidden_size": 768,  # t5gemma-b-b-ul2's width, which T5GemmaConditioner expects
        "intermediate_size": 16,
        "num_hidden_layers": 1,
        "num_attention_heads": 1,
        "num_key_value_heads": 1,
        "head_dim": 16,
        "query_pre_attn_scalar": 16,
        "max_position_embeddings": 64,
        "sliding_window": 32,
    }
    config = T5GemmaConfig(encoder=module, decoder=module, vocab_size=len(tokenizer))
    config.is_encoder_decoder = False
    torch.manual_seed(0)
    T5GemmaEncoderModel(config).save_pretrained(t5_dir)

    dynamo = (torch._dynamo.config.suppress_errors, torch._dynamo.config.cache_size_limit)
    from eisbach.backends.stable_audio_3 import import_stable_audio_3

    import_stable_audio_3()
    assert (torch._dynamo.config.suppress_errors, torch._dynamo.config.cache_size_limit) == dynamo
    from stable_audio_3.factory import create_diffusion_cond_from_config

    config = model_config(t5_dir)
    torch.manual_seed(1)
    model = create_diffusion_cond_from_config(config)
    assert (torch._dynamo.config.suppress_errors, torch._dynamo.config.cache_size_limit) == dynamo
    pretrained_like(model)
    folder = save_model(model, config, root / "local-model")
    return folder, t5_dir


def backend_for(folder, **extra):
    config = {
        "name": "stable-audio-3",
        "sample_rate": SR,
        "pretrained": str(folder),
        "device": "cpu",
    }
    return get_backend("stable-audio-3", config | extra, None)


def test_local_folder_encodes_decodes_and_encodes_text(pretrained):
    folder, _ = pretrained
    tf32 = torch.backends.cuda.matmul.allow_tf32
    backend = backend_for(folder)
    assert (backend.sample_rate, backend.audio_channels, backend.latent_channels) == (SR, 2, LATENT)
    assert backend.latent_rate == pytest.approx(10.7666, abs=1e-3)  # SAME-L's rate
    assert backend.objective == "rectified_flow"
    assert backend.timestep_sampler == "trunc_logit_normal"
    assert backend.version.startswith("stable-audio-3==0.1.0;")

    clips = [tone(1.0, SR, 220.0), tone(1.0, SR, 440.0), tone(0.5, SR, 330.0)]
    latents = backend.encode_audio_batch(clips, SR)
    assert [z.shape for z in latents] == [(LATENT, 11), (LATENT, 11), (LATENT, 6)]
    for clip, z in zip(clips, latents):  # batching gives the latents of one clip alone
        np.testing.assert_allclose(backend.encode_audio(clip, SR), z, rtol=1e-5, atol=1e-5)
    assert not np.allclose(latents[0], latents[1])
    assert torch.backends.cuda.matmul.allow_tf32 == tf32

    audio = backend.decode(torch.from_numpy(latents[0])[None])
    assert audio.shape == (1, 11 * RATIO) and np.isfinite(audio).all()
    assert np.abs(audio).max() <= 1.0

    hidden, masks = backend.encode_text(CAPTIONS)  # T5Gemma's last hidden state
    assert hidden.shape == (3, 8, 768) and masks.sum(1).tolist() == [4, 6, 2]


def test_one_dora_step_on_every_linear_and_conv(pretrained, tmp_path):
    folder, _ = pretrained
    backend = backend_for(folder)
    backend.prepare_base(tmp_path / "base")
    latents = backend.encode_audio_batch([tone(1.0, SR, 220.0), tone(0.6, SR, 330.0)], SR)
    hidden, masks = backend.encode_text(CAPTIONS[:2])
    model, loss = train_one_step(backend, tmp_path / "base", latents, hidden, masks)
    assert torch.isfinite(loss).all()
    assert backend.untargeted_modules == []
    adapted = {n.split(".lora_A")[0] for n, _ in model.named_parameters() if ".lora_A." in n}
    for suffix in (
        "self_attn.to_qkv",
        "cross_attn.to_kv",
        "ff.ff.2",
        "to_timestep_embed.0",
        "to_cond_embed.2",
        "to_global_embed.0",
        "transformer.project_in",
        "preprocess_conv",
        "postprocess_conv",
        "conditioners.prompt.proj_out",
        "conditioners.seconds_total.embedder.embedding.1",
    ):
        assert any(n.endswith(suffix) for n in adapted), suffix

    noise = torch.randn(2, LATENT, 11, generator=torch.Generator().manual_seed(0))
    model.eval()
    x = backend.sample(
        model, noise, torch.from_numpy(hidden), torch.from_numpy(masks), steps=3, cfg_scale=3.0
    )
    assert x.shape == noise.shape and torch.isfinite(x).all()
    schedule = backend.sampling_schedule(3, 11)
    assert schedule[0] == 1 and schedule[-1] == 0 and (schedule.diff() < 0).all()


def test_keys_the_package_would_skip_are_named(pretrained, tmp_path):
    from safetensors.torch import load_file, save_file

    folder, t5_dir = pretrained
    state = load_file(folder / "model.safetensors")
    state["model.model.transformer.project_in.weight"] = torch.zeros(3, 3)  # copy_state_dict skips
    bad = tmp_path / "bad"
    bad.mkdir()
    save_file(state, bad / "model.safetensors")
    shutil.copy(folder / "model_config.json", bad / "model_config.json")
    with pytest.raises(ValueError, match=r"project_in.weight \(3, 3\)"):
        backend_for(bad, stable_audio_3={"text_encoder": str(t5_dir)}).encode_text(["x"])


def test_hub_names_resolve_through_the_hub(sa3, offline_hub):
    with pytest.raises(
        RuntimeError, match=r"backend.pretrained='medium-base'.*stable-audio-3-medium-base"
    ):
        backend_for("medium-base")
