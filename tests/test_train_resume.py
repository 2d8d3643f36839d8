"""Exact resume after SIGKILL, 2-process (gloo) data parallelism, and adapter merging.

This file is also the training entry its tests launch (``python tests/test_train_resume.py``,
alone or under torchrun): a tiny DoRA fine-tune through ``eisbach.train.finetune`` on a real
latent store streamed through DataLoader workers, writing peft safetensors, checkpoints, the log
and run.json.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script
    sys.path.insert(0, str(REPO))

from conftest import TINY_BACKEND, save_base, write_clip_store  # noqa: E402

from eisbach import distributed  # noqa: E402
from eisbach.backends import get_backend  # noqa: E402
from eisbach.train import finetune  # noqa: E402

pytestmark = pytest.mark.slow

BACKEND = TINY_BACKEND
TRAIN = {
    "steps": 60,
    "batch_size": 4,
    "lr": 1e-3,
    "warmup_steps": 5,
    "cfg_dropout": 0.2,
    "checkpoint_every": 10,
    "threads": 1,
    "device": "cpu",
    "activation_checkpointing": False,
    # Two DataLoader workers read the store's shards (2 rows per row group), in every process.
    "loader": {"workers": 2, "shuffle_row_groups": 2},
}
SCHEME = {"name": "eisbach", "lam": 0.5}
ADAPTER = {"type": "dora", "rank": 4, "alpha": 4}
CAPTIONS = ["a low organ drone", "a bright piano melody then strings", "a static marimba ostinato"]


def worker(argv=None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--checkpoint-store", help="train.checkpoint_store (tests/test_s3_storage.py)"
    )
    args = parser.parse_args(argv)
    cfg = TRAIN | ({"checkpoint_store": args.checkpoint_store} if args.checkpoint_store else {})
    torch.set_num_threads(1)
    ctx = distributed.init("cpu")
    try:
        backend = get_backend("tiny", BACKEND, args.root / "latents")
        run_args = SimpleNamespace(
            scheme_json=json.dumps(SCHEME),
            adapter_json=json.dumps(ADAPTER),
            seed=0,
            out_dir=args.out,
            base_dir=args.root / "base",
            latents_dir=args.root / "latents",
            match_run=None,
        )
        args.out.mkdir(parents=True, exist_ok=True)
        finetune(run_args, backend, BACKEND, cfg, ctx)
    finally:
        distributed.shutdown()


def launch(root: Path, out: Path, torchrun: int = 0) -> subprocess.Popen:
    prefix = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={torchrun}"]
    cmd = [sys.executable, *(prefix if torchrun else []), __file__, "--root", root, "--out", out]
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return subprocess.Popen(
        [str(c) for c in cmd], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def finish(proc: subprocess.Popen, timeout: int = 400) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-4000:]
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """An uninterrupted run, a run killed with SIGKILL after its first checkpoint and then
    resumed, and the same run on 2 gloo processes (half the global batch each)."""
    root = tmp_path_factory.mktemp("resume")
    backend = get_backend("tiny", BACKEND, root / "latents")
    backend.build_text_encoder(CAPTIONS)
    save_base(backend, root / "base")
    lengths = [4000 + 800 * i for i in range(6)]  # padded batches
    write_clip_store(
        backend, root / "latents", CAPTIONS, lengths, rows_per_shard=4, row_group_rows=2
    )

    full = launch(root, root / "full")
    victim = launch(root, root / "killed")
    checkpoint = root / "killed" / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 300
    while not checkpoint.exists():
        if victim.poll() is not None:
            pytest.fail("the run ended before its first checkpoint:\n" + victim.stdout.read())
        assert time.monotonic() < deadline, "no checkpoint after 300 s"
        time.sleep(0.005)
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=60)
    killed = {
        "returncode": victim.returncode,
        "step": int(torch.load(checkpoint, weights_only=True)["step"]),
        "finished": (root / "killed" / "adapter_model.safetensors").exists(),
    }
    resumed = launch(root, root / "killed")
    ddp = launch(root, root / "ddp", torchrun=2)
    return {
        "root": root,
        "killed": killed,
        "full_out": finish(full),
        "resumed_out": finish(resumed),
        "ddp_out": finish(ddp),
    }


def test_sigkill_then_resume_is_bitwise_equal(runs):
    import pyarrow.parquet as pq

    root, killed = runs["root"], runs["killed"]
    assert killed["returncode"] == -signal.SIGKILL
    assert not killed["finished"], "the run finished before the kill"
    assert 0 < killed["step"] < TRAIN["steps"]
    assert f"resuming from step {killed['step']}" in runs["resumed_out"]
    a = (root / "full" / "adapter_model.safetensors").read_bytes()
    b = (root / "killed" / "adapter_model.safetensors").read_bytes()
    assert a == b, "the resumed adapter differs from the uninterrupted one"
    log_a = pq.read_table(root / "full" / "train_log.parquet").to_pylist()
    log_b = pq.read_table(root / "killed" / "train_log.parquet").to_pylist()
    assert log_a == log_b and len(log_a) == TRAIN["steps"] * TRAIN["batch_size"]
    run = json.loads((root / "killed" / "run.json").read_text())
    assert run["resumed_from_step"] == killed["step"]


def test_two_gloo_processes_match_one(runs):
    import pyarrow.parquet as pq
    from safetensors.torch import load_file

    root = runs["root"]
    one = load_file(root / "full" / "adapter_model.safetensors")
    two = load_file(root / "ddp" / "adapter_model.safetensors")
    assert one.keys() == two.keys()
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=1e-5, msg=key)
    run = json.loads((root / "ddp" / "run.json").read_text())
    assert run["world_size"] == 2
    log_1 = pq.read_table(root / "full" / "train_log.parquet").to_pylist()
    log_2 = pq.read_table(root / "ddp" / "train_log.parquet").to_pylist()
    assert [(r["step"], r["sample_id"]) for r in log_1] == [
        (r["step"], r["sample_id"]) for r in log_2
    ]
    # weights were computed per rank from that rank's predictions, and still agree
    for column in ("t", "H", "w", "applied_weight", "raw_loss"):
        np.testing.assert_allclose(
            [r[column] for r in log_2], [r[column] for r in log_1], rtol=1e-3, atol=1e-5
        )


def test_adapter_reloads_with_peft_and_merges(runs):
    from eisbach.adapters import load

    root = runs["root"]
    backend = get_backend("tiny", BACKEND, root / "latents")
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 16, 40, generator=generator)
    t = torch.tensor([0.3, 0.8])
    cond = torch.randn(2, 8, 16, generator=generator)
    cond_mask = torch.ones(2, 8, dtype=torch.bool)
    outputs = {}
    for name, kind in (("base", None), ("peft", False), ("merged", True)):
        dit = backend.load_dit(root / "base")
        model = dit if kind is None else load(dit, root / "full", merge=kind)
        with torch.no_grad():
            outputs[name] = backend.dit_forward(model.eval(), x, t, cond, cond_mask)
        if kind:
            assert not any("lora_" in n for n, _ in model.named_parameters())
    torch.testing.assert_close(outputs["merged"], outputs["peft"], rtol=1e-4, atol=1e-5)
    assert not torch.allclose(outputs["peft"], outputs["base"], atol=1e-4), "the adapter is a no-op"


if __name__ == "__main__":
    worker(sys.argv[1:])
