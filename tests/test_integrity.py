"""Integrity and reruns (issue 14): readers verify what they read, a finished run leaves no
checkpoint to resume, a forced rerun equals a fresh run, and identical audio hashes identically."""

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import TINY_BACKEND, save_base, write_clip_store

from eisbach import provenance, train
from eisbach.backends import get_backend
from eisbach.distributed import Context
from eisbach.integrity import IntegrityError, weights_record
from eisbach.latent_store import TEXT_FILE, LatentStream, TextTable, load_store
from eisbach.train import TrainingData, finetune

BACKEND = TINY_BACKEND
CAPTIONS = ["a low organ drone", "a bright piano melody then strings", "a static marimba ostinato"]
TRAIN = {
    "steps": 8,
    "batch_size": 2,
    "lr": 1e-3,
    "warmup_steps": 2,
    "cfg_dropout": 0.2,
    "checkpoint_every": 3,
    "threads": 1,
    "device": "cpu",
    "activation_checkpointing": False,
    "heldout": {"t": [0.3, 0.7], "batch_size": 4},
}


def flip(path: Path, at: float = 0.5, n: int = 8) -> None:
    """Inverts n bytes in the middle of a file (inside a data page for a shard)."""
    data = bytearray(path.read_bytes())
    start = int(len(data) * at)
    for i in range(start, start + n):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A latent store and a base with its run.json, as the latents and base rules leave them."""
    root = tmp_path_factory.mktemp("integrity")
    backend = get_backend("tiny", BACKEND, root / "latents")
    backend.build_text_encoder(CAPTIONS)
    save_base(backend, root / "base")
    lengths = [6000 + 700 * i for i in range(7)]
    write_clip_store(backend, root / "latents", CAPTIONS, lengths, eval_every=3, rows_per_shard=4)
    return root


def copy_of(root: Path, tmp_path: Path) -> Path:
    """A copy of the store and base to damage; the module's originals stay intact."""
    for name in ("latents", "base"):
        shutil.copytree(root / name, tmp_path / name)
    return tmp_path


def run_finetune(root: Path, out: Path, cfg: dict = TRAIN) -> None:
    args = SimpleNamespace(
        scheme_json=json.dumps({"name": "eisbach", "lam": 0.5}),
        adapter_json=json.dumps({"type": "dora", "rank": 2, "alpha": 2}),
        seed=0,
        out_dir=out,
        base_dir=root / "base",
        latents_dir=root / "latents",
        match_run=None,
    )
    out.mkdir(parents=True, exist_ok=True)
    backend = get_backend("tiny", BACKEND, root / "latents")
    finetune(args, backend, BACKEND, cfg, Context(device=torch.device("cpu")))


@pytest.fixture(scope="module")
def fresh(root, tmp_path_factory):
    out = tmp_path_factory.mktemp("fresh") / "run"
    run_finetune(root, out)
    return out


# --- reruns --------------------------------------------------------------------------------------
def test_a_finished_run_leaves_no_checkpoint_and_records_its_weights(fresh):
    assert not (fresh / "checkpoints").exists()
    run = json.loads((fresh / "run.json").read_text())
    assert run["weights"] == weights_record(
        fresh, ["adapter_model.safetensors", "adapter_config.json"]
    )
    assert run["resumed_from_step"] == 0


def test_forced_rerun_after_a_code_change_equals_a_fresh_run(
    root, fresh, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "run"
    # The old code: a run that left its last checkpoint behind (as the code before issue 14 did,
    # or a run killed after its last checkpoint), with different weights from a different seed.
    with monkeypatch.context() as patch:
        patch.setattr(provenance, "code_digest", lambda: "the-old-code")
        patch.setattr(train, "drop_checkpoints", lambda ckpt_dir: None)
        run_finetune(root, out, TRAIN | {"lr": 3e-3})
    assert (out / "checkpoints" / "last.pt").exists()
    assert (out / "adapter_model.safetensors").read_bytes() != (
        fresh / "adapter_model.safetensors"
    ).read_bytes()
    capsys.readouterr()

    run_finetune(root, out)  # the forced rerun, under the current code
    assert "not resuming" in capsys.readouterr().err
    assert (out / "adapter_model.safetensors").read_bytes() == (
        fresh / "adapter_model.safetensors"
    ).read_bytes()
    assert (out / "train_log.parquet").exists()
    import pyarrow.parquet as pq

    assert (
        pq.read_table(out / "train_log.parquet").to_pylist()
        == pq.read_table(fresh / "train_log.parquet").to_pylist()
    )
    assert not (out / "checkpoints").exists()


def test_the_resume_fingerprint_covers_the_code(monkeypatch):
    a = train.resume_fingerprint({"train": {"lr": 1}}, "abc")
    monkeypatch.setattr(provenance, "code_digest", lambda: "edited")
    assert train.resume_fingerprint({"train": {"lr": 1}}, "abc") != a


# --- integrity on read ---------------------------------------------------------------------------
def test_a_flipped_shard_stops_training_naming_file_and_rule(root, tmp_path):
    work = copy_of(root, tmp_path)
    shard = work / "latents" / "part-00001.parquet"
    flip(shard)
    with pytest.raises(IntegrityError, match=r"part-00001\.parquet.*sha256.*rule `latents`"):
        TrainingData(work / "latents")
    with pytest.raises(IntegrityError, match="part-00001"):
        load_store(work / "latents")
    with pytest.raises(IntegrityError, match="forcerun latents"):
        LatentStream(work / "latents", batch_size=2, split="eval")


def test_a_truncated_shard_is_named(root, tmp_path):
    work = copy_of(root, tmp_path)
    shard = work / "latents" / "part-00000.parquet"
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(IntegrityError, match=r"part-00000\.parquet.*latents_manifest\.json"):
        load_store(work / "latents")


def test_a_flipped_text_table_is_named(root, tmp_path):
    work = copy_of(root, tmp_path)
    flip(work / "latents" / TEXT_FILE)
    with pytest.raises(IntegrityError, match=r"text\.parquet.*rule `latents`"):
        TextTable(work / "latents")


def test_a_flipped_adapter_stops_sampling(root, fresh, tmp_path):
    from eisbach.sample import load_model

    run_dir = tmp_path / "run"
    shutil.copytree(fresh, run_dir)
    backend = get_backend("tiny", BACKEND, root / "latents")
    assert load_model(backend, root / "base", run_dir) is not None  # intact: loads
    flip(run_dir / "adapter_model.safetensors", at=0.8)
    with pytest.raises(
        IntegrityError, match=r"adapter_model\.safetensors.*run\.json.*rule `finetune`"
    ):
        load_model(backend, root / "base", run_dir)


def test_a_flipped_base_stops_finetune_and_sampling(root, tmp_path):
    from eisbach.sample import load_model

    work = copy_of(root, tmp_path)
    flip(work / "base" / "model.safetensors", at=0.7)
    backend = get_backend("tiny", BACKEND, work / "latents")
    with pytest.raises(IntegrityError, match=r"model\.safetensors.*rule `pretrain_base`"):
        load_model(backend, work / "base", None)
    with pytest.raises(IntegrityError, match="pretrain_base"):
        run_finetune(work, tmp_path / "out")
    (work / "base" / "run.json").unlink()
    with pytest.raises(IntegrityError, match=r"run\.json: missing"):
        load_model(backend, work / "base", None)


def test_a_flipped_wav_stops_the_latents_stage(tmp_path):
    from eisbach.atomic import write_wav
    from eisbach.latents import load_clip

    wav = tmp_path / "clip.wav"
    write_wav(wav, np.sin(np.arange(8000) / 5).astype(np.float32) * 0.3, 16000)
    sha = provenance.file_sha256(wav)
    assert load_clip(str(wav), sha, 16000, "manifest.parquet").shape == (8000,)
    flip(wav, at=0.6, n=4)
    with pytest.raises(IntegrityError, match=r"clip\.wav.*manifest\.parquet.*rule `data_shard`"):
        load_clip(str(wav), sha, 16000, "manifest.parquet")


def test_a_flipped_sample_or_reference_wav_stops_evaluate(tmp_path):
    from eisbach.atomic import write_wav
    from eisbach.evaluate import score_references, score_samples
    from eisbach.score_cache import ScoreCache

    wav = tmp_path / "piglet-s0.wav"
    write_wav(wav, np.sin(np.arange(16000) / 5).astype(np.float32) * 0.3, 16000)
    sha = provenance.file_sha256(wav)
    entry = {"run_id": "base-tiny", "prompt_id": "piglet", "seed": 0, "path": str(wav)}
    clip = {"id": "c0", "split": "train", "status": "ok", "path": str(wav), "sha256": sha}
    stats = {"scored": 0, "cached": 0}
    cache = ScoreCache(tmp_path / "cache")
    score_samples([entry | {"sha256": sha}], {}, cache, stats, "index.parquet")
    assert score_references([clip], cache, stats, "manifest.parquet")[0]["id"] == "c0"
    flip(wav, at=0.6, n=4)
    with pytest.raises(IntegrityError, match=r"piglet-s0\.wav.*index\.parquet.*`sample_run`"):
        score_samples([entry | {"sha256": sha}], {}, cache, stats, "index.parquet")
    with pytest.raises(IntegrityError, match=r"piglet-s0\.wav.*manifest\.parquet.*`data_shard`"):
        score_references([clip], cache, stats, "manifest.parquet")


# --- content hashes -----------------------------------------------------------------------------
def test_identical_audio_has_an_identical_sha256_across_runs_and_commits(tmp_path, monkeypatch):
    from eisbach.atomic import write_wav

    audio = np.sin(np.arange(4000) / 3).astype(np.float32) * 0.2
    digests = []
    for i, (epoch, commit) in enumerate([(1767225600, "aaa"), (1780272000, "bbb")]):
        monkeypatch.setenv("SOURCE_DATE_EPOCH", str(epoch))
        monkeypatch.setattr(provenance, "git_commit", lambda commit=commit: commit)
        assert provenance.provenance({"x": 1})["source_date_utc"].startswith(
            ("2026-01-01", "2026-06-01")
        )
        record = provenance.content_provenance({"x": 1})
        assert "source_date_utc" not in record and "git_commit" not in record
        write_wav(tmp_path / f"{i}.wav", audio, 16000, record)
        digests.append(provenance.file_sha256(tmp_path / f"{i}.wav"))
    assert digests[0] == digests[1]


def test_the_data_stage_rewrites_identical_clips_with_identical_sha256(tmp_path, monkeypatch):
    """A rerun of the demo's data stage, at another time and commit, changes no clip's sha256
    (so the latents stage re-encodes nothing)."""
    from eisbach.data import demo_rows

    config = {
        "demo": {"n_clips": 2, "seconds": 2.0, "seed": 0, "eval_fraction": 0.5},
        "validation": {"min_seconds": 1.0, "silence_rms_db": -60.0, "max_clipped_fraction": 0.01},
    }
    shas = []
    for month, (epoch, commit) in ((1, (1767225600, "aaa")), (7, (1782864000, "bbb"))):
        monkeypatch.setenv("SOURCE_DATE_EPOCH", str(epoch))
        monkeypatch.setattr(provenance, "git_commit", lambda commit=commit: commit)
        rows = demo_rows(config, tmp_path / f"audio-{month}", 16000)
        assert {r["status"] for r in rows} == {"ok"}
        shas.append([r["sha256"] for r in rows])
    assert shas[0] == shas[1]
