"""Sample stage: fixed-seed generation for one run (or the base model) and its index.

The initial noise of (prompt, seed) is the same in every run, so runs are compared on paired
samples: any difference comes from the weights, not from the draw.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from eisbach import provenance
from eisbach.adapters import ADAPTER_FILES
from eisbach.atomic import write_parquet, write_wav
from eisbach.backends import get_backend
from eisbach.integrity import verify_weights
from eisbach.latents import load_latents
from eisbach.provenance import file_sha256

INDEX_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("prompt_id", pa.string()),
        ("prompt", pa.string()),
        ("seed", pa.int64()),
        ("duration", pa.float64()),
        ("sample_rate", pa.int32()),
        ("path", pa.string()),
        ("sha256", pa.string()),  # of the WAV, for its readers to verify
    ]
)


def prompt_list(sample_config: dict, latents_dir) -> list[dict]:
    """The named prompts, then the captions of the first eval clips (by id)."""
    prompts = [dict(p) for p in sample_config["prompts"]]
    n_captions = int(sample_config["captions_from_eval"])
    if n_captions:
        eval_rows = sorted(load_latents(latents_dir, split="eval"), key=lambda r: r["id"])
        if len(eval_rows) < n_captions:
            raise ValueError(
                f"sample.captions_from_eval={n_captions} but the eval split has {len(eval_rows)} clips"
            )
        prompts += [{"id": f"cap-{r['id']}", "text": r["caption"]} for r in eval_rows[:n_captions]]
    return prompts


def initial_noise(prompt_id: str, seed: int, shape: tuple[int, int]) -> torch.Tensor:
    key = int.from_bytes(hashlib.sha256(f"{prompt_id}/{seed}".encode()).digest()[:7], "big")
    return torch.randn((1, *shape), generator=torch.Generator().manual_seed(key))


def load_model(backend, base_dir, run_dir):
    """The base DiT, with the adapter of run_dir when given; both verified against the sha256
    their run.json records before anything is loaded."""
    verify_weights(base_dir, ["model.safetensors"], "pretrain_base")
    if run_dir is not None:
        verify_weights(run_dir, ADAPTER_FILES, "finetune")
    dit = backend.load_dit(base_dir)
    if run_dir is None:
        return dit.eval()
    from peft import PeftModel

    return PeftModel.from_pretrained(dit, str(run_dir)).eval()


def generate(args, sample_config: dict, backend_config: dict) -> pa.Table:
    backend = get_backend(backend_config["name"], backend_config, args.latents_dir)
    model = load_model(backend, args.base_dir, args.run_dir)
    prompts = prompt_list(sample_config, args.latents_dir)
    frames = int(np.median([r["n_frames"] for r in load_latents(args.latents_dir)]))
    seeds = [int(s) for s in sample_config["seeds"]]
    jobs = [(p, s) for p in prompts for s in seeds]

    embeddings, masks = backend.encode_text([p["text"] for p, _ in jobs])
    # Stable Audio 3 generates with headroom past the duration and a padding mask over it;
    # other backends generate exactly the frames asked for.
    total, valid = backend.generation_frames(frames)
    noise = torch.cat(
        [initial_noise(p["id"], s, (backend.latent_channels, total)) for p, s in jobs]
    )
    extra = {}
    if (total, valid) != (frames, frames):
        extra = {
            "mask": (torch.arange(total) < valid).expand(len(jobs), total),
            "seconds_total": frames / backend.latent_rate,
            "schedule_frames": frames,
        }
    latents = backend.sample(
        model,
        noise,
        torch.from_numpy(embeddings),
        torch.from_numpy(masks),
        steps=int(sample_config["steps"]),
        cfg_scale=float(sample_config["cfg_scale"]),
        **extra,
    )
    audio = backend.decode(latents)
    if extra:  # the duration asked for, as generate() truncates its output
        audio = audio[:, : round(frames * backend.sample_rate / backend.latent_rate)]
    stage_config = {"sample": sample_config, "backend": backend_config, "run_id": args.run_id}
    sample_provenance = provenance.content_provenance(stage_config)
    rows = []
    for (prompt, seed), clip in zip(jobs, audio, strict=True):
        path = args.out_dir / f"{prompt['id']}-s{seed}.wav"
        write_wav(path, clip, backend.sample_rate, sample_provenance)
        rows.append(
            {
                "run_id": args.run_id,
                "prompt_id": prompt["id"],
                "prompt": prompt["text"],
                "seed": seed,
                "duration": len(clip) / backend.sample_rate,
                "sample_rate": backend.sample_rate,
                "path": str(path),
                "sha256": file_sha256(path),
            }
        )
    table = pa.Table.from_pylist(rows, schema=INDEX_SCHEMA)
    return table.replace_schema_metadata(provenance.parquet_metadata(stage_config, stage="sample"))


def gather(index_paths: list[Path], out: Path) -> pa.Table:
    tables = [pq.read_table(p) for p in index_paths]
    table = pa.concat_tables([t.replace_schema_metadata(None) for t in tables])
    meta = provenance.parquet_metadata(
        {"runs": sorted({str(p) for p in index_paths})}, stage="sample"
    )
    write_parquet(out, table.replace_schema_metadata(meta))
    return table


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="generate the samples of one run")
    run.add_argument("--run-id", required=True)
    run.add_argument("--run-dir", type=Path, help="adapter folder; omit for the base model")
    run.add_argument("--base-dir", type=Path, required=True)
    run.add_argument("--latents-dir", type=Path, required=True)
    run.add_argument("--sample-json", required=True)
    run.add_argument("--backend-json", required=True)
    run.add_argument("--out-dir", type=Path, required=True)
    join = sub.add_parser("gather", help="concatenate the per-run indexes")
    join.add_argument("indexes", type=Path, nargs="+")
    join.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    if args.command == "gather":
        table = gather(args.indexes, args.out)
        print(f"samples: {table.num_rows} in {len(args.indexes)} runs -> {args.out}")
        return
    sample_config = json.loads(args.sample_json)
    torch.set_num_threads(int(sample_config["threads"]))
    args.out_dir.mkdir(parents=True, exist_ok=True)
    table = generate(args, sample_config, json.loads(args.backend_json))
    write_parquet(args.out_dir / "index.parquet", table)
    print(f"samples: {table.num_rows} for {args.run_id} -> {args.out_dir}")
