"""The `stable-audio-tools` backend: a pretrained stable-audio-tools ``diffusion_cond`` model.

``backend.pretrained`` is a hub id (e.g. stabilityai/stable-audio-open-1.0; the token comes
from ``HF_TOKEN``) or a local folder with model_config.json and model.safetensors. Both go
through one loader: the hub files are fetched into the Hugging Face cache, then the model is
built with ``create_model_from_config`` (as ``get_pretrained_model`` does) and its weights are
loaded with every key checked.

- Audio: the model's own autoencoder (e.g. the VAE of Stable Audio Open, stereo 44.1 kHz,
  2048x down to 64 channels at ~21.5 latents/s). The VAE draws its latent from the encoder's
  mean and scale; the draw is seeded by the clip's content, so the latents are reproducible.
- Text: the model's own text conditioner (T5 for Stable Audio Open, whose weights
  transformers fetches or finds in the hub cache), output as the DiT takes it.
- DiT: ``ConditionedDiT`` around the model's DiT and its timing conditioners
  (seconds_start = 0, seconds_total = the valid frames / latent rate unless given).
- Objective: the model's (``diffusion_objective``, "v" for Stable Audio Open); timesteps: the
  ``training.timestep_sampler`` of its config (default "uniform"), or
  ``backend.stable_audio_tools.timestep_sampler``.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch

from eisbach.atomic import atomic_path, write_json
from eisbach.backends.base import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    Backend,
    ConditionedDiT,
    PretrainedFiles,
    audio_tensor,
    content_seed,
    draw_timesteps,
    link_pretrained,
    load_checked,
    load_safetensors,
    named_base,
    pick_device,
    read_config,
    relative_paths,
    resolve_pretrained,
)

# Linear layers of the stable-audio-tools ContinuousTransformer blocks that adapters target.
DIT_TARGET_MODULES = ["to_qkv", "to_out", "to_q", "to_kv", "ff.ff.0.proj", "ff.ff.2"]
TEXT_TYPES = ("t5", "clap_text", "lut", "phoneme")
NUMBER_TYPES = ("number",)


@contextlib.contextmanager
def seeded(seed: int):
    """Draws inside come from ``seed`` and leave the global random state untouched."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def snapshot_tag(files: PretrainedFiles) -> str:
    """The hub commit of a cached file, or the first 12 hex of the local config's sha256."""
    if files.hub_repo is not None and Path(files.config).parent.parent.name == "snapshots":
        return Path(files.config).parent.name[:12]
    return hashlib.sha256(Path(files.config).read_bytes()).hexdigest()[:12]


class StableAudioToolsBackend(Backend):
    id = "stable-audio-tools"
    peft_target_modules = DIT_TARGET_MODULES
    has_pretrained_base = True
    package = "stable-audio-tools"
    options_key = "stable_audio_tools"

    def __init__(self, config: dict, workdir=None):
        self.config = config
        self.options = dict(config.get(self.options_key) or {})
        self.pretrained = config.get("pretrained") or ""
        self.device = pick_device(config.get("device"))
        self.copy_base = bool(config.get("copy_base", False))
        self.workdir = workdir
        self.files = self.resolve(self.pretrained, weights=False)  # the weights on first use
        self.model_config = read_config(self.files.config)
        self._read_model_config(self.model_config)
        self.version = (
            f"{self.package}=={version(self.package)};{self.pretrained}@{snapshot_tag(self.files)}"
        )
        self._wrappers: dict[tuple[str, str], torch.nn.Module] = {}
        # the last load: its weights file and the unexpected keys skipped (run.json records it)
        self.load_report: dict = {}
        self._reports: dict[tuple[str, str], dict] = {}
        self._handed_out: set[int] = set()

    # --- config ---------------------------------------------------------------------------------
    def resolve(self, pretrained: str, weights: bool = True) -> PretrainedFiles:
        return resolve_pretrained(pretrained, weights=weights)

    def pretrained_files(self) -> PretrainedFiles:
        """The config and weights of backend.pretrained, fetching the weights if needed."""
        if self.files.weights is None:
            self.files = self.resolve(self.pretrained)
        return self.files

    def _where(self) -> str:
        return f"backend.pretrained={self.pretrained!r} ({self.files.config})"

    def _read_model_config(self, cfg: dict) -> None:
        where = self._where()
        if cfg.get("model_type") not in ("diffusion_cond", "diffusion_cond_inpaint"):
            raise ValueError(f"{where}: model_type {cfg.get('model_type')!r} is not diffusion_cond")
        model = cfg["model"]
        diffusion = model["diffusion"]
        self.check_architecture(model, where)
        pretransform = model["pretransform"]
        self.sample_rate = int(cfg["sample_rate"])
        if int(self.config.get("sample_rate", self.sample_rate)) != self.sample_rate:
            raise ValueError(
                f"backend.sample_rate={self.config['sample_rate']} but {where} runs at "
                f"{self.sample_rate} Hz; set backend.sample_rate to {self.sample_rate}"
            )
        ae = pretransform["config"]
        self.audio_channels = int(ae.get("io_channels", cfg.get("audio_channels", 2)))
        self.downsampling_ratio = int(ae["downsampling_ratio"])
        self.latent_channels = int(model["io_channels"])
        self.latent_rate = self.sample_rate / self.downsampling_ratio
        self.latent_scale = float(pretransform.get("scale", 1.0))
        self.model_objective = diffusion.get("diffusion_objective", "v")
        # rf_denoiser trains on the same target (noise - x0) and its output is the velocity
        self.objective = {"rf_denoiser": "rectified_flow"}.get(
            self.model_objective, self.model_objective
        )
        if self.objective not in ("rectified_flow", "v"):
            raise ValueError(
                f"{where}: objective {self.model_objective!r} is not supported "
                "(v, rectified_flow, rf_denoiser)"
            )
        self._choose_timestep_sampler(cfg.get("training") or {})
        self.cond_types = {
            c["id"]: c["type"] for c in model.get("conditioning", {}).get("configs", [])
        }
        self.cond_ids = {
            "cross_attn_cond_ids": diffusion.get("cross_attention_cond_ids", []),
            "global_cond_ids": diffusion.get("global_cond_ids", []),
            "input_concat_ids": diffusion.get("input_concat_ids", []),
            "prepend_cond_ids": diffusion.get("prepend_cond_ids", []),
            "local_add_cond_ids": diffusion.get("local_add_cond_ids", []),
        }
        used = [i for ids in self.cond_ids.values() for i in ids]
        text_ids = sorted({i for i in used if self.cond_types.get(i) in self.text_types()})
        if len(text_ids) != 1:
            raise ValueError(f"{where}: expected one text conditioner among {used}, got {text_ids}")
        self.text_id = text_ids[0]
        self.number_ids = sorted({i for i in used if self.cond_types.get(i) in NUMBER_TYPES})

    def _choose_timestep_sampler(self, training: dict) -> None:
        self.timestep_sampler = self.options.get("timestep_sampler") or training.get(
            "timestep_sampler", "uniform"
        )
        draw_timesteps(self.timestep_sampler, 0, torch.Generator())  # an unknown name fails here

    def text_types(self) -> tuple[str, ...]:
        return TEXT_TYPES

    def check_architecture(self, model: dict, where: str) -> None:
        if model["diffusion"].get("type") != "dit":
            raise ValueError(
                f"{where}: diffusion type {model['diffusion'].get('type')!r} is not dit"
            )
        pretransform = model.get("pretransform")
        if not pretransform or pretransform.get("type") != "autoencoder":
            raise ValueError(f"{where}: the model has no autoencoder pretransform")

    def describe(self) -> dict:
        return super().describe() | {
            "audio_channels": self.audio_channels,
            "pretrained": self.pretrained,
            "model_objective": self.model_objective,
            "timestep_sampler": self.timestep_sampler,
        }

    # --- loading --------------------------------------------------------------------------------
    def build_model(self, cfg: dict) -> torch.nn.Module:
        from stable_audio_tools.models.factory import create_model_from_config

        return create_model_from_config(cfg)

    def remap_keys(self, state: dict, model: torch.nn.Module) -> dict:
        return state

    def _wrapper(self, files: PretrainedFiles, cached: bool = True) -> torch.nn.Module:
        """The whole pretrained model (autoencoder, conditioners, DiT), every key checked."""
        key = (str(Path(files.config).resolve()), str(Path(files.weights).resolve()))
        if cached and key in self._wrappers:
            self.load_report = self._reports[key]
            return self._wrappers[key]
        cfg = read_config(files.config)
        with torch.random.fork_rng():  # building draws random initial weights
            torch.manual_seed(0)
            try:
                wrapper = self.build_model(cfg)
            except OSError as err:
                raise RuntimeError(
                    f"backend.pretrained={files.source!r}: building the model's conditioners "
                    f"failed ({err}); their weights (e.g. T5) come from the hub or its cache"
                ) from err
        state = load_safetensors(files.weights)
        state = self.remap_keys(state, wrapper)
        unexpected = load_checked(wrapper, state, f"{files.weights}")
        self.load_report = self._reports[key] = {
            "weights": str(files.weights),
            "unexpected_keys": unexpected,
        }
        wrapper.to(self.device).eval().requires_grad_(False)
        if cached:
            self._wrappers[key] = wrapper
        return wrapper

    def model(self) -> torch.nn.Module:
        return self._wrapper(self.pretrained_files())

    def conditioned_dit(self, wrapper) -> ConditionedDiT:
        from stable_audio_tools.models.diffusion import ConditionedDiffusionModelWrapper

        conditioners = wrapper.conditioner.conditioners
        return ConditionedDiT(
            wrapper.model,
            {i: conditioners[i] for i in self.number_ids},
            self.text_id,
            self.cond_ids,
            ConditionedDiffusionModelWrapper.get_conditioning_inputs,
            self.latent_rate,
        )

    def new_dit(self, seed: int) -> torch.nn.Module:
        raise NotImplementedError(
            f"backend {self.id!r} fine-tunes the pretrained DiT of backend.pretrained; "
            "use load_dit on the base folder"
        )

    def load_dit(self, base_dir) -> torch.nn.Module:
        """The DiT of base_dir (prepare_base's links to the pretrained files, or save_dit's
        output) with its timing conditioners, on ``backend.device``."""
        base_dir = Path(base_dir)
        files = PretrainedFiles(base_dir / CONFIG_NAME, base_dir / WEIGHTS_NAME, str(base_dir))
        if not (files.config.is_file() and files.weights.is_file()):
            raise FileNotFoundError(
                f"{base_dir} lacks {CONFIG_NAME} or {WEIGHTS_NAME}: prepare the base first "
                "(the base rule links backend.pretrained there)"
            )
        if read_config(files.config) != self.model_config:
            raise ValueError(
                f"{files.config} differs from the model_config.json of {self._where()}: "
                "rerun the base rule"
            )
        wrapper = self._wrapper(files)
        if id(wrapper) in self._handed_out:  # adapters may have been injected into that one
            wrapper = self._wrapper(files, cached=False)
        self._handed_out.add(id(wrapper))
        return named_base(self.conditioned_dit(wrapper), base_dir)

    def save_dit(self, dit: torch.nn.Module, base_dir) -> None:
        """The whole model with ``dit``'s weights (DiT and timing conditioners), loadable by
        load_dit and by the library itself."""
        from safetensors.torch import save_file

        state = load_safetensors(self.pretrained_files().weights)
        state = self.remap_keys(state, self.model())
        for name, value in dit.state_dict().items():
            prefix, _, rest = name.partition(".")
            key = f"model.{rest}" if prefix == "model" else f"conditioner.conditioners.{rest}"
            if key not in state:
                raise KeyError(f"save_dit: {name} has no place in the model ({key})")
            state[key] = value.detach().cpu().contiguous().clone()
        base_dir = Path(base_dir)
        with atomic_path(base_dir / WEIGHTS_NAME) as tmp:
            save_file(state, str(tmp))
        write_json(base_dir / CONFIG_NAME, relative_paths(self.model_config, base_dir))

    def prepare_base(self, base_dir) -> dict:
        """Loads the pretrained model (every key checked), links its two files into base_dir
        (copies with backend.copy_base) and writes base.json with their sha256."""
        wrapper = self.model()
        record = link_pretrained(self.pretrained_files(), base_dir, copy=self.copy_base)
        record |= {
            "backend": self.id,
            "backend_version": self.version,
            "dit_parameters": sum(p.numel() for p in wrapper.model.parameters()),
            "tensors_checked": len(wrapper.state_dict()),
            # keys of the checkpoint the model has no place for: reported and skipped, as
            # the package's own loader does (missing or mis-shaped keys fail instead)
            "unexpected_keys": self.load_report["unexpected_keys"],
        }
        write_json(Path(base_dir) / "base.json", record)
        return record

    # --- audio <-> latents ------------------------------------------------------------------------
    def _check_rate(self, sample_rate: int) -> None:
        if int(sample_rate) != self.sample_rate:
            raise ValueError(
                f"{self.id} backend expects {self.sample_rate} Hz audio, got {sample_rate}"
            )

    def n_frames(self, n_samples: int) -> int:
        return math.ceil(n_samples / self.downsampling_ratio)

    @torch.no_grad()
    def encode_audio(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        self._check_rate(sample_rate)
        pretransform = self.model().pretransform
        x = audio_tensor(audio, self.audio_channels)
        frames = self.n_frames(x.shape[-1])
        x = torch.nn.functional.pad(x, (0, frames * self.downsampling_ratio - x.shape[-1]))
        x = x[None].to(self.device)
        with seeded(content_seed(x)):  # the VAE's draw, reproducible per clip
            z = pretransform.encode(x)
        return z[0, :, :frames].float().cpu().numpy()

    @torch.no_grad()
    def decode_audio(self, latents: torch.Tensor) -> np.ndarray:
        """Latents [B, C, T] -> audio [B, audio_channels, T * downsampling] in [-1, 1]."""
        pretransform = self.model().pretransform
        with seeded(0):
            audio = pretransform.decode(latents.to(self.device, torch.float32))
        return audio.float().clamp(-1, 1).cpu().numpy()

    def decode(self, latents: torch.Tensor) -> np.ndarray:
        return self.decode_audio(latents).mean(axis=1).astype(np.float32)

    # --- text -----------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_text(self, captions: list[str], batch_size: int = 64):
        conditioner = self.model().conditioner.conditioners[self.text_id]
        embeddings, masks = [], []
        for i in range(0, len(captions), batch_size):
            emb, mask = conditioner(list(captions[i : i + batch_size]), self.device)
            embeddings.append(emb.float().cpu())
            masks.append(mask.bool().cpu())
        return torch.cat(embeddings).numpy(), torch.cat(masks).numpy()

    # --- training and sampling ----------------------------------------------------------------------
    def sample_timesteps(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return draw_timesteps(self.timestep_sampler, n, generator)

    def shift_timesteps(self, t: torch.Tensor, n_frames: torch.Tensor) -> torch.Tensor:
        shift = getattr(self.model(), "dist_shift", None)
        if shift is None:
            return t
        # as the library trains: one shift for the batch's (padded) length
        return shift.time_shift(t, int(torch.as_tensor(n_frames).max()))

    def sampling_schedule(self, steps: int, n_frames: int) -> torch.Tensor:
        ts = super().sampling_schedule(steps, n_frames)
        shift = getattr(self.model(), "dist_shift", None)
        if shift is None or self.objective != "rectified_flow":
            return ts
        return shift.time_shift(ts, n_frames)

    def dit_forward(
        self,
        dit,
        x,
        t,
        cond,
        cond_mask,
        cfg_scale=1.0,
        cfg_dropout_prob=0.0,
        mask=None,
        seconds_start=None,
        seconds_total=None,
    ):
        return dit(
            x,
            t,
            cross_attn_cond=cond,
            cross_attn_mask=cond_mask,
            seconds_start=seconds_start,
            seconds_total=seconds_total,
            padding_mask=mask,
            cfg_scale=cfg_scale,
            cfg_dropout_prob=cfg_dropout_prob,
        )
