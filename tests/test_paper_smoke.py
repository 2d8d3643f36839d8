"""config/paper-smoke.yaml end to end: the paper DAG's code path on CPU.

The stable-audio-3 backend on a Medium-shaped Stable Audio 3 model (the package's own classes,
narrow, random weights) saved as a local model folder with its tiny T5Gemma; stereo clips in
local MusicCaps mode, named by the first real ytids of the MusicCaps CSV; DoRA with Stable
Audio 3 LoRA's sampler; samples, evaluate and the report. What it proves and what it does not:
README, "The paper path on CPU".

Skips only when ../shared is absent (no wheel, no CSV, no recordings).
"""

import json
import os

import pyarrow.parquet as pq
import pytest
import soundfile as sf
from conftest import REPO, SHARED, copy_workflow, run_snakemake

from eisbach import paper_smoke

pytestmark = pytest.mark.slow
RUNS = ["none_dora-r4_s0", "none_dora-r4_s1", "eisbach-l0.5_dora-r4_s0", "eisbach-l0.5_dora-r4_s1"]


@pytest.fixture(scope="module")
def paper_smoke_run(sa3, tmp_path_factory):
    csv_path, music = SHARED / "data" / "musiccaps-public.csv", SHARED / "data" / "music"
    workdir = copy_workflow(tmp_path_factory.mktemp("paper-smoke"))
    env_path = os.pathsep.join([str(REPO), str(sa3)])
    sources = {"musiccaps_csv": str(csv_path), "music_dir": str(music)}
    result = run_snakemake(
        workdir,
        "--cores",
        "2",
        "--configfile",
        "config/paper-smoke.yaml",
        "--config",
        f"paper_smoke={json.dumps(sources)}",  # the copy's ../shared is elsewhere
        env={"PYTHONPATH": env_path},
    )
    assert result.returncode == 0, result.stderr[-6000:]
    return workdir


def test_clips_are_real_ytids_in_stereo(paper_smoke_run):
    rows = pq.read_table(paper_smoke_run / "results/data/manifest.parquet").to_pylist()
    first = [r["ytid"] for r in paper_smoke.first_rows(SHARED / "data/musiccaps-public.csv", 9)]
    assert [r["ytid"] for r in rows] == first
    assert {r["status"] for r in rows} == {"ok"} and {r["source"] for r in rows} == {"local"}
    assert sorted({r["split"] for r in rows}) == ["eval", "train"]
    audio, rate = sf.read(paper_smoke_run / rows[0]["path"], always_2d=True)
    assert rate == 44100 and audio.shape[1] == 2
    assert abs(audio[:, 0] - audio[:, 1]).max() > 0.01  # stereo kept, not L = R


def test_latents_are_sa3_stereo_latents(paper_smoke_run):
    from eisbach.latents import load_latents

    rows = load_latents(paper_smoke_run / "results/latents/stable-audio-3")
    assert {tuple(r["latent"].shape) for r in rows} == {(256, 108)}  # 10 s of SAME-L latents


def test_runs_train_dora_on_every_linear_and_conv_with_sa3_sampler(paper_smoke_run):
    base = json.loads((paper_smoke_run / "results/base/stable-audio-3/run.json").read_text())
    assert base["pretrained"]["unexpected_keys"] == []
    for rid in RUNS:
        run = json.loads((paper_smoke_run / f"results/runs/{rid}/run.json").read_text())
        assert (
            run["config"]["backend"]["stable_audio_3"]["timestep_sampler"] == "trunc_logit_normal"
        )
        assert len(run["target_modules"]) == 9 * 2 + 13 and run["target_modules_left_out"] == {}
        assert run["base_load"]["unexpected_keys"] == []
        config = json.loads(
            (paper_smoke_run / f"results/runs/{rid}/adapter_config.json").read_text()
        )
        assert config["use_dora"] and config["target_modules"] == sorted(config["target_modules"])
        log = pq.read_table(paper_smoke_run / f"results/runs/{rid}/train_log.parquet").to_pylist()
        assert len(log) == 3 * 2 and all(0 <= r["t"] <= 1 for r in log)


def test_samples_evaluate_and_report(paper_smoke_run):
    index = pq.read_table(paper_smoke_run / "results/samples/index.parquet").to_pylist()
    assert len(index) == (1 + len(RUNS)) * 2 * 2  # base + runs, x (1 prompt + 1 caption) x 2 seeds
    for row in index:
        audio, rate = sf.read(paper_smoke_run / row["path"])
        assert rate == 44100 and len(audio) == round(108 * 4096)  # the duration, not the headroom
    summary = json.loads((paper_smoke_run / "results/metrics/summary.json").read_text())
    assert summary["claims"]
    assert (paper_smoke_run / "results/report/index.html").stat().st_size > 0
