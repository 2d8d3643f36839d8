"""The whole DAG on config/test.yaml, then checks of every stage's contract."""

import json
import re

import pyarrow.parquet as pq
import pytest
import soundfile as sf
import torch
from conftest import run_snakemake, training_music_players

from eisbach.provenance import read_parquet_metadata

pytestmark = pytest.mark.slow

RUNS = [
    "none_dora-r4_s0",
    "none_dora-r4_s1",
    "eisbach-l0.5_dora-r4_s0",
    "eisbach-l0.5_dora-r4_s1",
    "eisbach-l0.9_dora-r4_s0",
    "eisbach-l0.5_lora-r4_s0",
]
# base + 6 runs, x (2 prompts + 1 eval caption) x 2 sampling seeds
N_SAMPLES = 7 * 3 * 2
VERDICTS = {"supported", "contradicted", "negligible", "inconclusive"}
READINGS = {"eisbach lower", "control lower", "no difference detected", "inconclusive"}


@pytest.fixture
def finished(smoke_run):
    return smoke_run


def test_manifest_contract(finished):
    table = pq.read_table(finished / "results/data/manifest.parquet")
    for column in (
        "id",
        "source",
        "ytid",
        "start_s",
        "end_s",
        "caption",
        "aspect_list",
        "split",
        "status",
        "reason",
        "attempts",
        "duration",
        "sample_rate",
        "sha256",
    ):
        assert column in table.column_names
    rows = table.to_pylist()
    assert len(rows) == 8 and {r["status"] for r in rows} == {"ok"}
    assert {r["split"] for r in rows} == {"train", "eval"}
    for r in rows:
        audio, rate = sf.read(finished / r["path"])
        assert rate == r["sample_rate"] == 16000
        assert len(audio) / rate == pytest.approx(r["duration"])
    assert "config_hash" in read_parquet_metadata(finished / "results/data/manifest.parquet")


def test_latent_store_loads_with_datasets(finished):
    import datasets

    store = finished / "results/latents/tiny"
    summary = json.loads((store / "latents_manifest.json").read_text())
    files = [str(store / s["path"]) for s in summary["shards"]]
    assert len(files) == 3  # 8 clips, 3 rows per shard
    ds = datasets.load_dataset("parquet", data_files=files, split="train")
    assert ds.num_rows == 8
    row = ds[0]
    assert [len(row["latent"]), len(row["latent"][0])] == row["latent_shape"]  # nested [C, T]
    assert row["latent_shape"][0] == 32 and row["n_frames"] == row["latent_shape"][1]
    meta = read_parquet_metadata(files[0])
    for key in (
        "backend",
        "backend_version",
        "latent_rate",
        "latent_scale",
        "config_hash",
        "packages",
        "git_commit",
    ):
        assert key in meta, key
    text = pq.read_table(store / "text" / "text.parquet")
    assert text.num_rows == len(set(ds["caption"]))


def test_runs_have_peft_adapters_and_logs(finished):
    import yaml
    from peft import PeftModel

    from eisbach.backends import get_backend

    config = yaml.safe_load((finished / "config/test.yaml").read_text())
    backend = get_backend("tiny", config["backend"], finished / "results/latents/tiny")
    for rid in RUNS:
        run_dir = finished / "results/runs" / rid
        log = pq.read_table(run_dir / "train_log.parquet").to_pylist()
        assert len(log) == 12 * 2  # steps x batch
        assert set(log[0]) >= {
            "step",
            "sample_id",
            "t",
            "raw_loss",
            "H",
            "w",
            "applied_weight",
            "lr",
        }
        assert all(0 < r["w"] <= 1 and 0 <= r["H"] <= 1 for r in log)
        if rid.startswith("none"):
            assert all(r["applied_weight"] == 1.0 for r in log)
        else:
            lam = 0.9 if rid.startswith("eisbach-l0.9") else 0.5
            assert all(r["applied_weight"] == pytest.approx(1 - lam + lam * r["w"]) for r in log)
        run = json.loads((run_dir / "run.json").read_text())
        assert set(run["provenance"]) >= {"config_hash", "git_commit", "packages"}
        heldout = pq.read_table(run_dir / "heldout_loss.parquet")
        assert heldout.num_rows == 2 * 5  # eval clips x the default t grid
        assert "config_hash" in read_parquet_metadata(run_dir / "heldout_loss.parquet")
        assert run["heldout"]["clips"] == 2 and run["heldout"]["mean"] > 0
        model = PeftModel.from_pretrained(
            backend.load_dit(finished / "results/base/tiny"), str(run_dir)
        )
        lora = [n for n, _ in model.named_parameters() if "lora_" in n]
        assert lora, "no adapter weights were loaded"
        magnitudes = [n for n, _ in model.named_parameters() if "lora_magnitude_vector" in n]
        assert bool(magnitudes) == ("_dora-" in rid), "DoRA magnitude vectors (DoRA runs only)"


def test_same_seed_same_adapter_across_schemes_differs(finished):
    from safetensors.torch import load_file

    runs = finished / "results/runs"
    a = load_file(runs / "none_dora-r4_s0/adapter_model.safetensors")
    b = load_file(runs / "eisbach-l0.5_dora-r4_s0/adapter_model.safetensors")
    assert a.keys() == b.keys()
    assert any(not torch.equal(a[k], b[k]) for k in a), "the weighting changed nothing"


def test_samples_index_and_audio(finished):
    index = pq.read_table(finished / "results/samples/index.parquet").to_pylist()
    assert len(index) == N_SAMPLES
    for row in index:
        audio, rate = sf.read(finished / row["path"])
        assert re.search(r"results/samples/[^/]+/[a-z0-9_-]+-s\d+\.wav$", row["path"])
        assert audio.std() > 1e-3, f"{row['path']} is silent"
        with sf.SoundFile(finished / row["path"]) as fh:
            assert "config_hash" in json.loads(fh.comment)


def test_metrics_and_verdicts(finished):
    per_sample = pq.read_table(finished / "results/metrics/per_sample.parquet").to_pylist()
    assert len(per_sample) == N_SAMPLES
    per_prompt = pq.read_table(finished / "results/metrics/per_prompt.parquet").to_pylist()
    assert len(per_prompt) == 7 * 3 and all(r["n_seeds"] == 2 for r in per_prompt)
    assert all(1.0 <= r["vendi"] <= 2.0 + 1e-9 for r in per_prompt if r["vendi"] == r["vendi"])
    reference = pq.read_table(finished / "results/metrics/reference.parquet")
    assert reference.num_rows == 8 and set(reference.column("split").to_pylist()) == {
        "train",
        "eval",
    }
    summary = json.loads((finished / "results/metrics/summary.json").read_text())
    claims = {c["id"]: c for c in summary["claims"]}
    assert {
        "table2.ssm_block_scale",
        "table2.spectral_contrast_db",
        "table2.flux_sparsity",
        "table2.pca_coverage",
        "table2.dynamic_range_db",
        "P1",
        "P2",
        "P3",
        "P4",
        "P5",
    } <= set(claims)
    for claim in claims.values():
        assert claim["verdict"] in VERDICTS
        if "ci_low" in claim and "diff" in claim and claim["id"] != "P5":
            assert claim["ci_low"] <= claim["diff"] <= claim["ci_high"]
    # the smoke grid makes every prediction computable: tested over its 2 training seeds where
    # both ran (Table 2, P1, P3, P5), an estimate from the one seed of lambda 0.9 and of LoRA
    # (P2, P4), never "not built"
    assert [r["lam"] for r in claims["P2"]["by_lambda"]] == [0.0, 0.5, 0.9]
    for one_seed in ("P2", "P4"):
        assert "diff" in claims[one_seed] and "one training seed" in claims[one_seed]["reason"]
    assert "ci_low" in claims["P3"]["consistency"] and "ci_low" in claims["P3"]["vendi"]
    for tested in ("P1", "P3", "P5", "table2.dynamic_range_db", "table2.dynamic_range_levels"):
        claim = claims[tested]
        assert claim["seeds"] == 2 if "seeds" in claim else True
        assert {"p_supported", "p_contradicted", "p_negligible", "p_value"} <= set(claim)
        # a band in the claim's units with its source (a conjunction without one: its parts')
        parts = [p for p in claim.values() if isinstance(p, dict) and "min_effect" in p]
        bands = [claim] if "min_effect" in claim else parts
        assert bands and all(b.get("min_effect_source") for b in bands)
        if claim["verdict"] in ("inconclusive", "negligible"):  # the power statement
            assert claim["mde"] >= max(b["min_effect"] for b in bands)
    assert summary["multiple_comparisons"]["method"] == "holm"
    assert all("verdict_unadjusted" in c for c in claims.values())
    assert summary["scoring"]["scored"] + summary["scoring"]["cached"] == N_SAMPLES + 8
    assert set(summary["weight_spread"]) == set(RUNS)
    # none against eisbach at lambda 0.5 (2 seeds x 2 eval clips) and at 0.9 (1 seed)
    by_reference = {c["reference"]: c for c in summary["controls"]}
    assert set(by_reference) == {"eisbach-l0.5", "eisbach-l0.9"}
    control = by_reference["eisbach-l0.5"]
    assert (control["control"], control["reference"]) == ("none", "eisbach-l0.5")
    assert control["seeds"] == 2 and control["units"] == 4
    assert control["reading"] in READINGS
    assert control["ci_low"] <= control["diff"] <= control["ci_high"]


def test_figures_tables_and_report(finished):
    for name in ("table2", "controls"):
        for ext in ("csv", "md", "tex", "provenance.json"):
            assert (finished / "results/tables" / f"{name}.{ext}").stat().st_size > 0
    assert (
        "none,eisbach-l0.5,dora-r4,2,4," in (finished / "results/tables/controls.csv").read_text()
    )
    from PIL import Image

    with Image.open(finished / "results/figures/p1_weight_vs_t.png") as png:
        assert "git_commit" in json.loads(png.text["Comment"])
    assert "config_hash" in json.loads(
        (finished / "results/tables/table2.provenance.json").read_text()
    )
    page = (finished / "results/report/index.html").read_text()
    # every sample, and the training music in front of each prompt's samples
    players = training_music_players(finished)
    assert players > 0 and page.count("<audio") == N_SAMPLES + players
    for src in re.findall(r'src="([^"]+)"', page):
        assert not src.startswith("/"), f"absolute link {src}"
        assert (finished / "results/report" / src).resolve().exists(), src
    for verdict in re.findall(r'class="v"[^>]*>([a-z]+)<', page):
        assert verdict in VERDICTS
    assert "Controls: held-out denoising loss" in page
    for reading in re.findall(r'class="r"[^>]*>([a-z ]+)<', page):
        assert reading in READINGS


def test_rerun_is_a_noop(finished):
    result = run_snakemake(finished, "-n", "--cores", "2", "--configfile", "config/test.yaml")
    assert result.returncode == 0
    assert "Nothing to be done" in result.stdout + result.stderr
