"""Train stage: the project's own loop, for the tiny base (all weights) and peft adapters.

Every random draw of step k (batch, timesteps, noise, caption dropout) comes from generators
seeded by (seed, k), so a run resumed from a checkpoint draws what an uninterrupted run draws.
The loss is mean_b(s[b] * mse_b) with s from eisbach.weighting, detached.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm import tqdm

from eisbach import provenance
from eisbach.atomic import atomic_path, write_json, write_parquet
from eisbach.backends import get_backend
from eisbach.latents import load_latents, load_text
from eisbach.weighting import eisbach_terms, get_scheme, weighted_loss

LOG_SCHEMA = pa.schema(
    [
        ("step", pa.int32()),
        ("sample_id", pa.string()),
        ("t", pa.float32()),
        ("raw_loss", pa.float32()),
        ("H", pa.float32()),
        ("w", pa.float32()),
        ("applied_weight", pa.float32()),
        ("lr", pa.float32()),
    ]
)


def scheme_tag(scheme: dict) -> str:
    params = "".join(
        f"-{ {'lam': 'l', 'gamma': 'g', 'c': 'c'}.get(k, k) }{v}"
        for k, v in sorted(scheme.items())
        if k != "name"
    )
    return scheme["name"] + params.replace(" ", "")


def run_id(scheme: dict, adapter: dict, seed: int) -> str:
    """e.g. eisbach-l0.5_dora-r16_s0"""
    return f"{scheme_tag(scheme)}_{adapter['type']}-r{adapter['rank']}_s{seed}"


class TrainingData:
    """The training split in memory, with per-step seeded batches and a padding collate."""

    def __init__(self, latents_dir, split: str = "train"):
        self.rows = load_latents(latents_dir, split=split)
        if not self.rows:
            raise ValueError(f"{latents_dir}: no latents in split {split!r}")
        self.text = load_text(latents_dir)

    def batch(self, indices: list[int]):
        rows = [self.rows[i] for i in indices]
        channels = rows[0]["latent"].shape[0]
        frames = max(r["latent"].shape[1] for r in rows)
        x0 = torch.zeros(len(rows), channels, frames)
        mask = torch.zeros(len(rows), frames, dtype=torch.bool)
        for b, r in enumerate(rows):
            n = r["latent"].shape[1]
            x0[b, :, :n] = torch.from_numpy(r["latent"])
            mask[b, :n] = True
        embeddings = [self.text[r["caption_key"]] for r in rows]
        cond = torch.from_numpy(np.stack([e for e, _ in embeddings]))
        cond_mask = torch.from_numpy(np.stack([m for _, m in embeddings]))
        return [r["id"] for r in rows], x0, mask, cond, cond_mask


def step_generators(seed: int, step: int) -> tuple[np.random.Generator, torch.Generator]:
    return (
        np.random.default_rng([seed, step]),
        torch.Generator().manual_seed(seed * 1_000_003 + step),
    )


def learning_rate(cfg: dict, step: int) -> float:
    warmup = int(cfg["warmup_steps"])
    return float(cfg["lr"]) * min(1.0, (step + 1) / max(1, warmup)) if warmup else float(cfg["lr"])


def save_checkpoint(ckpt_dir: Path, step: int, model, optimizer, log_rows: list[dict]) -> None:
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    state = {
        "step": step,
        "trainable": {k: v for k, v in model.state_dict().items() if k in trainable_names(model)},
        "optimizer": optimizer.state_dict(),
    }
    with atomic_path(ckpt_dir / "log.parquet") as tmp:
        pq.write_table(pa.Table.from_pylist(log_rows, schema=LOG_SCHEMA), tmp)
    with atomic_path(ckpt_dir / "last.pt") as tmp:
        torch.save(state, tmp)


def load_checkpoint(ckpt_dir: Path, model, optimizer) -> tuple[int, list[dict]]:
    path = ckpt_dir / "last.pt"
    if not path.exists():
        return 0, []
    state = torch.load(path, weights_only=True)
    model.load_state_dict(state["trainable"], strict=False)
    optimizer.load_state_dict(state["optimizer"])
    log_rows = pq.read_table(ckpt_dir / "log.parquet").to_pylist()
    return int(state["step"]), [r for r in log_rows if r["step"] < state["step"]]


def trainable_names(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def train_loop(backend, model, data: TrainingData, cfg: dict, scheme, seed: int, ckpt_dir=None):
    """Runs cfg['steps'] optimiser steps; returns the per-sample log rows."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=float(cfg["lr"]), weight_decay=0.0)
    start, log_rows = (0, [])
    if ckpt_dir is not None:
        start, log_rows = load_checkpoint(ckpt_dir, model, optimizer)
        if start:
            print(f"resuming from step {start} ({ckpt_dir / 'last.pt'})")
    batch_size = int(cfg["batch_size"])
    model.train()
    progress = tqdm(range(start, int(cfg["steps"])), desc="train", unit="step", mininterval=2)
    for step in progress:
        np_rng, torch_rng = step_generators(seed, step)
        indices = np_rng.choice(
            len(data.rows), size=batch_size, replace=len(data.rows) < batch_size
        )
        ids, x0, mask, cond, cond_mask = data.batch(indices.tolist())
        t = backend.sample_timesteps(batch_size, torch_rng)
        noise = torch.randn(x0.shape, generator=torch_rng)
        dropped = torch.rand(batch_size, generator=torch_rng) < float(cfg["cfg_dropout"])
        cond = torch.where(dropped.view(-1, 1, 1), torch.zeros_like(cond), cond)
        x_t, target = backend.noisy_input(x0, noise, t)
        lr = learning_rate(cfg, step)
        for group in optimizer.param_groups:
            group["lr"] = lr

        pred = backend.dit_forward(model, x_t, t, cond, cond_mask)
        weights = scheme(pred, target, t, mask)
        terms = eisbach_terms(pred, mask)
        per_sample, loss = weighted_loss(pred, target, weights, mask)
        logged_loss = per_sample.detach()
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"loss is {loss.item()} at step {step}; samples {ids}, per-sample {per_sample.tolist()}"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        for b, sample_id in enumerate(ids):
            log_rows.append(
                {
                    "step": step,
                    "sample_id": sample_id,
                    "t": float(t[b]),
                    "raw_loss": float(logged_loss[b]),
                    "H": float(terms["H"][b]),
                    "w": float(terms["w"][b]),
                    "applied_weight": float(weights[b]),
                    "lr": lr,
                }
            )
        progress.set_postfix(loss=f"{loss.item():.4f}", w=f"{terms['w'].mean().item():.3f}")
        every = cfg.get("checkpoint_every")
        if ckpt_dir is not None and every and (step + 1) % int(every) == 0:
            save_checkpoint(ckpt_dir, step + 1, model, optimizer, log_rows)
    return log_rows


def spread_by_t(log: list[dict], bins: int = 5) -> list[dict]:
    """Mean, sd, min and max of H and w per t-bin: does the weight vary across samples at all?"""
    t = np.array([r["t"] for r in log])
    out = []
    edges = np.linspace(0, 1, bins + 1)
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        sel = [r for r, tt in zip(log, t, strict=True) if lo <= tt < hi or (hi == 1 and tt == 1)]
        if not sel:
            continue
        entry = {"t_lo": float(lo), "t_hi": float(hi), "n": len(sel)}
        for key in ("H", "w", "applied_weight"):
            v = np.array([r[key] for r in sel])
            entry[key] = {
                "mean": float(v.mean()),
                "sd": float(v.std()),
                "min": float(v.min()),
                "max": float(v.max()),
            }
        out.append(entry)
    return out


def write_run_outputs(out_dir: Path, log_rows, record: dict, stage_config: dict) -> None:
    log = pa.Table.from_pylist(log_rows, schema=LOG_SCHEMA)
    meta = provenance.parquet_metadata(stage_config, stage="train", run_id=record["run_id"])
    write_parquet(out_dir / "train_log.parquet", log.replace_schema_metadata(meta))
    record = record | {
        "spread_by_t": spread_by_t(log_rows),
        "mean_applied_weight": float(np.mean([r["applied_weight"] for r in log_rows])),
        "final_loss_mean_last_10pct": float(
            np.mean([r["raw_loss"] for r in log_rows[-max(1, len(log_rows) // 10) :]])
        ),
        "provenance": provenance.provenance(stage_config),
        "config": stage_config,
    }
    write_json(out_dir / "run.json", record)


def pretrain_base(args, backend, backend_config, cfg) -> None:
    seed = int(cfg["seed"])
    data = TrainingData(args.latents_dir)
    dit = backend.new_dit(seed)
    stage_config = {"backend": backend_config, "base": cfg}
    started = time.time()
    log_rows = train_loop(backend, dit, data, cfg, get_scheme("none"), seed)
    backend.save_dit(dit, args.out_dir)
    record = {
        "run_id": f"base-{backend.id}",
        "kind": "base",
        "parameters": sum(p.numel() for p in dit.parameters()),
        "train_clips": len(data.rows),
        "seconds": round(time.time() - started, 2),
    }
    write_run_outputs(args.out_dir, log_rows, record, stage_config)


def adapter_config(adapter: dict, target_modules: list[str]):
    from peft import LoraConfig

    return LoraConfig(
        r=int(adapter["rank"]),
        lora_alpha=float(adapter["alpha"]),
        target_modules=target_modules,
        use_dora=adapter["type"] == "dora",
        lora_dropout=0.0,
    )


def finetune(args, backend, backend_config, cfg) -> None:
    from peft import get_peft_model

    scheme_cfg, adapter, seed = (
        json.loads(args.scheme_json),
        json.loads(args.adapter_json),
        args.seed,
    )
    rid = run_id(scheme_cfg, adapter, seed)
    out_dir: Path = args.out_dir
    params = {k: v for k, v in scheme_cfg.items() if k != "name"}
    if scheme_cfg["name"] == "eisbach_shuffled":
        params.setdefault("seed", seed)
    scheme = get_scheme(scheme_cfg["name"], **params)
    data = TrainingData(args.latents_dir)
    torch.manual_seed(seed)  # peft's adapter initialisation
    model = get_peft_model(
        backend.load_dit(args.base_dir), adapter_config(adapter, backend.peft_target_modules)
    )
    frozen_before = {
        n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad
    }
    stage_config = {
        "backend": backend_config,
        "train": cfg,
        "scheme": scheme_cfg,
        "adapter": adapter,
        "seed": seed,
    }
    started = time.time()
    log_rows = train_loop(backend, model, data, cfg, scheme, seed, ckpt_dir=out_dir / "checkpoints")
    changed = [
        n
        for n, p in model.named_parameters()
        if n in frozen_before and not torch.equal(p, frozen_before[n])
    ]
    if changed:
        raise RuntimeError(f"base weights changed during adapter training: {changed[:5]}")

    tmp_dir = out_dir / ".adapter.tmp"
    shutil.rmtree(tmp_dir, ignore_errors=True)
    model.save_pretrained(tmp_dir)
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        (tmp_dir / name).replace(out_dir / name)
    shutil.rmtree(tmp_dir)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    record = {
        "run_id": rid,
        "kind": "adapter",
        "scheme": scheme_cfg,
        "adapter": adapter,
        "seed": seed,
        "target_modules": backend.peft_target_modules,
        "trainable_parameters": trainable,
        "train_clips": len(data.rows),
        "seconds": round(time.time() - started, 2),
        "base": str(args.base_dir),
    }
    write_run_outputs(out_dir, log_rows, record, stage_config)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", choices=["base", "adapter"])
    parser.add_argument("--latents-dir", type=Path, required=True)
    parser.add_argument("--backend-json", required=True)
    parser.add_argument("--train-json", required=True, help="the `base` or `train` section")
    parser.add_argument("--out-dir", type=Path, required=True)
    parser.add_argument("--base-dir", type=Path, help="adapter mode: the pretrained base")
    parser.add_argument("--scheme-json", help="adapter mode: one entry of grid.schemes")
    parser.add_argument("--adapter-json", help="adapter mode: one entry of grid.adapters")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    backend_config, cfg = json.loads(args.backend_json), json.loads(args.train_json)
    torch.set_num_threads(int(cfg["threads"]))
    args.out_dir.mkdir(parents=True, exist_ok=True)
    backend = get_backend(backend_config["name"], backend_config, args.latents_dir)
    if args.mode == "base":
        pretrain_base(args, backend, backend_config, cfg)
    else:
        finetune(args, backend, backend_config, cfg)
