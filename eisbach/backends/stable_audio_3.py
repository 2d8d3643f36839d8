"""The `stable-audio-3` backend: Stable Audio 3 through the ``stable_audio_3`` package.

The package is not on PyPI and cannot be co-resolved with this stack (it declares numpy >= 2.2.6,
torch 2.7.1 and packaging >= 26); installed with ``--no-deps`` it runs next to
stable-audio-tools 0.0.19. The pinned commit is ``SA3_COMMIT``.

``backend.pretrained`` is one of the package's model names (``medium-base``, ``medium``,
``small-music-base``, ...), a hub id, or a local folder with model_config.json and
model.safetensors. Every form ends in the same loader: ``create_diffusion_cond_from_config``,
the package's own key remapping, then a load that names every missing, unexpected or
mis-shaped key (the package's ``copy_state_dict`` skips those silently).
``StableAudioModel`` is never constructed, so TF32 stays as it is; the package's import-time
change to ``torch._dynamo.config`` (suppress_errors, cache_size_limit) is undone.

- Audio: SAME (Stable Audio 3's autoencoder): stereo 44.1 kHz, 4096x down, [256, T] at
  ~10.77 latents/s for SAME-L. Clips of equal length are encoded in batches.
- Text: T5Gemma (google/t5gemma-b-b-ul2, 768-dim). ``encode_text`` stores its last hidden
  state; the conditioner's projection (``proj_out``) and padding run inside ``ConditionedDiT``,
  because Stable Audio 3's adapters train that projection too.
  ``backend.stable_audio_3.text_encoder`` overrides where T5Gemma is loaded from.
- DiT: ``forward(x, t, cross_attn_cond, ..., padding_mask, ...)``, t in [0, 1] (1 = noise),
  predicting the velocity noise - x0. Timesteps: Stable Audio 3 LoRA's ``trunc_logit_normal``
  flipped (t = 1 - u), or another of the package's samplers named by
  ``backend.stable_audio_3.timestep_sampler`` (never the model config's
  ``training.timestep_sampler``, its pretraining: recorded, not used); then the model's
  training distribution shift, if any. Sampling: Euler on the model's sampling schedule (its
  ``sampling_dist_shift``) with the project's steps and cfg (the package defaults to 8 steps,
  cfg 1 and pingpong).
"""

from __future__ import annotations

import contextlib
import copy
import os
import sys
from collections import defaultdict

import numpy as np
import torch

from eisbach.backends.base import ConditionedDiT, PretrainedFiles, audio_tensor, resolve_pretrained
from eisbach.backends.stable_audio_tools import StableAudioToolsBackend, seeded

SA3_COMMIT = "636f906fc0ee54b3f06edf974dc7d3aa99d6841b"
GENERATION_HEADROOM_S = 6.0  # StableAudioModel.generate(duration_padding_sec=6.0)
SA3_REPOSITORY = "https://github.com/Stability-AI/stable-audio-3"
INSTALL_HINT = (
    "install it without its dependencies (its declared numpy/torch/packaging pins conflict "
    "with this environment; it runs with the installed ones): "
    f"pip install --no-deps 'stable-audio-3 @ git+{SA3_REPOSITORY}@{SA3_COMMIT}' "
    "(or pip install --no-deps a wheel built from that commit)"
)


@contextlib.contextmanager
def preserved_dynamo_config():
    """Undoes what importing a Stable Audio package sets in torch._dynamo.config."""
    import torch._dynamo

    keys = ("suppress_errors", "cache_size_limit")
    saved = {k: getattr(torch._dynamo.config, k) for k in keys}
    try:
        yield
    finally:
        for k, v in saved.items():
            setattr(torch._dynamo.config, k, v)


def import_stable_audio_3():
    """The stable_audio_3 modules this backend uses, or an ImportError that says how to
    install the pinned commit."""
    with preserved_dynamo_config():
        try:
            import stable_audio_3.factory
            import stable_audio_3.loading_utils
            import stable_audio_3.model_configs
            import stable_audio_3.models.diffusion  # noqa: F401 (used by conditioned_dit)
        except ImportError as err:
            raise ImportError(
                f"backend.name: stable-audio-3 needs the stable_audio_3 package "
                f"(Stability-AI/stable-audio-3 at commit {SA3_COMMIT}), which does not import "
                f"here ({err}); {INSTALL_HINT}"
            ) from err
    return sys.modules["stable_audio_3"]


class StableAudio3Backend(StableAudioToolsBackend):
    id = "stable-audio-3"
    package = "stable-audio-3"
    options_key = "stable_audio_3"

    def __init__(self, config: dict, workdir=None):
        self.sa3 = import_stable_audio_3()
        super().__init__(config, workdir)
        if self.objective != "rectified_flow":
            raise ValueError(
                f"{self._where()}: objective {self.model_objective!r}; Stable Audio 3 trains "
                "rectified_flow or rf_denoiser"
            )

    def resolve(self, pretrained: str, weights: bool = True) -> PretrainedFiles:
        from stable_audio_3.model_configs import models

        aliases = {name: (m.repo_id, m.config_path, m.ckpt_path) for name, m in models.items()}
        return resolve_pretrained(pretrained, aliases, weights=weights)

    def text_types(self) -> tuple[str, ...]:
        return ("t5gemma",)

    def check_architecture(self, model: dict, where: str) -> None:
        # the package builds a DiT and a SAME autoencoder whatever the type keys say
        if "config" not in (model.get("pretransform") or {}):
            raise ValueError(f"{where}: the model has no pretransform (SAME autoencoder) config")

    def _read_model_config(self, cfg: dict) -> None:
        super()._read_model_config(cfg)
        diffusion = cfg["model"]["diffusion"]
        self.cond_ids["modular_local_cond_ids"] = [
            c["id"] for c in diffusion.get("modular_local_cond_configs", [])
        ]

    def _choose_timestep_sampler(self, training: dict) -> None:
        """Stable Audio 3 LoRA's own sampler (train_lora.py: trunc_logit_normal), unless
        ``backend.stable_audio_3.timestep_sampler`` names another of the package's. The model
        config's ``training.timestep_sampler`` is how the model was pretrained; it is recorded
        (``model_timestep_sampler``) and never replaces the fine-tuning sampler unasked."""
        from eisbach.objectives import SA3_SAMPLERS

        self.model_timestep_sampler = training.get("timestep_sampler")
        name = self.options.get("timestep_sampler") or "trunc_logit_normal"
        if name not in SA3_SAMPLERS:
            raise ValueError(
                f"backend.stable_audio_3.timestep_sampler: {name!r} is not one of Stable Audio "
                f"3's samplers ({', '.join(SA3_SAMPLERS)})"
            )
        self.timestep_sampler = name
        self.timestep_sampler_options = dict(self.options.get("timestep_sampler_options") or {})
        self.sample_timesteps(1, torch.Generator())  # bad options fail here
        if self.model_timestep_sampler not in (None, name):
            print(
                f"stable-audio-3: fine-tuning with {name!r}; the model config's "
                f"training.timestep_sampler {self.model_timestep_sampler!r} (its pretraining) is "
                "not used (set backend.stable_audio_3.timestep_sampler to use it)",
                file=sys.stderr,
            )

    def sample_timesteps(self, n: int, generator: torch.Generator) -> torch.Tensor:
        from eisbach.objectives import SA3_SAMPLERS, sample_timesteps

        name = SA3_SAMPLERS[self.timestep_sampler]
        return sample_timesteps(name, n, generator, **self.timestep_sampler_options)

    def describe(self) -> dict:
        return super().describe() | {"model_timestep_sampler": self.model_timestep_sampler}

    # --- loading ------------------------------------------------------------------------------------
    def build_model(self, cfg: dict) -> torch.nn.Module:
        from stable_audio_3.factory import create_diffusion_cond_from_config

        cfg = copy.deepcopy(cfg)
        override = self.options.get("text_encoder")
        for conditioner in cfg["model"].get("conditioning", {}).get("configs", []):
            if conditioner["type"] == "t5gemma" and override:
                # the folder (or hub id) that holds T5Gemma itself, as model_path takes it
                conditioner["config"]["model_path"] = os.path.expanduser(override)
                conditioner["config"].pop("subfolder", None)
        with preserved_dynamo_config():
            return create_diffusion_cond_from_config(cfg)

    def remap_keys(self, state: dict, model: torch.nn.Module) -> dict:
        from stable_audio_3.loading_utils import remap_state_dict_keys

        return remap_state_dict_keys(state, model.state_dict())

    def conditioned_dit(self, wrapper) -> ConditionedDiT:
        from stable_audio_3.models.diffusion import ConditionedDiffusionModelWrapper

        conditioners = wrapper.conditioner.conditioners
        return ConditionedDiT(
            wrapper.model,
            {i: conditioners[i] for i in [*self.number_ids, self.text_id]},
            self.text_id,
            self.cond_ids,
            ConditionedDiffusionModelWrapper.get_conditioning_inputs,
            self.latent_rate,
            text_head=self.text_id,
            pass_padding_mask=bool(getattr(wrapper, "mask_padding_attention", False)),
        )

    def adapter_targets(self, dit: torch.nn.Module) -> list[str]:
        """Every Linear and Conv1d of the DiT and of the conditioners it runs, as Stable Audio
        3's LoRA trainer selects them (by type, on the DiT and the conditioner): attention,
        feed-forward, the embedders, project_in/out, the pre/postprocess convs, the number
        embedders, and the text conditioner's ``proj_out`` where it is a Linear (at Medium's
        shape it is an Identity: T5Gemma's width equals cond_dim)."""
        from eisbach.adapters import adaptable_modules

        return adaptable_modules(dit)

    # --- audio <-> latents ------------------------------------------------------------------------
    @torch.no_grad()
    def encode_audio_batch(
        self, audios: list[np.ndarray], sample_rate: int, batch_size: int = 8
    ) -> list[np.ndarray]:
        """SAME latents; clips of equal length share a batch (so batching never pads)."""
        self._check_rate(sample_rate)
        pretransform = self.model().pretransform
        clips = [audio_tensor(a, self.audio_channels) for a in audios]
        by_length: dict[int, list[int]] = defaultdict(list)
        for i, clip in enumerate(clips):
            by_length[clip.shape[-1]].append(i)
        out: list[np.ndarray | None] = [None] * len(clips)
        for n, indices in by_length.items():
            frames = self.n_frames(n)
            pad = frames * self.downsampling_ratio - n
            for start in range(0, len(indices), batch_size):
                chunk = indices[start : start + batch_size]
                x = torch.stack([clips[i] for i in chunk])
                x = torch.nn.functional.pad(x, (0, pad)).to(self.device)
                with seeded(0):
                    z = pretransform.encode(x)
                for i, latent in zip(chunk, z[:, :, :frames].float().cpu(), strict=True):
                    out[i] = latent.numpy()
        return out

    def encode_audio(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        return self.encode_audio_batch([audio], sample_rate)[0]

    @torch.no_grad()
    def decode_audio(self, latents: torch.Tensor) -> np.ndarray:
        """SAME's decode in ``inference_dtype``, as the package decodes its half model."""
        pretransform = self.model().pretransform
        dtype = self.inference_dtype()
        pretransform.to(dtype)
        try:
            with seeded(0):
                audio = pretransform.decode(latents.to(self.device, dtype))
        finally:
            pretransform.to(torch.float32)
        audio = audio.float().clamp(-1, 1).cpu().numpy()
        return audio[..., : latents.shape[-1] * self.downsampling_ratio]

    # --- text ---------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_text(self, captions: list[str], batch_size: int = 64):
        """T5Gemma's last hidden state [N, L, 768] and the token mask; ConditionedDiT projects it."""
        conditioner = self.model().conditioner.conditioners[self.text_id]
        encoder = conditioner.model.to(self.device).eval()
        embeddings, masks = [], []
        for i in range(0, len(captions), batch_size):
            tokens = conditioner.tokenizer(
                list(captions[i : i + batch_size]),
                truncation=True,
                max_length=conditioner.max_length,
                padding="max_length",
                return_tensors="pt",
            )
            mask = tokens["attention_mask"].to(self.device).bool()
            hidden = encoder(input_ids=tokens["input_ids"].to(self.device), attention_mask=mask)
            embeddings.append(hidden["last_hidden_state"].float().cpu())
            masks.append(mask.cpu())
        return torch.cat(embeddings).numpy(), torch.cat(masks).numpy()

    # --- training and sampling -------------------------------------------------------------------------
    def shift_timesteps(self, t: torch.Tensor, n_frames: torch.Tensor) -> torch.Tensor:
        wrapper = self.model()
        if wrapper.dist_shift is None:
            return t
        n_frames = torch.as_tensor(n_frames)
        if not wrapper.use_effective_length_for_schedule:
            n_frames = int(n_frames.max())  # the padded length, as the package trains
        return wrapper.dist_shift.shift(t, n_frames)

    def generation_frames(self, n_frames: int) -> tuple[int, int]:
        """As the package's generate(): the length of the duration plus 6 s of headroom,
        rounded up to the autoencoder's chunk alignment; the padding mask keeps the duration
        plus the headroom (model.py _adapt_sample_size, inference/sampling.py)."""
        seconds = n_frames / self.latent_rate
        samples = int((seconds + GENERATION_HEADROOM_S) * self.sample_rate)
        ratio = self.downsampling_ratio
        samples = -(-samples // ratio) * ratio
        encoder = self.model_config["model"]["pretransform"]["config"]["encoder"]["config"]
        align = ratio * (int(encoder.get("chunk_size", 32)) // int(encoder["strides"][0]))
        total = -(-samples // align) * align // ratio
        headroom = int(GENERATION_HEADROOM_S * self.sample_rate / ratio)
        return total, min(n_frames + headroom, total)

    def inference_dtype(self) -> torch.dtype:
        name = self.options.get("inference_dtype", "auto")
        if name == "auto":
            return torch.float16 if self.device.type == "cuda" else torch.float32
        return getattr(torch, name)

    @torch.no_grad()
    def sample(self, dit, noise, cond, cond_mask, steps: int, cfg_scale: float, **kwargs):
        """The base sampler with the DiT in ``inference_dtype`` (half on CUDA by default, as
        the package generates); the latents come back in float32."""
        dit.to(self.inference_dtype())
        out = super().sample(dit, noise, cond, cond_mask, steps, cfg_scale, **kwargs)
        return out.float()

    def sampling_schedule(self, steps: int, n_frames: int) -> torch.Tensor:
        ts = torch.linspace(1.0, 0.0, steps + 1)
        shift = self.model().sampling_dist_shift
        if shift is not None:
            ts = shift.shift(ts, max(int(n_frames), 1))
            ts[0] = 1.0
        return ts
