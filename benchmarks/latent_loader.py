"""Latent loading throughput: stable-audio-tools' pre-encoded layout against the Parquet store.

Writes the same N latents [C, T] (seeded Gaussian noise, float32, like VAE latents nearly
incompressible) twice, or more:

  sat        stable-audio-tools' pre_encode layout: one <name>.npy ([C, T]) and one <name>.json
             (seconds_start, seconds_total, padding_mask at latent rate, prompt, path) per clip,
             in nested folders; read by stable_audio_tools' own PreEncodedDataset through a
             DataLoader(batch_size, shuffle=True, collate_fn=collation_fn, drop_last=True), as its
             create_dataloader_from_config builds it (pin_memory off: no GPU here)
  <column>-<compression>[-float16]
             this project's store (eisbach.latent_store), rows_per_shard rows per shard, read by
             LatentStream + make_loader (whole batches made in the workers, batch_size=None)

Both are read through DataLoaders with the same number of workers, persistent as
stable-audio-tools configures them (an untimed first pass starts them and warms the page cache);
every timed pass is one epoch and touches every batch. Passes of the
layouts are interleaved, so that load from other processes on the machine hits all alike; the
median samples/s of the passes is reported, with the ratio to `sat`.

    python benchmarks/latent_loader.py                      # 5,000 x [64, 256], 2 workers
    python benchmarks/latent_loader.py --workers 0,2 --n 2000 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from eisbach.latent_store import LatentStream, StoreFormat, make_loader, write_store

CAPTIONS = ["a bright piano melody", "a low organ drone", "fast drums and bass", "strings swell"]


def latent(seed: int, index: int, channels: int, frames: int) -> np.ndarray:
    rng = np.random.default_rng([seed, index])
    return rng.standard_normal((channels, frames), dtype=np.float32)


def write_sat(root: Path, n: int, channels: int, frames: int, seed: int, per_dir: int = 1000):
    """One .npy + .json per clip, in folders of per_dir clips (like pre_encode's per-batch dirs)."""
    for i in range(n):
        folder = root / "0" / f"{i // per_dir:05d}"
        if i % per_dir == 0:
            folder.mkdir(parents=True, exist_ok=True)
        name = f"{i:08d}"
        np.save(folder / f"{name}.npy", latent(seed, i, channels, frames))
        info = {
            "path": f"/data/audio/clip{i:05d}.wav",
            "relpath": f"clip{i:05d}.wav",
            "seconds_start": 0.0,
            "seconds_total": 10.0,
            "padding_mask": [1] * frames,
            "prompt": CAPTIONS[i % len(CAPTIONS)],
        }
        (folder / f"{name}.json").write_text(json.dumps(info))


def write_parquet_store(root: Path, fmt: StoreFormat, n, channels, frames, seed, rows_per_shard):
    records = [
        {
            "id": f"{i:08d}",
            "split": "train",
            "latent": latent(seed, i, channels, frames),
            "caption": CAPTIONS[i % len(CAPTIONS)],
            "seconds_start": 0.0,
            "seconds_total": 10.0,
            "audio_sha256": "0" * 64,
        }
        for i in range(n)
    ]
    write_store(root, records, fmt, rows_per_shard)


def folder_stats(root: Path) -> tuple[int, int]:
    files = [p for p in root.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def sat_loader(root: Path, batch_size: int, workers: int, seed: int):
    from stable_audio_tools.data.dataset import (
        LocalDatasetConfig,
        PreEncodedDataset,
        collation_fn,
    )

    dataset = PreEncodedDataset([LocalDatasetConfig(id="bench", path=str(root))])
    return torch.utils.data.DataLoader(
        dataset,
        batch_size,
        shuffle=True,
        num_workers=workers,
        drop_last=True,
        collate_fn=collation_fn,
        persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(seed),
    )


def store_loader(root: Path, batch_size: int, workers: int, seed: int, shuffle_row_groups: int):
    stream = LatentStream(
        root,
        batch_size=batch_size,
        split=None,
        seed=seed,
        shuffle_row_groups=shuffle_row_groups,
        epochs=1,
        drop_last=True,
    )
    return make_loader(stream, num_workers=workers, persistent_workers=workers > 0)


def timed_pass(loader) -> tuple[int, float]:
    started = time.perf_counter()
    samples = 0
    checksum = 0.0
    for batch in loader:
        x = batch[0] if isinstance(batch, list) else batch.latents
        checksum += float(x[:, 0, 0].sum())  # touch every batch
        samples += x.shape[0]
    return samples, time.perf_counter() - started


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000, help="latents")
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--frames", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", default="2", help="DataLoader workers, comma-separated")
    parser.add_argument("--rows-per-shard", type=int, default=256)
    parser.add_argument("--row-group-rows", type=int, default=64)
    parser.add_argument("--shuffle-row-groups", type=int, default=8)
    parser.add_argument(
        "--stores",
        default="list-zstd,list-none,binary-zstd,binary-none",
        help="store variants <column>-<compression>[-float16], comma-separated",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per layout")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, help="default: a temporary folder, removed")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="latent-bench-"))
    shape = (args.channels, args.frames)
    layouts = {}
    try:
        started = time.perf_counter()
        write_sat(workdir / "sat", args.n, *shape, args.seed)
        layouts["sat"] = {"root": workdir / "sat", "write_s": time.perf_counter() - started}
        for variant in args.stores.split(","):
            column, compression, *rest = variant.split("-")
            fmt = StoreFormat(
                dtype=rest[0] if rest else "float32",
                compression=compression,
                column=column,
                row_group_rows=args.row_group_rows,
            )
            started = time.perf_counter()
            write_parquet_store(
                workdir / variant, fmt, args.n, *shape, args.seed, args.rows_per_shard
            )
            layouts[variant] = {"root": workdir / variant, "write_s": time.perf_counter() - started}
        for info in layouts.values():
            info["files"], info["bytes"] = folder_stats(info["root"])

        results = {
            "n": args.n,
            "shape": list(shape),
            "batch_size": args.batch_size,
            "rows_per_shard": args.rows_per_shard,
            "row_group_rows": args.row_group_rows,
            "cpus": os.cpu_count(),
            "runs": [],
        }
        for workers in [int(w) for w in args.workers.split(",")]:
            loaders = {
                name: (
                    sat_loader(info["root"], args.batch_size, workers, args.seed)
                    if name == "sat"
                    else store_loader(
                        info["root"], args.batch_size, workers, args.seed, args.shuffle_row_groups
                    )
                )
                for name, info in layouts.items()
            }
            for loader in loaders.values():  # warm-up: imports, page cache
                timed_pass(loader)
            rates = {name: [] for name in loaders}
            for _ in range(args.repeats):
                for name, loader in loaders.items():
                    samples, seconds = timed_pass(loader)
                    rates[name].append(samples / seconds)
            base = statistics.median(rates["sat"])
            for name, values in rates.items():
                median = statistics.median(values)
                results["runs"].append(
                    {
                        "workers": workers,
                        "layout": name,
                        "samples_per_s": round(median, 1),
                        "min": round(min(values), 1),
                        "max": round(max(values), 1),
                        "ratio": round(median / base, 2),
                        "files": layouts[name]["files"],
                        "mib": round(layouts[name]["bytes"] / 2**20, 1),
                        "write_s": round(layouts[name]["write_s"], 2),
                    }
                )
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)

    print(
        f"{args.n} latents x {list(shape)} float32, batch {args.batch_size}, "
        f"{args.rows_per_shard} rows/shard, {os.cpu_count()} CPUs, median of {args.repeats} passes"
    )
    header = f"{'workers':>7} {'layout':<22} {'samples/s':>10} {'(min-max)':>17} {'ratio':>6} {'files':>6} {'MiB':>7} {'write s':>8}"
    print(header)
    for r in results["runs"]:
        print(
            f"{r['workers']:>7} {r['layout']:<22} {r['samples_per_s']:>10.0f} "
            f"{r['min']:>8.0f}-{r['max']:<8.0f} {r['ratio']:>6.2f} {r['files']:>6} "
            f"{r['mib']:>7.1f} {r['write_s']:>8.2f}"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
