"""The stable-audio-tools backend through its real loading path, with no download.

A small stable-audio-tools diffusion_cond model is built from a config with a real
autoencoder (Oobleck encoder/decoder, "vae" bottleneck), a T5 text conditioner, timing
conditioners and a DiT; it is saved as model_config.json + model.safetensors. The T5
conditioner's weights ("t5-small": a tiny random T5 and a word-level tokenizer) sit in an
offline Hugging Face hub cache in a temporary folder, so stable-audio-tools' own T5Conditioner
loads them with from_pretrained as it would after a download. The model is loaded from a
local folder and by hub id from that cache, through the code that loads a downloaded model.
"""

import json

import numpy as np
import pytest
import torch
from test_backend_base import (
    CAPTIONS,
    hub_cache_put,
    offline_hub_cache,
    pretrained_like,
    save_model,
    tone,
    train_one_step,
    word_tokenizer,
)

from eisbach.backends import get_backend

SR = 44100
RATIO = 256  # Oobleck strides 4 x 8 x 8
LATENT = 8


@pytest.fixture(scope="module")
def offline_hub(tmp_path_factory):
    with offline_hub_cache(tmp_path_factory) as cache:
        yield cache


def model_config() -> dict:
    oobleck = {"channels": 8, "c_mults": [1, 2, 2], "strides": [4, 8, 8], "use_snake": True}
    return {
        "model_type": "diffusion_cond",
        "sample_size": SR,
        "sample_rate": SR,
        "audio_channels": 2,
        "model": {
            "pretransform": {
                "type": "autoencoder",
                "iterate_batch": False,
                "config": {
                    "encoder": {
                        "type": "oobleck",
                        "config": {**oobleck, "in_channels": 2, "latent_dim": 2 * LATENT},
                    },
                    "decoder": {
                        "type": "oobleck",
                        "config": {
                            **oobleck,
                            "out_channels": 2,
                            "latent_dim": LATENT,
                            "final_tanh": False,
                        },
                    },
                    "bottleneck": {"type": "vae"},
                    "latent_dim": LATENT,
                    "downsampling_ratio": RATIO,
                    "io_channels": 2,
                },
            },
            "conditioning": {
                "configs": [
                    {
                        "id": "prompt",
                        "type": "t5",
                        "config": {"t5_model_name": "t5-small", "max_length": 8},
                    },
                    {
                        "id": "seconds_start",
                        "type": "number",
                        "config": {"min_val": 0, "max_val": 512},
                    },
                    {
                        "id": "seconds_total",
                        "type": "number",
                        "config": {"min_val": 0, "max_val": 512},
                    },
                ],
                "cond_dim": 32,
            },
            "diffusion": {
                "cross_attention_cond_ids": ["prompt", "seconds_start", "seconds_total"],
                "global_cond_ids": ["seconds_start", "seconds_total"],
                "type": "dit",
                "diffusion_objective": "v",
                "config": {
                    "io_channels": LATENT,
                    "embed_dim": 64,
                    "depth": 2,
                    "num_heads": 2,
                    "cond_token_dim": 32,
                    "global_cond_dim": 64,
                    "project_cond_tokens": False,
                    "transformer_type": "continuous_transformer",
                },
            },
            "io_channels": LATENT,
        },
    }


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, offline_hub):
    """(local folder, hub id) of the same small pretrained model."""
    from transformers import T5Config, T5EncoderModel

    root = tmp_path_factory.mktemp("sat")
    t5_dir = root / "t5-small"
    tokenizer = word_tokenizer(t5_dir)
    torch.manual_seed(0)
    t5 = T5EncoderModel(
        T5Config(
            vocab_size=len(tokenizer),
            d_model=512,  # t5-small's width, which T5Conditioner expects
            d_kv=8,
            d_ff=16,
            num_layers=1,
            num_heads=1,
            decoder_start_token_id=0,
        )
    )
    t5.save_pretrained(t5_dir)
    hub_cache_put(offline_hub, "t5-small", t5_dir)

    from stable_audio_tools.models.factory import create_model_from_config

    config = model_config()
    torch.manual_seed(1)
    model = create_model_from_config(config)
    pretrained_like(model)
    folder = save_model(model, config, root / "local-model")
    hub_cache_put(offline_hub, "eisbach-test/tiny-sat", folder)
    return folder, "eisbach-test/tiny-sat"


def backend_for(pretrained: str, **extra):
    config = {
        "name": "stable-audio-tools",
        "sample_rate": SR,
        "pretrained": str(pretrained),
        "device": "cpu",
    }
    return get_backend("stable-audio-tools", config | extra, None)


def test_local_folder_encodes_decodes_and_encodes_text(pretrained):
    folder, _ = pretrained
    backend = backend_for(folder)
    assert (backend.sample_rate, backend.audio_channels, backend.latent_channels) == (SR, 2, LATENT)
    assert backend.latent_rate == pytest.approx(SR / RATIO)
    assert backend.objective == "v" and backend.timestep_sampler == "uniform"
    assert backend.has_pretrained_base

    stereo = tone(1.0, SR, 220.0)
    z = backend.encode_audio(stereo, SR)
    assert z.shape == (LATENT, int(np.ceil(SR / RATIO))) and z.dtype == np.float32
    assert np.array_equal(z, backend.encode_audio(stereo, SR)), "the VAE draw is not reproducible"
    assert not np.allclose(z, backend.encode_audio(tone(1.0, SR, 440.0), SR))
    mono = backend.encode_audio(stereo[0], SR)  # mono is duplicated onto both channels
    assert mono.shape == z.shape
    short = backend.encode_audio(tone(0.7, SR, 220.0), SR)
    assert short.shape == (LATENT, int(np.ceil(0.7 * SR / RATIO)))
    assert [a.shape for a in backend.encode_audio_batch([stereo, stereo[:, :1000]], SR)] == [
        z.shape,
        (LATENT, 4),
    ]
    with pytest.raises(ValueError, match="44100 Hz"):
        backend.encode_audio(stereo, 16000)

    audio = backend.decode(torch.from_numpy(z)[None])
    assert audio.shape == (1, z.shape[1] * RATIO) and np.isfinite(audio).all()
    assert np.abs(audio).max() <= 1.0
    assert backend.decode_audio(torch.from_numpy(z)[None]).shape == (1, 2, z.shape[1] * RATIO)

    embeddings, masks = backend.encode_text(CAPTIONS)  # through the real T5Conditioner
    assert embeddings.shape == (3, 8, 32) and embeddings.dtype == np.float32
    assert masks.dtype == bool and masks.sum(1).tolist() == [4, 6, 2]
    assert np.abs(embeddings[~masks]).max() == 0  # padded tokens are zeroed

    meta = backend.describe()
    assert meta["backend"] == "stable-audio-tools" and meta["pretrained"] == str(folder)
    assert meta["backend_version"].startswith("stable-audio-tools==0.0.19;")


def test_base_then_one_dora_step_then_sampling(pretrained, tmp_path):
    folder, _ = pretrained
    backend = backend_for(folder)
    record = backend.prepare_base(tmp_path / "base")
    assert (tmp_path / "base" / "model.safetensors").resolve() == (folder / "model.safetensors")
    assert record["linked"] and len(record["model_safetensors_sha256"]) == 64
    assert json.loads((tmp_path / "base" / "base.json").read_text())["source"] == str(folder)

    latents = [backend.encode_audio(tone(s, SR, f), SR) for s, f in ((1.0, 220), (0.6, 330))]
    embeddings, masks = backend.encode_text(CAPTIONS[:2])
    model, loss = train_one_step(backend, tmp_path / "base", latents, embeddings, masks)
    assert loss.shape == (2,) and torch.isfinite(loss).all()

    noise = torch.randn(2, LATENT, 20, generator=torch.Generator().manual_seed(0))
    cond, cond_mask = torch.from_numpy(embeddings), torch.from_numpy(masks)
    model.eval()
    x = backend.sample(model, noise, cond, cond_mask, steps=3, cfg_scale=3.0)
    assert x.shape == noise.shape and torch.isfinite(x).all()
    assert backend.decode(x).shape == (2, 20 * RATIO)


def test_save_dit_round_trip(pretrained, tmp_path):
    folder, _ = pretrained
    backend = backend_for(folder, copy_base=True)
    record = backend.prepare_base(tmp_path / "base")
    assert not record["linked"] and not (tmp_path / "base" / "model.safetensors").is_symlink()
    dit = backend.load_dit(tmp_path / "base")
    with torch.no_grad():
        dit.model.model.transformer.project_in.weight.add_(1.0)
    backend.save_dit(dit, tmp_path / "trained")
    again = backend.load_dit(tmp_path / "trained")
    for (name, a), (_, b) in zip(dit.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), name


def test_hub_id_loads_through_the_hub_cache(pretrained, monkeypatch):
    _, repo = pretrained
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    backend = backend_for(repo)
    assert backend.files.hub_repo == repo
    assert backend.files.weights is None  # fetched when first needed
    assert backend.version.endswith(f"{repo}@" + backend.files.config.parent.name[:12])
    assert backend.encode_audio(tone(0.5, SR, 220.0), SR).shape[0] == LATENT
    assert "/snapshots/" in str(backend.files.weights)

    with pytest.raises(RuntimeError, match="backend.pretrained='stabilityai/absent'") as err:
        backend_for("stabilityai/absent")
    assert "hf_not_a_real_token" not in str(err.value)


def test_wrong_weights_are_named(pretrained, tmp_path):
    from safetensors.torch import load_file, save_file

    folder, _ = pretrained
    state = load_file(folder / "model.safetensors")
    state["model.model.extra.weight"] = torch.zeros(1)
    del state["model.model.transformer.project_in.weight"]
    bad = tmp_path / "bad"
    bad.mkdir()
    save_file(state, bad / "model.safetensors")
    (bad / "model_config.json").write_text((folder / "model_config.json").read_text())
    backend = backend_for(bad)
    with pytest.raises(ValueError) as err:
        backend.encode_audio(tone(0.1, SR, 220.0), SR)
    message = str(err.value)
    assert "missing: model.model.transformer.project_in.weight" in message
    assert "unexpected: model.model.extra.weight" in message

    with pytest.raises(ValueError, match="backend.sample_rate=16000.*44100"):
        backend_for(folder, sample_rate=16000)
