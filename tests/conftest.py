import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
# The tiny backend at its smallest: unit tests build it in a second.
TINY_BACKEND = {
    "name": "tiny",
    "sample_rate": 16000,
    "tiny": {
        "n_mels": 16,
        "n_fft": 256,
        "hop_length": 128,
        "latent_offset": -4.5,
        "latent_scale": 3.0,
        "griffin_lim_iters": 4,
        "max_text_tokens": 8,
        "cond_dim": 16,
        "text_seed": 7,
        "embed_dim": 32,
        "depth": 1,
        "num_heads": 1,
        "max_frames": 64,
    },
}

# The environment for a test's own `make -n`: under `make test`, the outer make's MAKEFLAGS and
# MAKELEVEL would make it print "Entering directory" lines and take the outer flags.
OWN_MAKE_ENV = {
    k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")
}

WORKFLOW_FILES = ("Snakefile", "workflow", "config", "scripts", "envs", "profiles")


def copy_workflow(dest: Path) -> Path:
    """A copy of the workflow in dest, so a test's results/ never touches the checkout's."""
    for name in WORKFLOW_FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name)
        else:
            shutil.copy2(src, dest / name)
    return dest


def run_snakemake(
    workdir: Path, *args: str, timeout: int = 1800, env: dict | None = None
) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO)) | (env or {})
    return subprocess.run(
        [*SNAKEMAKE, *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def paper_configfiles(workdir: Path, pretrained: str = "medium-base") -> list[str]:
    """--configfile arguments for the paper profile with a site file naming its weights (the
    paper profile leaves backend.pretrained empty, and the DAG refuses to build without it)."""
    (workdir / "site.yaml").write_text(f"backend:\n  pretrained: {pretrained}\n")
    return ["--configfile", "config/paper.yaml", "site.yaml"]


@pytest.fixture
def workflow_copy(tmp_path):
    return copy_workflow(tmp_path)


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory) -> Path:
    """The whole DAG on config/test.yaml, run once per test session (minutes on 2 cores).

    Tests read it; a test that changes it works on its own copy (shutil.copytree)."""
    workdir = copy_workflow(tmp_path_factory.mktemp("smoke"))
    result = run_snakemake(workdir, "--cores", "2", "--configfile", "config/test.yaml")
    assert result.returncode == 0, result.stderr[-5000:]
    return workdir


def training_music_players(workdir: Path) -> int:
    """The report's players of training music: each prompt's reference clips, shown in front
    of every sampling seed of that prompt."""
    import json

    import pyarrow.parquet as pq

    metrics = Path(workdir) / "results/metrics"
    refs = json.loads((metrics / "summary.json").read_text())["prompt_references"]
    seeds: dict[str, set] = {}
    for row in pq.read_table(metrics / "per_sample.parquet").to_pylist():
        seeds.setdefault(row["prompt_id"], set()).add(row["seed"])
    return sum(len(refs.get(pid, [])) * len(s) for pid, s in seeds.items())


def write_clip_store(
    backend, latents_dir: Path, captions: list[str], lengths: list[int], eval_every=0, **kw
):
    """A real latent store of noisy sine clips (one per length, captions in turn), encoded by
    ``backend``, with its text table: what the latents stage writes, in a second. With
    eval_every k, every k-th clip (c0, ck, ...) is in the eval split."""
    import numpy as np

    from eisbach.latent_store import StoreFormat, caption_key, text_table, write_store

    rng = np.random.default_rng(0)
    records = []
    for i, n in enumerate(lengths):
        audio = 0.3 * np.sin(2 * np.pi * (220 + 50 * i) * np.arange(n) / 16000)
        audio = (audio + 0.01 * rng.standard_normal(n)).astype(np.float32)
        records.append(
            {
                "id": f"c{i}",
                "split": "eval" if eval_every and i % eval_every == 0 else "train",
                "latent": backend.encode_audio(audio, 16000),
                "caption": captions[i % len(captions)],
                "seconds_start": 0.0,
                "seconds_total": n / 16000,
                "audio_sha256": f"{i:064x}",
            }
        )
    embeddings, masks = backend.encode_text(captions)
    text = text_table([(caption_key(c), c) for c in captions], embeddings, masks)
    fmt = StoreFormat(row_group_rows=kw.pop("row_group_rows", 64))
    write_store(latents_dir, records, fmt, text=text, **kw)
    return records


def adapter_run(scheme: dict, adapter: dict, seed: int) -> dict:
    """The fields of an adapter run's run.json that evaluate and controls read."""
    from eisbach.grid import run_id

    return {
        "run_id": run_id(scheme, adapter, seed),
        "kind": "adapter",
        "scheme": scheme,
        "adapter": adapter,
        "seed": seed,
    }


def save_base(backend, base_dir: Path, seed: int = 0) -> None:
    """A fresh tiny base with the run.json ``weights`` record that pretrain_base writes and
    that its readers (finetune, sample) verify the weights against."""
    import json

    from eisbach.integrity import weights_record

    backend.save_dit(backend.new_dit(seed), base_dir)
    weights = weights_record(base_dir, ["model.safetensors"])
    (base_dir / "run.json").write_text(json.dumps({"weights": weights}))


SHARED = REPO.parent / "shared"
SA3_WHEEL = SHARED / "wheels" / "stable_audio_3-0.1.0-py3-none-any.whl"


@pytest.fixture(scope="session")
def sa3(tmp_path_factory):
    """The stable_audio_3 wheel of the pinned commit, installed with --no-deps into a
    temporary folder on sys.path (never into the environment); yields that folder."""
    if not SHARED.exists():
        pytest.skip("../shared is absent, so there is no stable_audio_3 wheel to install")
    assert SA3_WHEEL.exists(), f"{SA3_WHEEL} is missing"
    target = tmp_path_factory.mktemp("sa3-site")
    uv = Path(sys.executable).with_name("uv")
    if uv.exists():
        cmd = [str(uv), "pip", "install", "--python", sys.executable]
    else:
        cmd = [sys.executable, "-m", "pip", "install", "--quiet"]
    subprocess.run([*cmd, "--no-deps", "--target", str(target), str(SA3_WHEEL)], check=True)
    sys.path.insert(0, str(target))
    yield target
    sys.path.remove(str(target))
