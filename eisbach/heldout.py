"""Held-out denoising loss: every run scored on the eval split with the same timesteps and noise.

The grid's controls (``constant`` at the matched weight, ``eisbach_shuffled``, ``_batchmean``,
``_inverse``) exist to tell "the per-sample weight helps" apart from "any smaller or reshuffled
step helps". Sampling every control is costly; this score is not. Each eval clip is noised at
each t of a fixed grid with noise drawn from (seed, clip id, t index) at the clip's own length,
and the eval batches are the same unshuffled stream for every run, so two runs' scores pair up
clip by clip (``eisbach.controls``). The loss is the plain masked MSE of the
backend's objective, unweighted, with the text condition kept.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import torch

from eisbach import objectives
from eisbach.latent_store import LatentStream, make_loader
from eisbach.weighting import weighted_loss

T_GRID = (0.1, 0.3, 0.5, 0.7, 0.9)
SCHEMA = pa.schema([("sample_id", pa.string()), ("t", pa.float64()), ("loss", pa.float64())])


def clip_noise(seed: int, clip_id: str, t_index: int, shape: tuple[int, int]) -> torch.Tensor:
    """Gaussian noise [C, n_frames] that depends on nothing but its key."""
    key = hashlib.sha256(f"{seed}\0{clip_id}\0{t_index}".encode()).digest()
    generator = torch.Generator().manual_seed(int.from_bytes(key[:8], "little") >> 1)
    return torch.randn(shape, generator=generator)


@torch.no_grad()
def heldout_loss(backend, model, latents_dir, cfg: dict, device, autocast) -> list[dict]:
    """Rows {sample_id, t, loss} for every eval clip and every t of ``cfg["t"]`` (default
    T_GRID); [] when the store has no eval split. ``autocast`` is the training precision's."""
    t_grid = [float(t) for t in cfg.get("t", T_GRID)]
    seed = int(cfg.get("seed", 0))
    try:
        stream = LatentStream(
            latents_dir,
            batch_size=int(cfg.get("batch_size", 8)),
            split="eval",
            shuffle=False,
            epochs=1,
        )
    except ValueError:
        return []
    was_training = model.training
    model.eval()
    rows = []
    for batch in make_loader(stream, with_text=True):
        x0, mask = batch.latents, batch.mask
        n_frames = mask.sum(-1).tolist()
        cond, cond_mask = batch.cond.to(device), batch.cond_mask.to(device)
        mask_d, ones = mask.to(device), torch.ones(len(batch.ids), device=device)
        for k, t_value in enumerate(t_grid):
            noise = torch.zeros_like(x0)
            for b, (clip_id, n) in enumerate(zip(batch.ids, n_frames, strict=True)):
                noise[b, :, :n] = clip_noise(seed, clip_id, k, (x0.shape[1], n))
            t = torch.full((len(batch.ids),), t_value)
            x_t, target = objectives.noisy_input(backend.objective, x0, noise, t)
            with autocast:
                pred = backend.dit_forward(
                    model, x_t.to(device), t.to(device), cond, cond_mask, mask=mask_d
                )
            per_sample, _ = weighted_loss(pred.float(), target.to(device), ones, mask_d)
            rows += [
                {"sample_id": clip_id, "t": t_value, "loss": float(loss)}
                for clip_id, loss in zip(batch.ids, per_sample.cpu().tolist(), strict=True)
            ]
    model.train(was_training)
    return rows


def summarize(rows: list[dict]) -> dict:
    """Mean loss overall and per t, and the number of clips: what run.json carries."""
    if not rows:
        return {"clips": 0, "mean": None, "by_t": {}}
    t = np.array([r["t"] for r in rows])
    loss = np.array([r["loss"] for r in rows])
    return {
        "clips": len({r["sample_id"] for r in rows}),
        "mean": float(loss.mean()),
        "by_t": {f"{v:g}": float(loss[t == v].mean()) for v in sorted(set(t.tolist()))},
    }


def table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=SCHEMA)
