"""What verifying on read costs a run: the sha256 every job computes over the files it reads,
against the time of a run of the same DAG (issue 14 asks for at most 2 % of a demo run).

For the workflow's config (default config/config.yaml, the demo), each job's verified reads are:

  latents          every ok clip of the manifest (results/data/audio/*.wav)
  pretrain_base    the latent shards and the text table
  finetune         the shards, the text table and the base weights (one job per grid run)
  sample_run       the shards and the text table (its prompts and lengths), the base weights,
                   and the run's adapter files (one job per sampled run, and the base model's)

The clips, shards and text table are the run's own (results/ after its latents job). The base
and adapter files are the run's when it has written them, else built from the config at their
real size (a fresh tiny DiT and fresh peft adapters: their bytes differ, their sizes do not).
A file is hashed once per job (eisbach.integrity caches by inode, size and mtime); the script
hashes each distinct file ``--repeats`` times with the page cache warm, as the job that wrote
it leaves it, takes the median and sums over the DAG's jobs. The baseline: the run's wall time
and sum of job seconds from its Snakemake log when the run finished, or ``--baseline-s``.

    python benchmarks/integrity_overhead.py                   # after a demo run, in its folder
    python benchmarks/integrity_overhead.py --baseline-s 328  # against a measured demo time
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import yaml

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from demo_profile import parse_log  # noqa: E402

from eisbach.grid import expand_grid  # noqa: E402
from eisbach.latent_store import read_manifest  # noqa: E402
from eisbach.provenance import file_sha256  # noqa: E402

ADAPTER_FILES = ["adapter_model.safetensors", "adapter_config.json"]


def weights(config: dict, results: Path, scratch: Path) -> tuple[Path, dict[str, list[Path]]]:
    """(base weights, run_id -> adapter files): the run's, or built at their real size."""
    from eisbach import adapters
    from eisbach.backends import get_backend

    name = config["backend"]["name"]
    latents_dir = results / "latents" / name  # the backend's text encoder lives there
    runs = expand_grid(config["grid"])
    base = results / "base" / name / "model.safetensors"
    backend = None
    if not base.exists():
        backend = get_backend(name, config["backend"], latents_dir)
        backend.save_dit(backend.new_dit(0), scratch / "base")
        base = scratch / "base" / "model.safetensors"
    files = {}
    for rid, run in runs.items():
        folder = results / "runs" / rid
        if not all((folder / f).exists() for f in ADAPTER_FILES):
            backend = backend or get_backend(name, config["backend"], latents_dir)
            dit = backend.load_dit(base.parent)
            modules = adapters.target_modules(backend, config["train"], dit)
            folder = scratch / "runs" / rid
            folder.mkdir(parents=True)
            adapters.save(adapters.attach(dit, run["adapter"], modules, run["seed"]), folder)
        files[rid] = [folder / f for f in ADAPTER_FILES]
    return base, files


def verified_reads(config: dict, results: Path, scratch: Path) -> dict[str, list[list[Path]]]:
    """rule -> one list of verified files per job of that rule in the config's DAG."""
    latents_dir = results / "latents" / config["backend"]["name"]
    store = read_manifest(latents_dir)
    store_files = [latents_dir / s["path"] for s in store["shards"]]
    store_files.append(latents_dir / store["text"]["path"])
    manifest = pq.read_table(results / "data" / "manifest.parquet").to_pylist()
    wavs = [Path(r["path"]) for r in manifest if r["status"] == "ok"]
    wavs = [p if p.is_absolute() else results.parent / p for p in wavs]
    base, adapter_files = weights(config, results, scratch)
    sampled = [rid for rid, run in expand_grid(config["grid"]).items() if run["sample"]]
    return {
        "latents": [wavs],
        "pretrain_base": [store_files],
        "finetune": [[*store_files, base] for _ in adapter_files],
        "sample_run": [[*store_files, base]]
        + [[*store_files, base, *adapter_files[rid]] for rid in sampled],
    }


def hash_seconds(path: Path, repeats: int) -> float:
    file_sha256(path)  # warm the page cache, as the job that wrote it left it
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        file_sha256(path)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def baseline(workdir: Path, log: Path | None) -> dict:
    """Wall time and job seconds of the run in the newest (or given) Snakemake log."""
    log = log or max((workdir / ".snakemake/log").glob("*.snakemake.log"))
    jobs = [j for j in parse_log(log) if j["rule"] != "all"]
    if not jobs or any(j["seconds"] is None for j in jobs):
        raise SystemExit(f"{log}: the run did not finish; pass --baseline-s")
    wall = (max(j["end"] for j in jobs) - min(j["start"] for j in jobs)).total_seconds()
    return {"log": str(log), "wall_s": wall, "job_seconds": sum(j["seconds"] for j in jobs)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path.cwd())
    parser.add_argument("--configfile", type=Path, help="default <workdir>/config/config.yaml")
    parser.add_argument("--log", type=Path, help="the run's Snakemake log (default the newest)")
    parser.add_argument("--baseline-s", type=float, help="the run's seconds, instead of its log")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    config = yaml.safe_load(
        (args.configfile or args.workdir / "config" / "config.yaml").read_text()
    )
    if args.baseline_s:
        base = {"log": None, "wall_s": args.baseline_s, "job_seconds": None}
    else:
        base = baseline(args.workdir, args.log)

    with tempfile.TemporaryDirectory() as scratch:
        reads = verified_reads(config, args.workdir / "results", Path(scratch))
        distinct = {p for per_job in reads.values() for files in per_job for p in files}
        seconds = {p: hash_seconds(p, args.repeats) for p in sorted(distinct)}
        by_rule = {
            rule: {
                "jobs": len(per_job),
                "files_per_job": max((len(f) for f in per_job), default=0),
                "mib": sum(p.stat().st_size for f in per_job for p in f) / 2**20,
                "seconds": sum(seconds[p] for f in per_job for p in f),
            }
            for rule, per_job in reads.items()
        }
    total = sum(r["seconds"] for r in by_rule.values())
    out = base | {"verify_s": total, "ratio_to_wall": total / base["wall_s"], "by_rule": by_rule}
    print(f"{'rule':<14} {'jobs':>5} {'files/job':>9} {'MiB':>8} {'sha256 s':>9}")
    for rule, r in by_rule.items():
        print(
            f"{rule:<14} {r['jobs']:>5} {r['files_per_job']:>9} {r['mib']:>8.2f} "
            f"{r['seconds']:>9.4f}"
        )
    line = f"verification {total:.3f} s against {base['wall_s']:.0f} s of the run's wall time"
    line += f" ({100 * total / base['wall_s']:.3f} %)"
    if base["job_seconds"]:
        out["ratio_to_job_seconds"] = total / base["job_seconds"]
        line += f", {base['job_seconds']:.0f} s of job time"
        line += f" ({100 * total / base['job_seconds']:.3f} %)"
    print(line)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=str) + "\n")
    return out


if __name__ == "__main__":
    main()
