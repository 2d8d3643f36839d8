"""The interface every backend implements. Stages use only this, never a backend's internals."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import torch


class Backend(ABC):
    id: str
    version: str
    sample_rate: int
    latent_channels: int
    latent_rate: float  # latent frames per second
    latent_scale: float
    objective: str  # "rectified_flow" or "v"
    peft_target_modules: list[str]

    @abstractmethod
    def encode_audio(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        """Mono float audio -> latent [C, T] float32."""

    @abstractmethod
    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """Latents [B, C, T] -> audio [B, n] float32 at ``sample_rate``."""

    @abstractmethod
    def encode_text(self, captions: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Captions -> (embeddings [N, L, D] float32, mask [N, L] bool)."""

    @abstractmethod
    def new_dit(self, seed: int) -> torch.nn.Module:
        """A freshly initialised diffusion transformer."""

    @abstractmethod
    def load_dit(self, base_dir) -> torch.nn.Module:
        """The pretrained diffusion transformer stored in base_dir."""

    @abstractmethod
    def save_dit(self, dit: torch.nn.Module, base_dir) -> None:
        """Stores a trained diffusion transformer so that ``load_dit`` gives it back."""

    @abstractmethod
    def sample_timesteps(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """Training timesteps [n] in [0, 1], 1 = pure noise."""

    def dit_forward(self, dit, x, t, cond, cond_mask, cfg_scale=1.0, cfg_dropout_prob=0.0):
        """The DiT output (velocity for rectified flow) [B, C, T]."""
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
        tt = t.view(-1, 1, 1)
        if self.objective == "rectified_flow":
            return (1 - tt) * x0 + tt * noise, noise - x0
        if self.objective == "v":
            alpha, sigma = torch.cos(tt * torch.pi / 2), torch.sin(tt * torch.pi / 2)
            return alpha * x0 + sigma * noise, alpha * noise - sigma * x0
        raise ValueError(f"unknown objective {self.objective!r}")

    @torch.no_grad()
    def sample(self, dit, noise, cond, cond_mask, steps: int, cfg_scale: float) -> torch.Tensor:
        """Euler integration of the rectified-flow ODE from t=1 (noise) to t=0."""
        if self.objective != "rectified_flow":
            raise NotImplementedError("the Euler sampler is written for rectified flow")
        x = noise
        ts = torch.linspace(1.0, 0.0, steps + 1)
        for t_now, t_next in zip(ts[:-1], ts[1:], strict=True):
            t_batch = torch.full((x.shape[0],), float(t_now))
            v = self.dit_forward(dit, x, t_batch, cond, cond_mask, cfg_scale=cfg_scale)
            x = x + (t_next - t_now) * v
        return x

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
