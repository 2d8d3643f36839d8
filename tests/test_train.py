"""The training loop: fixed seeds give identical weights, and a resumed run matches an unbroken one."""

import numpy as np
import pytest
import torch

from eisbach.backends import get_backend
from eisbach.latents import caption_key
from eisbach.train import TrainingData, run_id, spread_by_t, train_loop
from eisbach.weighting import get_scheme

BACKEND = {
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
CAPTIONS = ["a low organ drone", "a bright piano melody then strings", "a static marimba ostinato"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("tiny")
    backend = get_backend("tiny", BACKEND, workdir)
    backend.build_text_encoder(CAPTIONS)
    rng = np.random.default_rng(0)
    data = TrainingData.__new__(TrainingData)
    data.rows = []
    for i, caption in enumerate(CAPTIONS * 2):
        n = 16000 // 2 + 1000 * i  # different lengths, so batches are padded
        audio = (0.3 * np.sin(2 * np.pi * (220 + 50 * i) * np.arange(n) / 16000)).astype(np.float32)
        audio += 0.01 * rng.standard_normal(n).astype(np.float32)
        data.rows.append(
            {
                "id": f"c{i}",
                "latent": backend.encode_audio(audio, 16000),
                "caption_key": caption_key(caption),
            }
        )
    embeddings, masks = backend.encode_text(CAPTIONS)
    data.text = {caption_key(c): (e, m) for c, e, m in zip(CAPTIONS, embeddings, masks)}
    return backend, data


CFG = {
    "steps": 6,
    "batch_size": 3,
    "lr": 1e-3,
    "warmup_steps": 2,
    "cfg_dropout": 0.3,
    "checkpoint_every": 3,
}


def trained(backend, data, steps, ckpt_dir=None, scheme="eisbach"):
    torch.manual_seed(123)
    model = backend.new_dit(0)
    log = train_loop(
        backend, model, data, CFG | {"steps": steps}, get_scheme(scheme, lam=0.5), 0, ckpt_dir
    )
    return model, log


def test_fixed_seed_is_bitwise_reproducible(setup):
    backend, data = setup
    a, log_a = trained(backend, data, 4)
    b, log_b = trained(backend, data, 4)
    for (name, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(pa, pb), name
    assert log_a == log_b
    assert len(log_a) == 4 * 3


def test_resume_matches_an_unbroken_run(setup, tmp_path):
    backend, data = setup
    unbroken, log_unbroken = trained(backend, data, 6)
    trained(backend, data, 3, ckpt_dir=tmp_path)  # "killed" after the checkpoint at step 3
    assert (tmp_path / "last.pt").exists()
    resumed, log_resumed = trained(backend, data, 6, ckpt_dir=tmp_path)
    for (name, pa), (_, pb) in zip(unbroken.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(pa, pb), name
    assert [r["step"] for r in log_resumed] == [r["step"] for r in log_unbroken]


def test_log_rows_follow_eq5(setup):
    backend, data = setup
    _, log = trained(backend, data, 2)
    for row in log:
        assert 0 <= row["H"] <= 1 and 0 < row["w"] <= 1
        assert row["applied_weight"] == pytest.approx(0.5 + 0.5 * row["w"], abs=1e-6)
    spread = spread_by_t(log)
    assert sum(b["n"] for b in spread) == len(log)
    assert all(b["w"]["min"] <= b["w"]["mean"] <= b["w"]["max"] for b in spread)


def test_nan_loss_names_step_and_samples(setup):
    backend, data = setup
    model = backend.new_dit(0)
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    with pytest.raises(FloatingPointError, match=r"step 0; samples \['c"):
        train_loop(backend, model, data, CFG | {"steps": 1}, get_scheme("none"), 0)


def test_run_id_names_scheme_adapter_seed():
    adapter = {"type": "dora", "rank": 16, "alpha": 16}
    assert run_id({"name": "eisbach", "lam": 0.5}, adapter, 0) == "eisbach-l0.5_dora-r16_s0"
    assert run_id({"name": "none"}, adapter, 2) == "none_dora-r16_s2"


def test_decode_is_playable(setup):
    backend, data = setup
    latent = torch.from_numpy(data.rows[0]["latent"])[None]
    audio = backend.decode(latent)
    assert audio.shape[0] == 1 and np.isfinite(audio).all()
    assert 0.4 < np.abs(audio).max() <= 0.5 + 1e-6
