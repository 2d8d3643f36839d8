"""The `tiny` backend: a small stable-audio-tools diffusion_cond model over a normalised log-mel.

No download: the "autoencoder" is a fixed, invertible log-mel (decoded by Griffin-Lim), the
text encoder is stable-audio-tools' `lut` conditioner over a word-level tokenizer built from the
training captions, frozen at a seeded initialisation (like T5 in the real models), and the DiT is
pretrained from scratch by the `pretrain_base` rule.
"""

from __future__ import annotations

import functools
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from eisbach.atomic import atomic_path, share_mode, write_json
from eisbach.backends.base import Backend, named_base, relative_paths

SPECIAL_TOKENS = ["[PAD]", "[UNK]"]
_SAT_TRANSFORMER = "stable_audio_tools.models.transformer"


def import_stable_audio_tools() -> None:
    """Imports stable-audio-tools' model code with its import-time ``torch.compile`` deferred.

    ``stable_audio_tools.models.transformer`` compiles flex_attention when it is imported, and
    ``torch.compile`` imports torch's inductor to do so: about 1.5-2 s of CPU in every job
    (measured with the demo's fine-tune and sample jobs). The tiny backend never calls flex
    attention on CPU, so while that module is imported torch.compile returns a wrapper that
    compiles on its first call instead; later calls of torch.compile are untouched.
    """
    if _SAT_TRANSFORMER in sys.modules:
        return
    real = torch.compile

    def deferred(model=None, **kwargs):
        if model is None:
            return lambda fn: deferred(fn, **kwargs)
        compiled = None

        @functools.wraps(model)
        def call(*args, **kw):
            nonlocal compiled
            if compiled is None:
                compiled = real(model, **kwargs)
            return compiled(*args, **kw)

        return call

    torch.compile = deferred
    try:
        __import__(_SAT_TRANSFORMER)
    finally:
        torch.compile = real


# Linear layers of the stable-audio-tools ContinuousTransformer blocks that adapters target.
DIT_TARGET_MODULES = ["to_qkv", "to_out", "to_q", "to_kv", "ff.ff.0.proj", "ff.ff.2"]


class TinyBackend(Backend):
    id = "tiny"
    objective = "rectified_flow"
    peft_target_modules = DIT_TARGET_MODULES

    def __init__(self, config: dict, workdir):
        from importlib.metadata import version

        tiny = config["tiny"]
        self.config = config
        self.tiny = tiny
        self.version = f"stable-audio-tools=={version('stable-audio-tools')};logmel-v1"
        self.sample_rate = int(config["sample_rate"])
        self.latent_channels = int(tiny["n_mels"])
        self.hop = int(tiny["hop_length"])
        self.n_fft = int(tiny["n_fft"])
        self.latent_rate = self.sample_rate / self.hop
        if self.hop > self.n_fft // 2:
            raise ValueError(
                f"backend.tiny.hop_length={self.hop} must be at most n_fft/2={self.n_fft // 2}: "
                "Griffin-Lim needs overlapping windows"
            )
        if int(tiny["embed_dim"]) // int(tiny["num_heads"]) < 32:
            raise ValueError("backend.tiny: embed_dim / num_heads must be at least 32")
        self.latent_offset = float(tiny["latent_offset"])
        self.latent_scale = float(tiny["latent_scale"])
        self.text_dir = Path(workdir) / "text_encoder"
        self._mel = None
        self._text_encoder = None

    # --- audio <-> latents -------------------------------------------------------------------
    def _mel_transform(self):
        import torchaudio

        if self._mel is None:
            self._mel = torchaudio.transforms.MelSpectrogram(
                sample_rate=self.sample_rate,
                n_fft=self.n_fft,
                hop_length=self.hop,
                n_mels=self.latent_channels,
                power=1.0,
            )
        return self._mel

    def encode_audio(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        if sample_rate != self.sample_rate:
            raise ValueError(f"tiny backend expects {self.sample_rate} Hz audio, got {sample_rate}")
        mel = self._mel_transform()(torch.from_numpy(np.ascontiguousarray(audio, np.float32)))
        log_mel = torch.log(mel.clamp(min=1e-5))
        return ((log_mel - self.latent_offset) / self.latent_scale).numpy().astype(np.float32)

    def decode(self, latents: torch.Tensor) -> np.ndarray:
        import torchaudio

        mel = torch.exp(latents.float() * self.latent_scale + self.latent_offset)
        inverse_mel = torchaudio.transforms.InverseMelScale(
            n_stft=self.n_fft // 2 + 1, n_mels=self.latent_channels, sample_rate=self.sample_rate
        )
        griffin_lim = torchaudio.transforms.GriffinLim(
            n_fft=self.n_fft,
            hop_length=self.hop,
            power=1.0,
            n_iter=int(self.tiny["griffin_lim_iters"]),
            rand_init=False,
        )
        audio = griffin_lim(inverse_mel(mel))
        peak = audio.abs().amax(dim=-1, keepdim=True).clamp(min=1e-6)
        # Griffin-Lim loses absolute level; bring every clip to a common, unclipped peak.
        return (0.5 * audio / peak).numpy().astype(np.float32)

    # --- text ----------------------------------------------------------------------------------
    def build_text_encoder(self, captions: list[str]) -> None:
        """Writes the word-level tokenizer and the frozen LUT text encoder (once per data set)."""
        from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
        from transformers import PreTrainedTokenizerFast

        normalizer = normalizers.Lowercase()
        pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Whitespace(), pre_tokenizers.Punctuation()]
        )
        words = sorted(
            {
                word
                for caption in captions
                for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(caption))
            }
        )
        vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + words)}
        tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
        tokenizer.normalizer = normalizer
        tokenizer.pre_tokenizer = pre_tokenizer
        fast = PreTrainedTokenizerFast(
            tokenizer_object=tokenizer, pad_token="[PAD]", unk_token="[UNK]"
        )
        tmp_dir = self.text_dir.with_name(self.text_dir.name + ".tmp")
        shutil.rmtree(tmp_dir, ignore_errors=True)
        tmp_dir.mkdir(parents=True)
        fast.save_pretrained(tmp_dir)
        encoder = self._make_text_encoder(tmp_dir)
        save_file(encoder.state_dict(), tmp_dir / "text_encoder.safetensors")
        share_mode(tmp_dir / "text_encoder.safetensors")
        shutil.rmtree(self.text_dir, ignore_errors=True)
        tmp_dir.rename(self.text_dir)
        self._text_encoder = None

    def _conditioning_config(self, tokenizer_dir) -> dict:
        return {
            "configs": [
                {
                    "id": "prompt",
                    "type": "lut",
                    "config": {
                        "tokenizer_name": str(tokenizer_dir),
                        "max_length": int(self.tiny["max_text_tokens"]),
                    },
                }
            ],
            "cond_dim": int(self.tiny["cond_dim"]),
        }

    def _make_text_encoder(self, tokenizer_dir):
        import_stable_audio_tools()
        from stable_audio_tools.models.conditioners import (
            create_multi_conditioner_from_conditioning_config,
        )

        with torch.random.fork_rng():
            torch.manual_seed(int(self.tiny["text_seed"]))
            encoder = create_multi_conditioner_from_conditioning_config(
                self._conditioning_config(tokenizer_dir)
            )
        return encoder.eval().requires_grad_(False)

    def text_encoder(self):
        if self._text_encoder is None:
            weights = self.text_dir / "text_encoder.safetensors"
            if not weights.exists():
                raise FileNotFoundError(
                    f"{weights} is missing: the latents stage builds the tiny text encoder"
                )
            encoder = self._make_text_encoder(self.text_dir)
            encoder.load_state_dict(load_file(weights), strict=True)
            self._text_encoder = encoder
        return self._text_encoder

    @torch.no_grad()
    def encode_text(self, captions: list[str]) -> tuple[np.ndarray, np.ndarray]:
        embeddings, mask = self.text_encoder()([{"prompt": c} for c in captions], "cpu")["prompt"]
        return embeddings.numpy().astype(np.float32), mask.numpy().astype(bool)

    # --- the DiT --------------------------------------------------------------------------------
    def model_config(self) -> dict:
        """A stable-audio-tools diffusion_cond config (model_config.json of the base model)."""
        tiny = self.tiny
        return {
            "model_type": "diffusion_cond",
            "sample_rate": self.sample_rate,
            "sample_size": int(tiny["max_frames"]) * self.hop,
            "audio_channels": 1,
            "model": {
                "io_channels": self.latent_channels,
                "conditioning": self._conditioning_config(self.text_dir),
                "diffusion": {
                    "cross_attention_cond_ids": ["prompt"],
                    "type": "dit",
                    "diffusion_objective": self.objective,
                    "config": {
                        "io_channels": self.latent_channels,
                        "embed_dim": int(tiny["embed_dim"]),
                        "depth": int(tiny["depth"]),
                        "num_heads": int(tiny["num_heads"]),
                        "cond_token_dim": int(tiny["cond_dim"]),
                        "project_cond_tokens": True,
                        "transformer_type": "continuous_transformer",
                        # peft's DoRA divides by the weight norm: zero-initialised branches give 0/0.
                        "zero_init_branch_outputs": False,
                    },
                },
            },
        }

    def _new_wrapper(self, seed: int):
        import_stable_audio_tools()
        from stable_audio_tools.models.factory import create_model_from_config

        with torch.random.fork_rng():
            torch.manual_seed(seed)
            wrapper = create_model_from_config(self.model_config())
        wrapper.conditioner.load_state_dict(self.text_encoder().state_dict())
        return wrapper

    def new_dit(self, seed: int) -> torch.nn.Module:
        return self._new_wrapper(seed).model

    def save_dit(self, dit: torch.nn.Module, base_dir) -> None:
        wrapper = self._new_wrapper(0)
        wrapper.model.load_state_dict(dit.state_dict())
        base_dir = Path(base_dir)
        with atomic_path(base_dir / "model.safetensors") as tmp:
            save_file({k: v.contiguous() for k, v in wrapper.state_dict().items()}, tmp)
        write_json(base_dir / "model_config.json", relative_paths(self.model_config(), base_dir))

    def load_dit(self, base_dir) -> torch.nn.Module:
        base_dir = Path(base_dir)
        config = json.loads((base_dir / "model_config.json").read_text())
        expected = json.loads(json.dumps(self.model_config()))
        # The tokenizer path depends on the working directory; the architecture must not differ.
        for c in (config, expected):
            c["model"].pop("conditioning", None)
        if config != expected:
            raise ValueError(
                f"{base_dir / 'model_config.json'} does not match backend.tiny in the config; "
                "rerun the pretrain_base rule"
            )
        wrapper = self._new_wrapper(0)
        wrapper.load_state_dict(load_file(base_dir / "model.safetensors"), strict=True)
        return named_base(wrapper.model, base_dir)

    def sample_timesteps(self, n: int, generator: torch.Generator) -> torch.Tensor:
        # Logit-normal, as stable-audio-tools samples rectified-flow training times.
        return torch.sigmoid(torch.randn(n, generator=generator))
