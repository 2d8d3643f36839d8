"""The interface every backend implements. Stages use only this, never a backend's internals.

A backend exposes:

- audio -> latents (``encode_audio``, ``encode_audio_batch``) and latents -> audio (``decode``);
- captions -> text conditioning (``encode_text``), stored once per caption by the latents stage;
- the DiT module (``new_dit`` / ``load_dit`` / ``save_dit``) and the modules of a DiT that
  peft adapters target (``adapter_targets``: full names, resolved against the DiT itself);
- the objective (``objective``, ``noisy_input``) and its training-timestep sampler
  (``sample_timesteps``, then ``shift_timesteps``);
- one DiT evaluation (``dit_forward``) and a sampler (``sample``);
- ``sample_rate``, ``audio_channels``, ``latent_channels`` and ``latent_rate`` (frames/s).

Pretrained backends (``has_pretrained_base``) also put their pretrained checkpoint into the
base folder with ``prepare_base`` instead of pretraining a DiT.

The helpers below the class are shared by the two Stable Audio backends: resolving
``backend.pretrained`` (hub id or local folder), loading safetensors with every key checked,
and ``ConditionedDiT``, the module adapters train.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from eisbach import objectives
from eisbach.provenance import file_sha256


class Backend(ABC):
    id: str
    version: str
    sample_rate: int
    latent_channels: int
    latent_rate: float  # latent frames per second
    latent_scale: float
    objective: str  # "rectified_flow" or "v"
    peft_target_modules: list[str]
    audio_channels: int = 1  # channels the model encodes and decodes (1 mono, 2 stereo)
    # name of the training-timestep sampler (uniform, logit_normal, trunc_logit_normal) that
    # sample_timesteps draws from; None: only the method says
    timestep_sampler: str | None = None
    has_pretrained_base: bool = False  # True: the base is a pretrained checkpoint (prepare_base)

    @abstractmethod
    def encode_audio(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        """Float audio, mono [n] or [channels, n] -> latent [C, T] float32."""

    def encode_audio_batch(self, audios: list[np.ndarray], sample_rate: int) -> list[np.ndarray]:
        """Several clips -> one latent [C, T_i] each; the same latents as ``encode_audio``."""
        return [self.encode_audio(a, sample_rate) for a in audios]

    @abstractmethod
    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """Latents [B, C, T] -> audio [B, n] float32 at ``sample_rate`` (mono)."""

    @abstractmethod
    def encode_text(self, captions: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Captions -> (embeddings [N, L, D] float32, mask [N, L] bool), as ``dit_forward`` takes them."""

    @abstractmethod
    def new_dit(self, seed: int) -> torch.nn.Module:
        """A freshly initialised diffusion transformer."""

    @abstractmethod
    def load_dit(self, base_dir) -> torch.nn.Module:
        """The pretrained diffusion transformer stored in base_dir."""

    @abstractmethod
    def save_dit(self, dit: torch.nn.Module, base_dir) -> None:
        """Stores a trained diffusion transformer so that ``load_dit`` gives it back."""

    def adapter_targets(self, dit: torch.nn.Module) -> list[str]:
        """Full names of the Linear/Conv1d modules of dit that adapters train: by default those
        that ``peft_target_modules`` reach; a name that reaches another kind of module fails."""
        from eisbach.adapters import resolve_targets

        return resolve_targets(dit, self.peft_target_modules, f"backend {self.id}")

    @abstractmethod
    def sample_timesteps(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """Training timesteps [n] in [0, 1], 1 = pure noise."""

    def shift_timesteps(self, t: torch.Tensor, n_frames: torch.Tensor) -> torch.Tensor:
        """The model's length-dependent shift of training timesteps (none by default).

        n_frames [B]: valid latent frames of each sample. Call after ``sample_timesteps``.
        """
        return t

    def prepare_base(self, base_dir) -> dict:
        """Pretrained backends: verify the pretrained checkpoint and link it into base_dir."""
        raise NotImplementedError(
            f"backend {self.id!r} has no pretrained checkpoint; its base is pretrained by "
            "the pretrain_base rule"
        )

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
        """The DiT output (velocity for rectified flow, v for v) [B, C, T].

        mask [B, T] (True = valid latent frame) and the seconds [B] are used by backends whose
        DiT takes them (padding masks, timing conditioners); the defaults derive them from x.
        """
        return dit(
            x,
            t,
            cross_attn_cond=cond,
            cross_attn_mask=cond_mask,
            cfg_scale=cfg_scale,
            cfg_dropout_prob=cfg_dropout_prob,
        )

    def noisy_input(self, x0, noise, t):
        """(x_t, target) for the backend's objective."""
        return objectives.noisy_input(self.objective, x0, noise, t)

    def sampling_schedule(self, steps: int, n_frames: int) -> torch.Tensor:
        """steps + 1 times from 1 (noise) down to 0 (data)."""
        return torch.linspace(1.0, 0.0, steps + 1)

    def generation_frames(self, n_frames: int) -> tuple[int, int]:
        """(latent frames to generate, frames the padding mask keeps valid) for samples of
        n_frames; the sample stage keeps the first n_frames. Default: exactly n_frames."""
        return n_frames, n_frames

    @torch.no_grad()
    def sample(
        self,
        dit,
        noise,
        cond,
        cond_mask,
        steps: int,
        cfg_scale: float,
        mask=None,
        seconds_total=None,
        schedule_frames: int | None = None,
    ) -> torch.Tensor:
        """Deterministic integration from t=1 (noise) to t=0 over ``sampling_schedule``.

        Rectified flow: Euler steps on the velocity. v: DDIM steps (x0 and noise estimated
        from v on the cosine schedule). ``mask`` [B, T]: the padding mask; ``seconds_total``:
        the timing condition (default from the mask); ``schedule_frames``: the length the
        schedule's shift is computed for (default T). Returns the latents [B, C, T] on the CPU.
        """
        if self.objective not in ("rectified_flow", "v"):
            raise NotImplementedError(f"no sampler for objective {self.objective!r}")
        device = next(dit.parameters()).device
        x = noise.to(device)
        cond, cond_mask = cond.to(device), cond_mask.to(device)
        extra = {} if mask is None else {"mask": mask.to(device)}
        if seconds_total is not None:
            extra["seconds_total"] = seconds_total
        ts = self.sampling_schedule(steps, schedule_frames or x.shape[-1])
        for t_now, t_next in zip(ts[:-1], ts[1:], strict=True):
            t_batch = torch.full((x.shape[0],), float(t_now), device=device)
            out = self.dit_forward(dit, x, t_batch, cond, cond_mask, cfg_scale=cfg_scale, **extra)
            if self.objective == "rectified_flow":
                x = x + (t_next - t_now) * out
            else:
                a_now, s_now = math.cos(t_now * math.pi / 2), math.sin(t_now * math.pi / 2)
                a_next, s_next = math.cos(t_next * math.pi / 2), math.sin(t_next * math.pi / 2)
                x0, eps = a_now * x - s_now * out, s_now * x + a_now * out
                x = a_next * x0 + s_next * eps
        return x.cpu()

    def describe(self) -> dict:
        return {
            "backend": self.id,
            "backend_version": self.version,
            "sample_rate": self.sample_rate,
            "latent_channels": self.latent_channels,
            "latent_rate": self.latent_rate,
            "latent_scale": self.latent_scale,
            "objective": self.objective,
        }


# --- training timesteps ---------------------------------------------------------------------

# The timestep samplers live in eisbach.objectives; backends name theirs.
draw_timesteps = objectives.sample_timesteps


# --- pretrained checkpoints -------------------------------------------------------------------

CONFIG_NAME = "model_config.json"
WEIGHTS_NAME = "model.safetensors"


@dataclass(frozen=True)
class PretrainedFiles:
    config: Path  # model_config.json
    weights: Path | None  # model.safetensors (None: not fetched from the hub yet)
    source: str  # what backend.pretrained said
    hub_repo: str | None = None  # the hub repository it came from, if any


def resolve_pretrained(
    pretrained: str | None, aliases: dict | None = None, weights: bool = True
) -> PretrainedFiles:
    """model_config.json and model.safetensors of ``backend.pretrained``.

    A folder on disk is used as it is. Anything else is a Hugging Face hub id (``aliases`` maps
    short names to (repo_id, config file, weights file)); both files are fetched with
    hf_hub_download, which reuses the local cache, with the token in ``HF_TOKEN`` if set
    (``weights=False``: only the config, the weights when they are first needed).
    """
    if not pretrained:
        raise ValueError(
            "backend.pretrained is empty: set it to a hub id (e.g. "
            "stabilityai/stable-audio-open-1.0) or a local folder with model_config.json "
            "and model.safetensors"
        )
    folder = Path(pretrained).expanduser()
    if folder.is_dir():
        config, weights = folder / CONFIG_NAME, folder / WEIGHTS_NAME
        missing = [p.name for p in (config, weights) if not p.is_file()]
        if missing:
            hint = (
                " (only .safetensors weights are loaded)"
                if (folder / "model.ckpt").exists()
                else ""
            )
            raise FileNotFoundError(
                f"backend.pretrained={pretrained!r}: the folder lacks {', '.join(missing)}{hint}"
            )
        return PretrainedFiles(config.resolve(), weights.resolve(), pretrained)
    if pretrained.startswith(("/", "./", "../", "~")) or pretrained.count("/") > 1:
        raise FileNotFoundError(f"backend.pretrained={pretrained!r}: no such folder")

    from huggingface_hub import hf_hub_download

    repo, config_name, weights_name = (aliases or {}).get(
        pretrained, (pretrained, CONFIG_NAME, WEIGHTS_NAME)
    )
    token = os.environ.get("HF_TOKEN") or None
    try:
        config = hf_hub_download(repo, config_name, token=token)
        weights_path = hf_hub_download(repo, weights_name, token=token) if weights else None
    except Exception as err:  # network, auth, missing repo: one clear message
        raise RuntimeError(
            f"backend.pretrained={pretrained!r}: could not get {config_name} and {weights_name} "
            f"of hub repository {repo!r} ({type(err).__name__}: {str(err).splitlines()[0][:300]}). "
            "The hub may be unreachable, the repository gated (set HF_TOKEN in the environment "
            "after accepting its licence) or the id wrong; or set backend.pretrained to a local "
            "folder holding model_config.json and model.safetensors"
        ) from err
    return PretrainedFiles(
        Path(config), Path(weights_path) if weights_path else None, pretrained, hub_repo=repo
    )


def load_safetensors(path: Path, device="cpu") -> dict[str, torch.Tensor]:
    """Weights from a .safetensors file (no pickle)."""
    from safetensors.torch import load_file

    if Path(path).suffix != ".safetensors":
        raise ValueError(f"{path}: only .safetensors weights are loaded")
    return load_file(str(path), device=str(device))


def check_state_dict(module: torch.nn.Module, state: dict, where: str) -> list[str]:
    """The keys of ``state`` that ``module`` has no place for (upstream's loaders report and
    skip those), sorted. Raises naming every key that is missing or of the wrong shape: the
    packages' ``copy_state_dict`` would skip those silently and leave random weights."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(
        f"{k} {tuple(state[k].shape)} != {tuple(expected[k].shape)}"
        for k in set(expected) & set(state)
        if tuple(state[k].shape) != tuple(expected[k].shape)
    )
    if missing or wrong:
        problems = []
        for label, keys in (("missing", missing), ("shape", wrong), ("unexpected", unexpected)):
            if keys:
                problems.append(
                    f"{len(keys)} {label}: {', '.join(keys[:8])}{' ...' if len(keys) > 8 else ''}"
                )
        raise ValueError(
            f"{where}: the weights do not match model_config.json ({'; '.join(problems)})"
        )
    return unexpected


def load_checked(module: torch.nn.Module, state: dict, where: str) -> list[str]:
    """Loads every key module expects (all present, all of the right shape) and returns the
    unexpected keys it skipped, after reporting them on stderr."""
    unexpected = check_state_dict(module, state, where)
    if unexpected:
        print(
            f"{where}: skipping {len(unexpected)} unexpected keys, as the package's loader "
            f"does: {', '.join(unexpected[:8])}{' ...' if len(unexpected) > 8 else ''}",
            file=sys.stderr,
        )
    skipped = set(unexpected)
    module.load_state_dict({k: v for k, v in state.items() if k not in skipped}, strict=True)
    return unexpected


def link_pretrained(files: PretrainedFiles, base_dir, copy: bool = False) -> dict:
    """Puts model_config.json + model.safetensors of ``files`` into base_dir (symlinks, or copies
    where links fail or ``copy``), each renamed into place, and returns their record."""
    base_dir = Path(base_dir)
    base_dir.mkdir(parents=True, exist_ok=True)
    linked = not copy
    for src, name in ((files.config, CONFIG_NAME), (files.weights, WEIGHTS_NAME)):
        dest = base_dir / name
        tmp = base_dir / f".{name}.tmp"
        tmp.unlink(missing_ok=True)
        src = Path(src).resolve()
        if dest.exists() and dest.resolve() == src:
            continue
        if linked:
            try:
                tmp.symlink_to(src)
            except OSError:
                linked = False
        if not linked and name == CONFIG_NAME:
            # Its relative paths pointed from the source folder; make them point from here.
            tmp.write_text(
                json.dumps(relative_paths(read_config(src), base_dir), indent=2, sort_keys=True)
                + "\n"
            )
        elif not linked:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    return {
        "source": files.source,
        "hub_repo": files.hub_repo,
        "model_config": str(Path(files.config).resolve()),
        "model_safetensors": str(Path(files.weights).resolve()),
        "model_config_sha256": file_sha256(files.config),
        "model_safetensors_sha256": file_sha256(files.weights),
        "model_safetensors_bytes": Path(files.weights).stat().st_size,
        "linked": linked,
    }


def same_files(a: Path, b: Path) -> bool:
    return Path(a).resolve() == Path(b).resolve()


# Keys of a model_config.json whose values may be local paths (the lut conditioner's tokenizer,
# T5Gemma's model_path). On disk they are relative to the model folder, so that the folder loads
# from any working directory and after results are moved; in memory they are absolute.
PATH_KEYS = ("tokenizer_name", "model_path")


def _map_paths(cfg, fn):
    if isinstance(cfg, dict):
        return {
            k: fn(v) if k in PATH_KEYS and isinstance(v, str) and v else _map_paths(v, fn)
            for k, v in cfg.items()
        }
    if isinstance(cfg, list):
        return [_map_paths(v, fn) for v in cfg]
    return cfg


def relative_paths(cfg: dict, folder) -> dict:
    """cfg with each local path of PATH_KEYS made relative to folder (hub ids stay as they are)."""
    folder = Path(folder).resolve()
    return _map_paths(
        cfg, lambda v: os.path.relpath(Path(v).resolve(), folder) if Path(v).exists() else v
    )


def resolve_paths(cfg: dict, folder) -> dict:
    """cfg with each relative path of PATH_KEYS that exists under folder made absolute."""
    folder = Path(folder).resolve()
    return _map_paths(
        cfg,
        lambda v: (
            str((folder / v).resolve())
            if not Path(v).is_absolute() and (folder / v).exists()
            else v
        ),
    )


def read_config(path) -> dict:
    """A model_config.json, its folder-relative paths resolved (see PATH_KEYS) against the
    folder the file really lives in (a linked base points into the pretrained folder)."""
    return resolve_paths(json.loads(Path(path).read_text()), Path(path).resolve().parent)


def named_base(dit: torch.nn.Module, base_dir) -> torch.nn.Module:
    """dit, labelled with the folder it was loaded from: peft records that label as the
    adapter's base_model_name_or_path (eisbach.adapters.save)."""
    dit.name_or_path = str(base_dir)
    return dit


# --- audio -----------------------------------------------------------------------------------


def audio_tensor(audio: np.ndarray, channels: int) -> torch.Tensor:
    """Mono [n] or [c, n] float audio -> [channels, n] float32 (mono is duplicated, several
    channels are averaged to mono)."""
    x = torch.as_tensor(np.ascontiguousarray(audio, dtype=np.float32))
    if x.dim() == 1:
        x = x[None]
    if x.dim() != 2:
        raise ValueError(f"audio must be [n] or [channels, n], got shape {tuple(x.shape)}")
    if x.shape[0] > x.shape[1]:
        raise ValueError(
            f"audio of shape {tuple(x.shape)} looks like [n, channels]; pass [channels, n]"
        )
    if x.shape[0] == channels:
        return x
    if x.shape[0] == 1:
        return x.expand(channels, -1).contiguous()
    if channels == 1:
        return x.mean(0, keepdim=True)
    raise ValueError(f"cannot map {x.shape[0]} audio channels onto {channels}")


def content_seed(audio: torch.Tensor) -> int:
    """A seed from the audio itself: the same clip always draws the same encoder noise."""
    digest = hashlib.sha256(audio.detach().cpu().contiguous().numpy().tobytes()).digest()
    return int.from_bytes(digest[:7], "big")


def pick_device(name: str | None) -> torch.device:
    if not name or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


# --- the module adapters train -----------------------------------------------------------------

INPAINT_IDS = ("inpaint_mask", "inpaint_masked_input")
COND_ID_LISTS = (
    "cross_attn_cond_ids",
    "global_cond_ids",
    "input_concat_ids",
    "prepend_cond_ids",
    "local_add_cond_ids",
    "modular_local_cond_ids",
)


class ConditionedDiT(torch.nn.Module):
    """A Stable Audio DiT together with the conditioners it needs at every step.

    Input: the latents, t, the stored text conditioning (``cross_attn_cond``/``_mask``), and the
    seconds and padding mask. The timing (number) conditioners run here, the text
    conditioning of ``text_id`` goes through ``text_head`` if one is given (SA3: the trainable
    projection of T5Gemma's output), inpainting inputs are zero (generate everything), and the
    inputs are assembled by the library's own ``get_conditioning_inputs`` (``assemble``).

    A sample whose text conditioning is all zero (the training loop's caption dropout) gets
    the whole cross-attention input zeroed, as the DiT's own CFG dropout and its unconditional
    branch do.
    """

    def __init__(
        self,
        dit: torch.nn.Module,
        conditioners: dict,
        text_id: str,
        cond_ids: dict,
        assemble,
        latent_rate: float,
        text_head: str | None = None,
        pass_padding_mask: bool = False,
    ):
        super().__init__()
        self.model = dit
        self.conditioners = torch.nn.ModuleDict(conditioners)
        self.text_id = text_id
        for name in COND_ID_LISTS:
            setattr(self, name, list(cond_ids.get(name) or []))
        self._assemble = assemble
        self.latent_rate = float(latent_rate)
        self.text_head = text_head
        self.pass_padding_mask = pass_padding_mask
        used = {i for name in COND_ID_LISTS for i in getattr(self, name)}
        unknown = used - {text_id, *INPAINT_IDS, *self.conditioners}
        if unknown:
            raise ValueError(
                f"the DiT is conditioned on {sorted(unknown)}, which this backend cannot "
                "compute; supported: the text prompt, seconds_start, seconds_total, inpainting"
            )

    @staticmethod
    def _seconds(value, default, batch: int) -> list[float]:
        if value is None:
            value = default
        if isinstance(value, int | float):
            return [float(value)] * batch
        return [float(v) for v in torch.as_tensor(value).reshape(-1).tolist()]

    def forward(
        self,
        x,
        t,
        cross_attn_cond=None,
        cross_attn_mask=None,
        seconds_start=None,
        seconds_total=None,
        padding_mask=None,
        **kwargs,
    ):
        batch, channels, frames = x.shape
        if padding_mask is not None:
            valid = padding_mask.sum(-1).float() / self.latent_rate
        else:
            valid = torch.full((batch,), frames / self.latent_rate)
        dropped = None
        text = cross_attn_cond
        if text is not None:
            dropped = (text == 0).flatten(1).all(1)
            if self.text_head is not None:
                head = self.conditioners[self.text_head]
                if not isinstance(head.proj_out, torch.nn.Identity):
                    text = text.to(next(head.proj_out.parameters()).dtype)
                text = head.apply_padding(head.proj_out(text), cross_attn_mask.bool())
        cond = {self.text_id: (text, cross_attn_mask)}
        seconds = {
            "seconds_start": self._seconds(seconds_start, 0.0, batch),
            "seconds_total": self._seconds(seconds_total, valid, batch),
        }
        for cond_id, conditioner in self.conditioners.items():
            if cond_id == self.text_head:
                continue
            if cond_id not in seconds:
                raise ValueError(f"no input for conditioner {cond_id!r}")
            cond[cond_id] = conditioner(seconds[cond_id], x.device)
        cond["inpaint_mask"] = [x.new_zeros(batch, 1, frames)]
        cond["inpaint_masked_input"] = [x.new_zeros(batch, channels, frames)]
        inputs = self._assemble(self, cond)
        if dropped is not None and dropped.any() and inputs.get("cross_attn_cond") is not None:
            keep = (~dropped).view(-1, 1, 1).to(inputs["cross_attn_cond"].dtype)
            inputs["cross_attn_cond"] = inputs["cross_attn_cond"] * keep
        if self.pass_padding_mask and padding_mask is not None:
            kwargs["padding_mask"] = padding_mask.bool()
        inputs = {k: v for k, v in inputs.items() if v is not None}
        return self.model(x, t, **inputs, **kwargs)
