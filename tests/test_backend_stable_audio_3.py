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

import json
import shutil
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
)

from eisbach.backends import get_backend, sa3_medium
from eisbach.backends.base import draw_timesteps

SR = 44100
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


def same_config() -> dict:
    return sa3_medium.same_config(LATENT)


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

    root = tmp_path_factory.mktemp("sa3")
    t5_dir = sa3_medium.save_text_encoder(root / "t5gemma", CAPTIONS)

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
    adapted = {n.split(".lora_A")[0] for n, _ in model.named_parameters() if ".lora_A." in n}
    targets = backend.adapter_targets(backend.load_dit(tmp_path / "base"))
    assert {n.removeprefix("base_model.model.") for n in adapted} == set(targets)
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


def test_unexpected_keys_are_skipped_and_recorded(pretrained, tmp_path):
    """As upstream's copy_state_dict: a key the model has no place for is reported and skipped;
    the base's run.json (via prepare_base's record) and base.json keep the list."""
    from safetensors.torch import load_file, save_file

    folder, _ = pretrained
    state = load_file(folder / "model.safetensors")
    state["model.model.ema_decay"] = torch.zeros(1)
    extra = tmp_path / "extra"
    extra.mkdir()
    save_file(state, extra / "model.safetensors")
    shutil.copy(folder / "model_config.json", extra / "model_config.json")
    backend = backend_for(extra)
    record = backend.prepare_base(tmp_path / "base")
    assert record["unexpected_keys"] == ["model.model.ema_decay"]
    base_json = json.loads((tmp_path / "base" / "base.json").read_text())
    assert base_json["unexpected_keys"] == ["model.model.ema_decay"]
    backend.load_dit(tmp_path / "base")
    assert backend.load_report["unexpected_keys"] == ["model.model.ema_decay"]


def test_missing_dit_keys_fail_naming_them(pretrained, tmp_path):
    from safetensors.torch import load_file, save_file

    folder, _ = pretrained
    state = load_file(folder / "model.safetensors")
    del state["model.model.transformer.layers.1.self_attn.to_qkv.weight"]
    bad = tmp_path / "missing"
    bad.mkdir()
    save_file(state, bad / "model.safetensors")
    shutil.copy(folder / "model_config.json", bad / "model_config.json")
    with pytest.raises(
        ValueError, match=r"1 missing: model.model.transformer.layers.1.self_attn.to_qkv"
    ):
        backend_for(bad).prepare_base(tmp_path / "base")


@pytest.mark.parametrize("pretraining", ["uniform", "log_snr", "log_snr_uniform"])
def test_model_config_sampler_never_replaces_lora_sampler(
    pretrained, tmp_path, pretraining, capsys
):
    folder, _ = pretrained
    config = json.loads((folder / "model_config.json").read_text())
    config["training"] = {"timestep_sampler": pretraining}
    other = tmp_path / "other"
    other.mkdir()
    (other / "model_config.json").write_text(json.dumps(config))
    (other / "model.safetensors").symlink_to(folder / "model.safetensors")
    backend = backend_for(other)
    assert backend.timestep_sampler == "trunc_logit_normal"
    assert backend.describe()["model_timestep_sampler"] == pretraining
    assert f"training.timestep_sampler {pretraining!r} (its pretraining) is not used" in (
        capsys.readouterr().err
    )
    g = torch.Generator().manual_seed(0)
    t = backend.sample_timesteps(4, g)
    assert torch.equal(t, draw_timesteps("trunc_logit_normal", 4, torch.Generator().manual_seed(0)))


def test_other_sa3_samplers_by_option(pretrained):
    folder, _ = pretrained
    options = {"timestep_sampler": "log_snr", "timestep_sampler_options": {"mean_logsnr": 0.0}}
    backend = backend_for(folder, stable_audio_3=options)
    t = backend.sample_timesteps(8, torch.Generator().manual_seed(1))
    expected = draw_timesteps("log_snr", 8, torch.Generator().manual_seed(1), mean_logsnr=0.0)
    assert torch.equal(t, expected)
    uniform = backend_for(folder, stable_audio_3={"timestep_sampler": "uniform"})
    t = uniform.sample_timesteps(4, torch.Generator().manual_seed(1))
    assert sorted((t * 4).floor().long().tolist()) == [0, 1, 2, 3]  # upstream's Sobol
    with pytest.raises(ValueError, match=r"timestep_sampler: 'cosine' is not one of"):
        backend_for(folder, stable_audio_3={"timestep_sampler": "cosine"})
    with pytest.raises(ValueError, match=r"bad options"):
        backend_for(
            folder,
            stable_audio_3={"timestep_sampler": "log_snr", "timestep_sampler_options": {"mu": 1}},
        )


def test_hub_names_resolve_through_the_hub(sa3, offline_hub):
    with pytest.raises(
        RuntimeError, match=r"backend.pretrained='medium-base'.*stable-audio-3-medium-base"
    ):
        backend_for("medium-base")


@pytest.mark.parametrize("frames", [11, 108, 300])
def test_generation_headroom_and_mask_are_generates(pretrained, frames):
    """Against the package's own generate() arithmetic: the length it generates for a
    seconds_total (model.py _adapt_sample_size, 6 s of headroom) and the padding mask's valid
    length (inference/sampling.py: the duration's frames plus the headroom's)."""
    from types import SimpleNamespace

    from stable_audio_3.data.utils import compute_effective_seq_len_from_conditioning
    from stable_audio_3.model import StableAudioModel

    folder, _ = pretrained
    backend = backend_for(folder)
    seconds = frames / backend.latent_rate
    wrapper = SimpleNamespace(
        sample_rate=SR, pretransform=SimpleNamespace(downsampling_ratio=RATIO)
    )
    upstream = SimpleNamespace(model=wrapper, model_config=backend.model_config)
    conditioning = [{"prompt": "x", "seconds_total": seconds}]
    samples = StableAudioModel._adapt_sample_size(upstream, conditioning, 10**9, 6.0)
    effective = compute_effective_seq_len_from_conditioning(conditioning, SR, RATIO, "cpu")
    total = samples // RATIO
    valid = min(int(effective[0]) + int(6.0 * SR / RATIO), total)
    assert backend.generation_frames(frames) == (total, valid)
    assert int(effective[0]) == frames and total > frames


def test_sampling_dtype_and_padding_mask(pretrained, tmp_path):
    folder, _ = pretrained
    backend = backend_for(folder)
    assert backend.inference_dtype() == torch.float32  # auto on CPU
    backend.device = torch.device("cuda")  # only to read what auto means there
    assert backend.inference_dtype() == torch.float16
    bf16 = backend_for(folder, stable_audio_3={"inference_dtype": "bfloat16"})
    assert bf16.inference_dtype() == torch.bfloat16

    hidden, masks = bf16.encode_text(CAPTIONS[:2])
    total, valid = bf16.generation_frames(4)
    noise = torch.randn(2, LATENT, total, generator=torch.Generator().manual_seed(0))
    mask = (torch.arange(total) < valid).expand(2, total)
    bf16.prepare_base(tmp_path / "base")
    dit = bf16.load_dit(tmp_path / "base")
    x = bf16.sample(
        dit.eval(),
        noise,
        torch.from_numpy(hidden),
        torch.from_numpy(masks),
        steps=2,
        cfg_scale=3.0,
        mask=mask,
        seconds_total=4 / bf16.latent_rate,
        schedule_frames=4,
    )
    assert x.dtype == torch.float32 and torch.isfinite(x).all()
    assert next(dit.parameters()).dtype == torch.bfloat16
    audio = bf16.decode(x)
    assert audio.shape == (2, total * RATIO) and np.isfinite(audio).all()
