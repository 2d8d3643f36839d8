"""Any world size: the global batch of the config on 1, 2, 3 and 8 gloo processes gives the
adapter of one process, to float tolerance (eisbach.distributed.BatchPlan, DDP).

A tiny DoRA fine-tune through ``eisbach.train.finetune`` on a real latent store, batch 4:
- 2 ranks with micro-batches of 1 (two accumulation steps per rank, DDP's no_sync);
- 3 ranks, launched by the ``torchrun`` executable on scripts/train.py as docs/cloud.md says
  (uneven shares 2 + 1 + 1);
- 8 ranks, more than the batch (four ranks idle at zero weight), with ``eisbach`` and with the
  batch-level ``eisbach_shuffled``, whose weights need the whole global batch.
Ranks other than the torchrun run are forked from this process, so that the eight of them do not
import torch and stable-audio-tools eight times on CI's two cores.
"""

import json
import multiprocessing
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import REPO, TINY_BACKEND, save_base, write_clip_store

from eisbach import distributed
from eisbach.distributed import BatchPlan

TRAIN = {
    "steps": 4,
    "batch_size": 4,
    "lr": 1e-3,
    "warmup_steps": 0,
    "cfg_dropout": 0.25,
    "threads": 1,
    "device": "cpu",
    "activation_checkpointing": False,
    "heldout": {"t": [0.5], "batch_size": 4},
}
ADAPTER = {"type": "dora", "rank": 4, "alpha": 4}
# the attention and feed-forward linears of the tiny DiT (a stable-audio-tools DiT)
TARGETS = ["to_qkv", "to_out", "to_q", "to_kv", "ff.ff.0.proj", "ff.ff.2"]
EISBACH = {"name": "eisbach", "lam": 0.5}
SHUFFLED = {"name": "eisbach_shuffled", "lam": 0.5}
CAPTIONS = ["a low organ drone", "a bright piano melody then strings", "a static marimba ostinato"]


def test_plan_deals_the_global_batch_out():
    assert BatchPlan(4, 1).counts == [4] and BatchPlan(4, 1).accumulation == 1
    three = BatchPlan(4, 3)
    assert three.counts == [2, 1, 1]
    assert [list(three.share(r)) for r in range(3)] == [[0, 1], [2], [3]]
    eight = BatchPlan(4, 8)
    assert eight.counts == [1, 1, 1, 1, 0, 0, 0, 0] and eight.idle_ranks == 4
    assert eight.micro_batches(5) == [] and eight.micro_batches(3) == [range(3, 4)]
    micro = BatchPlan(8, 2, micro_batch_size=3)
    assert micro.micro_batches(1) == [range(4, 7), range(7, 8)] and micro.accumulation == 2
    # every rank's micro-batches together are the global batch, each sample once
    for plan in (three, eight, micro, BatchPlan(5, 2, 2)):
        seen = [i for r in range(plan.world_size) for mb in plan.micro_batches(r) for i in mb]
        assert seen == list(range(plan.batch_size))
    with pytest.raises(ValueError, match="micro_batch_size=0"):
        BatchPlan(4, 2, 0)


def test_a_batch_level_scheme_refuses_split_shares(tmp_path):
    from eisbach.backends import get_backend
    from eisbach.train import TrainingData, train_loop
    from eisbach.weighting import get_scheme

    backend = get_backend("tiny", TINY_BACKEND, tmp_path / "latents")
    backend.build_text_encoder(CAPTIONS)
    write_clip_store(backend, tmp_path / "latents", CAPTIONS, [4000, 4800, 5600])
    data = TrainingData(tmp_path / "latents")
    with pytest.raises(ValueError, match="micro_batch_size=1 splits a rank's share of 4"):
        train_loop(
            backend,
            backend.new_dit(0),
            data,
            TRAIN | {"micro_batch_size": 1},
            get_scheme("eisbach_shuffled", lam=0.5),
            0,
        )


def run_args(root: Path, out: Path, scheme: dict) -> SimpleNamespace:
    return SimpleNamespace(
        scheme_json=json.dumps(scheme),
        adapter_json=json.dumps(ADAPTER),
        seed=0,
        out_dir=out,
        base_dir=root / "base",
        latents_dir=root / "latents",
        match_run=None,
    )


def rank_context(rank: int, world: int, port: int) -> distributed.Context:
    """torchrun's environment for a forked rank, then the real init."""
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    return distributed.init("cpu")


def rank_main(rank: int, world: int, port: int, root: Path, out: Path, scheme, cfg) -> None:
    """One forked rank of a finetune run."""
    from eisbach.backends import get_backend
    from eisbach.train import finetune

    ctx = rank_context(rank, world, port)
    try:
        backend = get_backend("tiny", TINY_BACKEND, root / "latents")
        out.mkdir(parents=True, exist_ok=True)
        finetune(run_args(root, out, scheme), backend, TINY_BACKEND, cfg, ctx)
    finally:
        distributed.shutdown()


def one_step_gradients(root: Path, ctx, scheme_cfg: dict, micro: int | None) -> dict:
    """The adapter's gradients after one step's accumulate_gradients on a real batch."""
    from eisbach import adapters
    from eisbach.backends import get_backend
    from eisbach.objectives import noisy_input
    from eisbach.train import TrainingData, accumulate_gradients
    from eisbach.weighting import get_scheme

    backend = get_backend("tiny", TINY_BACKEND, root / "latents")
    model = adapters.attach(backend.load_dit(root / "base"), ADAPTER, TARGETS, 0)
    with torch.no_grad():  # move lora_B off zero, so that every adapter weight has a gradient
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.1, generator=torch.Generator().manual_seed(len(name)))
    batch = next(TrainingData(root / "latents").batches(4, seed=0))
    g = torch.Generator().manual_seed(1)
    t = torch.rand(4, generator=g)
    x_t, target = noisy_input(
        backend.objective, batch.latents, torch.randn(batch.latents.shape, generator=g), t
    )
    scheme = get_scheme(scheme_cfg["name"], **{k: v for k, v in scheme_cfg.items() if k != "name"})
    accumulate_gradients(
        backend,
        ctx.wrap(model.train()),
        scheme,
        ctx.plan(4, micro),
        ctx,
        (x_t, target, t, batch.mask, batch.cond, batch.cond_mask),
        lambda: torch.autocast("cpu", enabled=False),
    )
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def gradient_main(rank: int, world: int, port: int, root: Path, out: Path, scheme, micro) -> None:
    ctx = rank_context(rank, world, port)
    try:
        grads = one_step_gradients(root, ctx, scheme, micro)
        torch.save(grads, out / f"grads-rank{rank}.pt")
    finally:
        distributed.shutdown()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def forked(world: int, root: Path, out: Path, scheme: dict, cfg, target=rank_main) -> None:
    context = multiprocessing.get_context("fork")
    port = free_port()
    procs = [
        context.Process(target=target, args=(r, world, port, root, out, scheme, cfg))
        for r in range(world)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    codes = [p.exitcode for p in procs]
    for p in procs:
        if p.is_alive():
            p.kill()
    assert codes == [0] * world, f"ranks of the {world}-process run exited with {codes}"


def torchrun(world: int, root: Path, out: Path, scheme: dict, cfg: dict) -> str:
    """docs/cloud.md's command: torchrun --standalone --nproc-per-node N scripts/train.py ..."""
    exe = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    assert exe, "the environment has no torchrun executable"
    cmd = [
        exe,
        "--standalone",
        f"--nproc-per-node={world}",
        "scripts/train.py",
        "adapter",
        "--latents-dir",
        root / "latents",
        "--backend-json",
        json.dumps(TINY_BACKEND),
        "--train-json",
        json.dumps(cfg),
        "--base-dir",
        root / "base",
        "--scheme-json",
        json.dumps(scheme),
        "--adapter-json",
        json.dumps(ADAPTER),
        "--seed",
        "0",
        "--out-dir",
        out,
    ]
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    result = subprocess.run(
        [str(c) for c in cmd], cwd=REPO, env=env, capture_output=True, text=True, timeout=400
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stderr


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A tiny base and a latent store of six padded clips (one of them in the eval split)."""
    from eisbach.backends import get_backend

    root = tmp_path_factory.mktemp("world")
    backend = get_backend("tiny", TINY_BACKEND, root / "latents")
    backend.build_text_encoder(CAPTIONS)
    save_base(backend, root / "base")
    lengths = [4000 + 800 * i for i in range(6)]  # padded batches
    write_clip_store(backend, root / "latents", CAPTIONS, lengths, eval_every=6)
    return root


@pytest.fixture(scope="module")
def runs(store):
    from eisbach.backends import get_backend
    from eisbach.train import finetune

    root = store
    backend = get_backend("tiny", TINY_BACKEND, root / "latents")
    torch.set_num_threads(1)
    for name, scheme in (("one", EISBACH), ("one_shuffled", SHUFFLED)):
        (root / name).mkdir()
        one = distributed.Context(device=torch.device("cpu"))
        finetune(run_args(root, root / name, scheme), backend, TINY_BACKEND, TRAIN, one)
    forked(2, root, root / "two", EISBACH, TRAIN | {"micro_batch_size": 1})
    forked(8, root, root / "eight", EISBACH, TRAIN)
    forked(8, root, root / "eight_shuffled", SHUFFLED, TRAIN)
    stderr = torchrun(3, root, root / "three", EISBACH, TRAIN)
    return root, stderr


def assert_same_adapter(a: Path, b: Path) -> None:
    from safetensors.torch import load_file

    one, other = (
        load_file(a / "adapter_model.safetensors"),
        load_file(b / "adapter_model.safetensors"),
    )
    assert one.keys() == other.keys()
    moved = 0
    for key in one:
        torch.testing.assert_close(other[key], one[key], rtol=1e-4, atol=1e-5, msg=key)
        moved += "lora_B" in key and bool(one[key].abs().max() > 0)
    assert moved, "the adapter never left its initialisation: the comparison proves nothing"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("run", "reference", "world", "plan"),
    [
        ("two", "one", 2, {"per_rank": [2, 2], "micro_batch_size": 1, "accumulation_steps": 2}),
        ("three", "one", 3, {"per_rank": [2, 1, 1], "accumulation_steps": 1}),
        ("eight", "one", 8, {"per_rank": [1] * 4 + [0] * 4, "idle_ranks": 4}),
        ("eight_shuffled", "one_shuffled", 8, {"idle_ranks": 4}),
    ],
)
def test_any_world_size_trains_the_one_process_adapter(runs, run, reference, world, plan):
    import numpy as np
    import pyarrow.parquet as pq

    root, _ = runs
    assert_same_adapter(root / reference, root / run)
    record = json.loads((root / run / "run.json").read_text())
    assert record["world_size"] == world
    assert record["batch_plan"]["global_batch"] == TRAIN["batch_size"]
    assert plan.items() <= record["batch_plan"].items()
    log_1 = pq.read_table(root / reference / "train_log.parquet").to_pylist()
    log_n = pq.read_table(root / run / "train_log.parquet").to_pylist()
    assert [(r["step"], r["sample_id"]) for r in log_n] == [
        (r["step"], r["sample_id"]) for r in log_1
    ]
    for column in ("t", "H", "w", "applied_weight", "raw_loss"):
        np.testing.assert_allclose(
            [r[column] for r in log_n], [r[column] for r in log_1], rtol=1e-4, atol=1e-6
        )


@pytest.mark.slow
def test_torchrun_launch_reports_its_plan(runs):
    _, stderr = runs
    assert "batch plan: {'global_batch': 4, 'world_size': 3, 'per_rank': [2, 1, 1]" in stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    ("world", "micro", "scheme"),
    [(2, 1, EISBACH), (3, None, EISBACH), (8, None, EISBACH), (8, None, SHUFFLED)],
)
def test_one_step_gradients_equal_one_process(store, tmp_path, world, micro, scheme):
    """The gradient itself, not only the AdamW update (which a uniform gradient scale would
    barely move): on every rank, after DDP's all-reduce, equal to one process's."""
    root = store
    torch.set_num_threads(1)
    reference = one_step_gradients(root, distributed.Context(), scheme, None)
    forked(world, root, tmp_path, scheme, micro, target=gradient_main)
    for rank in range(world):
        grads = torch.load(tmp_path / f"grads-rank{rank}.pt", weights_only=True)
        assert grads.keys() == reference.keys()
        for name, grad in reference.items():
            assert grad.abs().max() > 0, name
            torch.testing.assert_close(grads[name], grad, rtol=1e-4, atol=1e-7, msg=name)
