"""Train stage: the project's own loop, for the tiny base (all weights) and peft adapters.

- Batches stream from the latent store (``TrainingData``: an endless, seeded LatentStream through
  DataLoader workers, restarted at batch k on resume). The timesteps, noise and caption dropout of
  step k come from a generator seeded by (seed, k); a checkpoint also holds the global
  torch/numpy/python RNG states and the scheme's own generator, so a resumed run draws exactly
  what an uninterrupted run draws.
- The loss is mean_b(s[b] * mse_b) over the global batch, with s from eisbach.weighting:
  detached, fp32, computed before any reduction (per-sample schemes on each rank's own
  predictions, batch-level ones on the global batch's). Any number of ranks, in micro-batches
  with gradient accumulation, gives the one-process update (``accumulate_gradients``,
  eisbach.distributed).
- The objective (rectified flow or v) is the backend's; so is the timestep sampler
  (``sample_timesteps`` then ``shift_timesteps``) unless ``train.timestep_sampler`` names one of
  eisbach.objectives. The DiT gets the padding mask of the batch.
- Pretrained backends (``has_pretrained_base``): the base stage links their checkpoint
  (``prepare_base``) instead of pretraining.
- AdamW with a warm-up-then-constant LambdaLR schedule; bf16 autocast on CUDA; activation
  checkpointing as the backend has it, or as ``train.activation_checkpointing`` sets it.
- An atomic checkpoint every ``checkpoint_every`` steps (checkpoints/last.pt and log.parquet):
  trainable weights, optimizer, scheduler, RNG states, data position, and a fingerprint of the
  configuration, the base weights and the package's code, so that a changed run never resumes
  from a stale checkpoint. A finished run deletes its checkpoints: a forced rerun starts afresh
  and equals a fresh run bit for bit.
- Inputs are verified on read: the latent shards and text table against latents_manifest.json,
  the base weights against the base's run.json (eisbach.integrity). The outputs' sha256 go into
  run.json (``weights``) for the stages that read them.
- A non-finite loss stops the run, naming the step and the sample ids.
- An adapter run ends by scoring its held-out denoising loss (eisbach.heldout) on the eval split:
  the same clips, timesteps and noise for every run, so the controls pair up with eisbach.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import random
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm import tqdm

from eisbach import adapters, checkpoint_store, distributed, heldout, objectives, provenance
from eisbach.atomic import atomic_path, write_json, write_parquet
from eisbach.backends import get_backend
from eisbach.grid import run_id, scheme_tag
from eisbach.integrity import WEIGHTS_KEY, sha256_cached, verify_weights, weights_record
from eisbach.latent_store import LatentStream, TextTable, make_loader
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
CHECKPOINT_FORMAT = 2
BASE_WEIGHTS = "model.safetensors"


class TrainingData:
    """The training split of a latent store, streamed through torch DataLoader workers.

    ``batches(batch_size, seed, start_step)`` yields the global batch of every step from
    ``start_step`` on: an endless LatentStream seeded by the run's seed and started at batch
    ``start_step``, so a resumed run reads exactly what an unbroken run reads. Every rank streams
    the whole global batch and trains on its share: the batches, and so the result, do not depend
    on the number of processes, at the price of each rank reading the latents of the whole batch.
    The loader's worker count and shuffle buffer fix the order of the stream, so they belong to
    the run's configuration (``train.loader``) and its resume fingerprint.
    """

    def __init__(self, latents_dir, loader_cfg: dict | None = None, split: str = "train"):
        loader_cfg = loader_cfg or {}
        self.latents_dir = Path(latents_dir)
        self.split = split
        self.workers = int(loader_cfg.get("workers", 0))
        self.shuffle_row_groups = int(loader_cfg.get("shuffle_row_groups", 8))
        self.num_rows = self.stream(1, 0).num_rows  # also: the split has rows
        self.text = TextTable(self.latents_dir)

    def stream(self, batch_size: int, seed: int, start_step: int = 0) -> LatentStream:
        return LatentStream(
            self.latents_dir,
            batch_size=batch_size,
            split=self.split,
            seed=seed,
            shuffle_row_groups=self.shuffle_row_groups,
            epochs=None,
            start_batch=start_step,
        )

    def batches(self, batch_size: int, seed: int, start_step: int = 0):
        """LatentBatches with their text conditioning; ``close()`` it to stop the workers."""
        loader = make_loader(self.stream(batch_size, seed, start_step), self.workers)
        loader.text = self.text  # one table, looked up in this process
        yield from loader


def step_generator(seed: int, step: int) -> torch.Generator:
    """The generator of step k's timesteps, noise and caption dropout."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def lr_factor(cfg: dict, step: int) -> float:
    """The LambdaLR factor of step: a linear warm-up over warmup_steps, then constant, or with
    ``lr_decay: cosine`` a half cosine from 1 at the warm-up's end to 0 after the last step."""
    warmup = int(cfg["warmup_steps"])
    if warmup and step + 1 < warmup:
        return (step + 1) / warmup
    if cfg.get("lr_decay", "constant") == "constant":
        return 1.0
    start = max(warmup - 1, 0)
    progress = min(1.0, (step - start) / max(1, int(cfg["steps"]) - start))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def timestep_sampler(backend, cfg: dict):
    """The backend's own sampler (``sample_timesteps``, then ``shift_timesteps``), unless
    ``train.timestep_sampler`` names one of eisbach.objectives for an ablation."""
    name = cfg.get("timestep_sampler")
    if name and name not in objectives.SAMPLERS:
        raise ValueError(f"unknown timestep sampler {name!r}; known: {sorted(objectives.SAMPLERS)}")
    shift = getattr(backend, "shift_timesteps", lambda t, n_frames: t)

    def sample(n: int, generator: torch.Generator, n_frames: torch.Tensor) -> torch.Tensor:
        if name:
            t = objectives.sample_timesteps(name, n, generator)
        else:
            t = backend.sample_timesteps(n, generator)
        return shift(t, n_frames)

    return sample


def set_activation_checkpointing(model: torch.nn.Module, enabled: bool) -> int:
    """Turns the recomputation of transformer blocks in backward on or off.

    stable-audio-tools' ContinuousTransformer checkpoints every block by default
    (``forward(..., use_checkpointing=True)``): less memory, ~1/3 more compute per step. A
    forward pre-hook sets the flag on every module whose forward takes it; returns their count.
    """
    import inspect

    def hook(module, args, kwargs):
        return args, kwargs | {"use_checkpointing": enabled}

    count = 0
    for module in model.modules():
        if "use_checkpointing" in inspect.signature(module.forward).parameters:
            module.register_forward_pre_hook(hook, with_kwargs=True)
            count += 1
    return count


def autocast(device: torch.device, cfg: dict):
    """bf16 autocast on CUDA (train.precision bf16, the default); fp32 elsewhere."""
    enabled = device.type == "cuda" and cfg.get("precision", "bf16") == "bf16"
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


# --- checkpoints ------------------------------------------------------------------------------
def rng_state(scheme) -> dict:
    """Every RNG a step might touch, as tensors and plain values (torch.load weights_only)."""
    np_state = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {"version": py_version, "state": list(py_internal), "gauss_next": py_gauss},
        # Only this process's device: get_rng_state_all would open a context on every GPU.
        "cuda": [torch.cuda.get_rng_state()] if torch.cuda.is_initialized() else [],
    }
    generator = getattr(scheme, "generator", None)
    if generator is not None:
        state["scheme"] = generator.get_state()
    return state


def set_rng_state(state: dict, scheme) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            n["keys"].numpy().astype(np.uint32),
            n["pos"],
            n["has_gauss"],
            n["cached_gaussian"],
        )
    )
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"][0])
    generator = getattr(scheme, "generator", None)
    if generator is not None:
        if "scheme" not in state:
            raise ValueError("the checkpoint lacks the weighting scheme's generator state")
        generator.set_state(state["scheme"])


def trainable_names(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(
    ckpt_dir: Path,
    step: int,
    batch_size: int,
    model,
    optimizer,
    scheduler,
    scheme,
    log_rows,
    fingerprint,
) -> None:
    """Atomic: log.parquet first, then last.pt; a kill between the two leaves a consistent pair."""
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    names = trainable_names(model)
    state = {
        "format": CHECKPOINT_FORMAT,
        "step": step,
        "data_position": {"step": step, "samples_seen": step * batch_size},
        "fingerprint": fingerprint,
        "trainable": {k: v.detach().cpu() for k, v in model.state_dict().items() if k in names},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": rng_state(scheme),
        "log_rows": len(log_rows),
    }
    with atomic_path(ckpt_dir / "log.parquet") as tmp:
        pq.write_table(pa.Table.from_pylist(log_rows, schema=LOG_SCHEMA), tmp)
    with atomic_path(ckpt_dir / "last.pt") as tmp:
        torch.save(state, tmp)


def load_checkpoint(
    ckpt_dir: Path, model, optimizer, scheduler, scheme, fingerprint=None
) -> tuple[int, list[dict]]:
    """(step, log rows) restored from ckpt_dir/last.pt; (0, []) without a usable checkpoint."""
    path = ckpt_dir / "last.pt"
    if not path.exists():
        return 0, []
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("format") != CHECKPOINT_FORMAT or (
        fingerprint is not None and state.get("fingerprint") != fingerprint
    ):
        print(
            f"{path}: written by another configuration, base, code version or checkpoint format;"
            " not resuming from it, training from step 0",
            file=sys.stderr,
        )
        return 0, []
    missing = trainable_names(model) - set(state["trainable"])
    if missing:
        raise ValueError(f"{path} lacks trainable weights: {sorted(missing)[:5]}")
    model.load_state_dict(state["trainable"], strict=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"], scheme)
    step = int(state["step"])
    log_rows = [r for r in pq.read_table(ckpt_dir / "log.parquet").to_pylist() if r["step"] < step]
    if len(log_rows) != state["log_rows"]:
        raise ValueError(
            f"{ckpt_dir / 'log.parquet'} has {len(log_rows)} rows before step {step}, expected {state['log_rows']}"
        )
    return step, log_rows


# --- the loop ---------------------------------------------------------------------------------
def accumulate_gradients(backend, train_model, scheme, plan, ctx, batch, autocast_ctx):
    """Forward and backward of this rank's micro-batches of one step's global batch; returns
    [batch_size, 4] (per-sample loss, H, w, applied weight) of the whole global batch.

    ``batch`` is (x_t, target, t, mask, cond, cond_mask) of the global batch, on the CPU. Each
    micro-batch's loss is world_size * sum_b(s_b * mse_b) / batch_size, so that its gradients
    summed over micro-batches and averaged over ranks (DDP) are those of mean_b(s_b * mse_b)
    over the global batch. Only a rank's last micro-batch all-reduces (``no_sync`` before it).
    A rank without samples runs one stand-in pass (sample 0) at zero weight, so that it joins
    the all-reduce. Batch-level schemes (eisbach_batchmean, eisbach_shuffled) see the global
    batch's predictions, gathered from every rank, so their weights equal one process's.
    """
    batch_size = plan.batch_size
    chunks = plan.micro_batches(ctx.rank)
    passes = chunks or [range(0, 1)]
    scale = ctx.world_size / batch_size
    device = ctx.device
    batch_level = getattr(scheme, "batch_level", False)
    rows = []
    for k, idx in enumerate(passes):
        sync = k == len(passes) - 1 or not ctx.distributed
        with contextlib.nullcontext() if sync else train_model.no_sync():
            x_t, target, t, mask, cond, cond_mask = (
                v[idx.start : idx.stop].to(device) for v in batch
            )
            with autocast_ctx():
                pred = backend.dit_forward(train_model, x_t, t, cond, cond_mask, mask=mask)
            if batch_level:  # one pass per rank (train_loop checks): gather, weigh, select
                counts = plan.counts
                everyone = ctx.gather_rows(pred.detach().float(), counts)
                _, g_target, g_t, g_mask = (v.to(device) for v in batch[:4])
                weights = scheme(everyone, g_target, g_t, g_mask)[idx.start : idx.stop]
            else:  # per-sample schemes: a sample's weight depends on its prediction alone
                weights = scheme(pred, target, t, mask)  # detached fp32
            terms = eisbach_terms(pred, mask)
            per_sample, _ = weighted_loss(pred, target, weights, mask)
            loss = (weights * per_sample).sum() * scale
            (loss if chunks else loss * 0.0).backward()
        if chunks:
            rows.append(torch.stack([per_sample.detach(), terms["H"], terms["w"], weights], 1))
    # Read on the host only once backward is queued: a sync before it would leave the GPU idle
    # while the backward kernels are launched. Still before the optimizer step, so a non-finite
    # loss never reaches the weights.
    own = torch.cat(rows) if rows else torch.zeros(0, 4, device=device)
    return ctx.gather_rows(own, plan.counts).cpu()


def train_loop(
    backend,
    model,
    data: TrainingData,
    cfg: dict,
    scheme,
    seed: int,
    ckpt_dir=None,
    ctx: distributed.Context | None = None,
    fingerprint: str | None = None,
    info: dict | None = None,
    checkpoint_store=None,
):
    """Runs cfg['steps'] optimiser steps of the global batch; returns the per-sample log rows.

    With a multi-process ``ctx`` each rank trains on its share of the global batch and every
    rank returns the rows of the whole batch.
    """
    if backend.objective not in objectives.OBJECTIVES:
        raise ValueError(f"backend {backend.id}: unknown objective {backend.objective!r}")
    ctx = ctx or distributed.Context(device=distributed.pick_device(cfg.get("device", "auto")))
    device = ctx.device
    model.to(device)
    if "activation_checkpointing" in cfg:
        set_activation_checkpointing(model, bool(cfg["activation_checkpointing"]))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=float(cfg["lr"]), weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: lr_factor(cfg, k))
    start, log_rows = 0, []
    if ckpt_dir is not None:
        ckpt_dir = Path(ckpt_dir)
        start, log_rows = load_checkpoint(
            ckpt_dir, model, optimizer, scheduler, scheme, fingerprint
        )
        if start and ctx.is_main:
            print(f"resuming from step {start} ({ckpt_dir / 'last.pt'})", file=sys.stderr)
    steps, batch_size = int(cfg["steps"]), int(cfg["batch_size"])
    plan = ctx.plan(batch_size, cfg.get("micro_batch_size"))
    if getattr(scheme, "batch_level", False) and plan.accumulation > 1:
        raise ValueError(
            f"scheme {scheme.scheme_name} weighs each sample against the whole global batch, so "
            f"its predictions must all exist before any backward: train.micro_batch_size="
            f"{plan.micro_batch_size} splits a rank's share of {max(plan.counts)} samples; "
            "unset it or use more ranks"
        )
    if ctx.is_main and (plan.accumulation > 1 or plan.idle_ranks or ctx.distributed):
        print(f"batch plan: {plan.describe()}", file=sys.stderr)
        if plan.idle_ranks:
            print(
                f"note: {plan.idle_ranks} of {ctx.world_size} ranks have no sample of the global "
                f"batch of {batch_size}; they run zero-weight passes and speed nothing up",
                file=sys.stderr,
            )
    train_model = ctx.wrap(model)  # after the checkpoint: DDP starts from rank 0's weights
    sample_t = timestep_sampler(backend, cfg)
    every = int(cfg.get("checkpoint_every") or 0)
    model.train()
    progress = tqdm(
        range(start, steps),
        initial=start,
        total=steps,
        desc="train",
        unit="step",
        mininterval=2,
        disable=not ctx.is_main,
    )
    started = time.perf_counter()
    # closing() stops the loader's workers however the loop ends.
    with contextlib.closing(data.batches(batch_size, seed, start)) as batches:
        for step in progress:
            torch_rng = step_generator(seed, step)
            batch = next(batches)
            ids, x0, mask = batch.ids, batch.latents, batch.mask
            cond, cond_mask = batch.cond, batch.cond_mask
            t = sample_t(batch_size, torch_rng, mask.sum(-1))
            noise = torch.randn(x0.shape, generator=torch_rng)
            dropped = torch.rand(batch_size, generator=torch_rng) < float(cfg["cfg_dropout"])
            cond = torch.where(dropped.view(-1, 1, 1), torch.zeros_like(cond), cond)
            x_t, target = objectives.noisy_input(backend.objective, x0, noise, t)
            lr = optimizer.param_groups[0]["lr"]
            optimizer.zero_grad(set_to_none=True)
            stats = accumulate_gradients(
                backend,
                train_model,
                scheme,
                plan,
                ctx,
                (x_t, target, t, mask, cond, cond_mask),
                lambda: autocast(device, cfg),
            )
            finite = torch.isfinite(stats[:, [0, 3]]).all(dim=1)
            if not bool(finite.all()):
                bad = [ids[b] for b in torch.nonzero(~finite).flatten().tolist()]
                raise FloatingPointError(
                    f"loss is not finite at step {step}; samples {bad} "
                    f"(batch {ids}, per-sample loss {stats[:, 0].tolist()}, weights {stats[:, 3].tolist()})"
                )
            optimizer.step()
            scheduler.step()
            for b, sample_id in enumerate(ids):
                log_rows.append(
                    {
                        "step": step,
                        "sample_id": sample_id,
                        "t": float(t[b]),
                        "raw_loss": float(stats[b, 0]),
                        "H": float(stats[b, 1]),
                        "w": float(stats[b, 2]),
                        "applied_weight": float(stats[b, 3]),
                        "lr": float(np.float32(lr)),  # as the log stores it
                    }
                )
            progress.set_postfix(
                loss=f"{float((stats[:, 3] * stats[:, 0]).mean()):.4f}",
                w=f"{float(stats[:, 2].mean()):.3f}",
                refresh=False,
            )
            if ckpt_dir is not None and every and (step + 1) % every == 0:
                if ctx.is_main:
                    save_checkpoint(
                        ckpt_dir,
                        step + 1,
                        batch_size,
                        model,
                        optimizer,
                        scheduler,
                        scheme,
                        log_rows,
                        fingerprint,
                    )
                    progress.write(f"checkpoint: step {step + 1} -> {ckpt_dir / 'last.pt'}")
                    if checkpoint_store is not None:  # eisbach.checkpoint_store
                        checkpoint_store.push(ckpt_dir)
                ctx.barrier()
    progress.close()
    if info is not None:
        ran = steps - start
        info |= {
            "batch_plan": plan.describe(),
            "resumed_from_step": start,
            "steps_run": ran,
            "seconds_per_step": (time.perf_counter() - started) / ran if ran else None,
        }
    return log_rows


# --- outputs ----------------------------------------------------------------------------------
def spread_by_t(log: list[dict], bins: int = 5) -> list[dict]:
    """Mean, sd, min and max of H and w per t-bin: does the weight vary across samples at all?"""
    if not log:
        return []
    t = np.array([r["t"] for r in log])
    which = np.minimum((t * bins).astype(int), bins - 1)
    columns = {key: np.array([r[key] for r in log]) for key in ("H", "w", "applied_weight")}
    out = []
    for k in range(bins):
        sel = which == k
        if not sel.any():
            continue
        entry = {"t_lo": k / bins, "t_hi": (k + 1) / bins, "n": int(sel.sum())}
        for key, values in columns.items():
            v = values[sel]
            entry[key] = {
                "mean": float(v.mean()),
                "sd": float(v.std()),
                "min": float(v.min()),
                "max": float(v.max()),
            }
        out.append(entry)
    return out


def format_spread(spread: list[dict]) -> str:
    """The spread of H and w per t-bin as a text table for the training log."""
    lines = [
        "spread of H and w per t-bin (mean sd [min, max]):",
        f"{'t-bin':>9} {'n':>6}  {'H':^30}  {'w':^30}",
    ]
    for b in spread:
        cells = [
            f"{b[k]['mean']:.3f} {b[k]['sd']:.3f} [{b[k]['min']:.3f}, {b[k]['max']:.3f}]"
            for k in ("H", "w")
        ]
        lines.append(f"{b['t_lo']:.1f}-{b['t_hi']:.1f} {b['n']:>6}  {cells[0]:^30}  {cells[1]:^30}")
    return "\n".join(lines)


def write_run_outputs(out_dir: Path, log_rows, record: dict, stage_config: dict) -> None:
    log = pa.Table.from_pylist(log_rows, schema=LOG_SCHEMA)
    meta = provenance.parquet_metadata(stage_config, stage="train", run_id=record["run_id"])
    write_parquet(out_dir / "train_log.parquet", log.replace_schema_metadata(meta))
    spread = spread_by_t(log_rows)
    record = record | {
        "spread_by_t": spread,
        "mean_applied_weight": float(np.mean([r["applied_weight"] for r in log_rows])),
        "final_loss_mean_last_10pct": float(
            np.mean([r["raw_loss"] for r in log_rows[-max(1, len(log_rows) // 10) :]])
        ),
        "provenance": provenance.provenance(stage_config),
        "config": stage_config,
    }
    write_json(out_dir / "run.json", record)
    print(format_spread(spread))
    print(f"mean applied weight {record['mean_applied_weight']:.4f}")


def resume_fingerprint(stage_config: dict, base_sha256: str | None = None) -> str:
    """What a checkpoint must share with this run to be resumed: the configuration (threads and
    the checkpoint interval may differ), the base weights and the code of the package, since
    Snakemake reruns a job after a code change only when forced, and a forced rerun must not
    continue what the old code trained."""
    keyed = json.loads(json.dumps(stage_config))
    for section in ("train", "base"):
        if section in keyed:
            for key in ("threads", "checkpoint_every", "resources", "checkpoint_store"):
                keyed[section].pop(key, None)
    if base_sha256 is not None:
        keyed["base_weights"] = base_sha256
    keyed["code"] = provenance.code_digest()
    return provenance.config_hash(keyed)


def drop_checkpoints(ckpt_dir: Path | None) -> None:
    """A finished run keeps no checkpoint: its outputs are final, and a checkpoint left behind
    is what a later forced rerun would otherwise resume from."""
    if ckpt_dir is not None:
        shutil.rmtree(ckpt_dir, ignore_errors=True)


def link_pretrained_base(args, backend, backend_config) -> None:
    """Pretrained backends: the base is their checkpoint, linked (every key checked) by
    ``prepare_base``; the log of this "base run" is empty."""
    started = time.time()
    record = backend.prepare_base(args.out_dir)
    stage_config = {"backend": backend_config}
    meta = provenance.parquet_metadata(stage_config, stage="train", run_id=f"base-{backend.id}")
    empty = pa.Table.from_pylist([], schema=LOG_SCHEMA).replace_schema_metadata(meta)
    write_parquet(args.out_dir / "train_log.parquet", empty)
    # prepare_base has hashed the checkpoint already; a multi-GB file is not hashed twice.
    weights = record.get("model_safetensors_sha256") or sha256_cached(args.out_dir / BASE_WEIGHTS)
    run = {
        "run_id": f"base-{backend.id}",
        "kind": "base",
        WEIGHTS_KEY: {BASE_WEIGHTS: weights},
        "pretrained": record,
        "seconds": round(time.time() - started, 2),
        "spread_by_t": [],
        "provenance": provenance.provenance(stage_config),
        "config": stage_config,
    }
    write_json(args.out_dir / "run.json", run)
    print(f"base: the pretrained checkpoint of {backend.id} -> {args.out_dir}")


def pretrain_base(args, backend, backend_config, cfg, ctx) -> None:
    if getattr(backend, "has_pretrained_base", False):
        if ctx.is_main:
            link_pretrained_base(args, backend, backend_config)
        return
    seed = int(cfg["seed"])
    data = TrainingData(args.latents_dir, cfg.get("loader"))
    dit = backend.new_dit(seed)
    stage_config = {"backend": backend_config, "base": cfg}
    started = time.time()
    info: dict = {}
    ckpt_dir = args.out_dir / "checkpoints" if cfg.get("checkpoint_every") else None
    log_rows = train_loop(
        backend,
        dit,
        data,
        cfg,
        get_scheme("none"),
        seed,
        ckpt_dir,
        ctx,
        fingerprint=resume_fingerprint(stage_config),
        info=info,
    )
    if not ctx.is_main:
        return
    backend.save_dit(dit.cpu(), args.out_dir)
    record = {
        "run_id": f"base-{backend.id}",
        "kind": "base",
        WEIGHTS_KEY: weights_record(args.out_dir, [BASE_WEIGHTS]),
        "parameters": sum(p.numel() for p in dit.parameters()),
        "train_clips": data.num_rows,
        "seconds": round(time.time() - started, 2),
        "world_size": ctx.world_size,
        **info,
    }
    write_run_outputs(args.out_dir, log_rows, record, stage_config)
    drop_checkpoints(ckpt_dir)


def scheme_params(
    scheme_cfg: dict, adapter: dict, seed: int, backend, match_run=None
) -> tuple[dict, dict]:
    """(get_scheme keywords, what was resolved at run time) for one grid scheme entry."""
    name = scheme_cfg["name"]
    params = {k: v for k, v in scheme_cfg.items() if k != "name"}
    if name == "eisbach_shuffled":
        params.setdefault("seed", seed)
    if name == "min_snr":
        params.setdefault("objective", backend.objective)
    if name == "constant" and params.get("c") == "matched":
        if match_run is None:
            raise ValueError(
                "scheme constant with c: matched needs --match-run (the eisbach run.json)"
            )
        matched = json.loads(Path(match_run).read_text())
        expected = ({"name": "eisbach", "lam": float(params["lam"])}, adapter, seed)
        if (matched["scheme"], matched["adapter"], matched["seed"]) != expected:
            raise ValueError(
                f"{match_run}: is {matched['scheme']}, {matched['adapter']}, seed {matched['seed']}; "
                f"the matched control needs {expected}"
            )
        c = float(matched["mean_applied_weight"])
        return {"c": c}, {"c": c, "matched_run": matched["run_id"]}
    return params, {}


def weight_digest(model) -> dict[str, str]:
    """A digest of every frozen parameter, to show the base never changes."""
    return {
        n: hashlib.sha256(
            p.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
        ).hexdigest()
        for n, p in model.named_parameters()
        if not p.requires_grad
    }


def finetune(args, backend, backend_config, cfg, ctx, data: TrainingData | None = None) -> None:
    """One adapter run of the grid (args as parsed by ``main``; data defaults to the store's)."""
    scheme_cfg, adapter, seed = (
        json.loads(args.scheme_json),
        json.loads(args.adapter_json),
        args.seed,
    )
    rid = run_id(scheme_cfg, adapter, seed)
    out_dir: Path = args.out_dir
    params, resolved = scheme_params(scheme_cfg, adapter, seed, backend, args.match_run)
    scheme = get_scheme(scheme_cfg["name"], **params)
    if scheme_cfg["name"] == "constant" and ctx.is_main:
        print(
            "note: AdamW normalises a constant loss scale away (c only turns eps into eps / c), "
            "so this run trains nearly the run of `none`; it is no learning-rate control",
            file=sys.stderr,
        )
    data = data or TrainingData(args.latents_dir, cfg.get("loader"))
    base_sha256 = verify_weights(args.base_dir, [BASE_WEIGHTS], "pretrain_base")[BASE_WEIGHTS]
    dit = backend.load_dit(args.base_dir)
    base_load = dict(getattr(backend, "load_report", {}))  # that load's skipped keys
    modules, left_out = adapters.plan(dit, adapter, adapters.target_modules(backend, cfg, dit))
    if left_out and ctx.is_main:
        print(
            f"adapter: left out {sorted(left_out)} ({next(iter(left_out.values()))})",
            file=sys.stderr,
        )
    model = adapters.attach(dit, adapter, modules, seed)
    frozen_before = weight_digest(model)
    stage_config = {
        "backend": backend_config,
        "train": cfg,
        "scheme": scheme_cfg,
        "scheme_params": params,
        "adapter": adapter,
        "seed": seed,
    }
    started = time.time()
    info: dict = {}
    # checkpoints in object storage too (train.checkpoint_store): a preempted job resumes there
    store = checkpoint_store.from_config(cfg, rid)
    if store is not None and ctx.is_main and store.pull(out_dir / "checkpoints"):
        print(f"checkpoint from {store.url('last.pt')}", file=sys.stderr)
    ctx.barrier()
    log_rows = train_loop(
        backend,
        model,
        data,
        cfg,
        scheme,
        seed,
        out_dir / "checkpoints",
        ctx,
        fingerprint=resume_fingerprint(stage_config, base_sha256),
        info=info,
        checkpoint_store=store,
    )
    changed = [n for n, d in weight_digest(model).items() if frozen_before.get(n) != d]
    if changed:
        raise RuntimeError(f"base weights changed during adapter training: {changed[:5]}")
    if not ctx.is_main:
        return
    adapters.save(model, out_dir)
    seconds = round(time.time() - started, 2)
    scored = heldout.heldout_loss(
        backend,
        model,
        args.latents_dir,
        cfg.get("heldout", {}),
        ctx.device,
        autocast(ctx.device, cfg),
    )
    meta = provenance.parquet_metadata(stage_config, stage="train", run_id=rid)
    write_parquet(
        out_dir / "heldout_loss.parquet", heldout.table(scored).replace_schema_metadata(meta)
    )
    record = {
        "run_id": rid,
        "kind": "adapter",
        "scheme": scheme_cfg,
        "scheme_params": params,
        "resolved": resolved,
        "adapter": adapter,
        "seed": seed,
        "target_modules": modules,
        "target_modules_left_out": left_out,
        "base_load": base_load,
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "frozen_parameters": sum(p.numel() for p in model.parameters() if not p.requires_grad),
        "train_clips": data.num_rows,
        "seconds": seconds,
        "world_size": ctx.world_size,
        "device": str(ctx.device),
        "base": str(args.base_dir),
        "base_sha256": base_sha256,
        WEIGHTS_KEY: weights_record(out_dir, adapters.ADAPTER_FILES),
        "heldout": heldout.summarize(scored),
        **info,
    }
    write_run_outputs(out_dir, log_rows, record, stage_config)
    drop_checkpoints(out_dir / "checkpoints")
    if store is not None:
        store.drop()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", choices=["base", "adapter"])
    parser.add_argument("--latents-dir", type=Path, required=True)
    parser.add_argument("--backend-json", required=True)
    parser.add_argument("--train-json", required=True, help="the `base` or `train` section")
    parser.add_argument("--out-dir", type=Path, required=True)
    parser.add_argument("--base-dir", type=Path, help="adapter mode: the pretrained base")
    parser.add_argument("--scheme-json", help="adapter mode: one scheme of the expanded grid")
    parser.add_argument("--adapter-json", help="adapter mode: one entry of grid.adapters")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--match-run", type=Path, help="constant c: matched: run.json of the matching eisbach run"
    )
    args = parser.parse_args(argv)
    backend_config, cfg = json.loads(args.backend_json), json.loads(args.train_json)
    torch.set_num_threads(int(cfg.get("threads", torch.get_num_threads())))
    args.out_dir.mkdir(parents=True, exist_ok=True)
    ctx = distributed.init(cfg.get("device", "auto"))
    try:
        backend = get_backend(backend_config["name"], backend_config, args.latents_dir)
        if args.mode == "base":
            pretrain_base(args, backend, backend_config, cfg, ctx)
        else:
            finetune(args, backend, backend_config, cfg, ctx)
    finally:
        distributed.shutdown()


__all__ = ["TrainingData", "main", "run_id", "scheme_tag", "spread_by_t", "train_loop"]

if __name__ == "__main__":
    main(sys.argv[1:])
