"""The experiment grid from config, and the train rules it gives Snakemake."""

import re
import subprocess
import sys

import pytest
import yaml
from conftest import REPO, paper_configfiles, run_snakemake

from eisbach.grid import expand_grid, run_id

DORA = {"type": "dora", "rank": 16, "alpha": 16}
LORA = {"type": "lora", "rank": 16, "alpha": 16}
CONTROLS = {"constant", "eisbach_shuffled", "eisbach_inverse", "eisbach_batchmean", "min_snr"}


def config(name):
    return yaml.safe_load((REPO / "config" / name).read_text())


def test_run_ids():
    assert run_id({"name": "eisbach", "lam": 0.5}, DORA, 0) == "eisbach-l0.5_dora-r16_s0"
    assert run_id({"name": "none"}, DORA, 1) == "none_dora-r16_s1"
    assert run_id({"name": "min_snr", "gamma": 5}, LORA, 0) == "min_snr-g5_lora-r16_s0"
    matched = {"name": "constant", "c": "matched", "lam": 0.5}
    assert run_id(matched, DORA, 0) == "constant-matched-l0.5_dora-r16_s0"
    assert run_id({"name": "constant", "c": 0.6}, DORA, 0) == "constant-c0.6_dora-r16_s0"


def test_demo_grid_has_its_controls_and_the_study_the_rest():
    runs = expand_grid(config("config.yaml")["grid"])
    sampled = {rid for rid, r in runs.items() if r["sample"]}
    assert sampled == {
        "none_dora-r16_s0",
        "none_dora-r16_s1",
        "eisbach-l0.5_dora-r16_s0",
        "eisbach-l0.5_dora-r16_s1",
        # P2 needs a lambda above 0.8, P4 a LoRA barrier run
        "eisbach-l0.9_dora-r16_s0",
        "eisbach-l0.5_lora-r16_s0",
    }
    assert runs["eisbach-l0.5_lora-r16_s0"]["adapter"] == {"type": "lora", "rank": 16, "alpha": 16}
    controls = {r["scheme"]["name"] for r in runs.values() if not r["sample"]}
    assert controls == {"constant", "eisbach_shuffled"}
    seeds = {
        name: {r["seed"] for r in runs.values() if r["scheme"]["name"] == name} for name in controls
    }
    # the matched constant at both seeds, so that its comparison with eisbach gets a reading
    assert seeds == {"constant": {0, 1}, "eisbach_shuffled": {0}}
    study = expand_grid(config("study.yaml")["grid"])
    assert {r["scheme"]["name"] for r in study.values() if not r["sample"]} == CONTROLS - {
        "constant",
        "eisbach_shuffled",
    }
    for seed in (0, 1):
        matched = runs[f"constant-matched-l0.5_dora-r16_s{seed}"]
        assert matched["match"] == f"eisbach-l0.5_dora-r16_s{seed}"


def test_paper_grid_is_the_full_sweep():
    grid = config("paper.yaml")["grid"]
    runs = expand_grid(grid)
    sweep = {0.1, 0.3, 0.5, 0.7, 0.9, 1.0}
    for name in ("eisbach", "eisbach_batchmean", "eisbach_shuffled", "eisbach_inverse"):
        lams = {r["scheme"]["lam"] for r in runs.values() if r["scheme"]["name"] == name}
        assert lams == sweep, name
    matched = {r["scheme"]["lam"] for r in runs.values() if r["scheme"]["name"] == "constant"}
    assert matched == sweep
    assert {r["adapter"]["type"] for r in runs.values()} == {"lora", "dora"}
    assert {r["seed"] for r in runs.values()} == {0, 1, 2}
    # lam = 0 of every lambda scheme is the one `none` run: 1 + 4 x 6 + 6 + 1 schemes
    assert len(runs) == 32 * 2 * 3
    assert not any("-l0_" in rid for rid in runs)
    assert all(r["match"] in runs for r in runs.values() if r["match"])


def test_grid_names_the_registry_without_importing_torch():
    from eisbach import grid, weighting

    assert set(grid.SCHEMES) == set(weighting.REGISTRY)
    assert grid.LAMBDA_SCHEMES == weighting.LAMBDA_SCHEMES
    probe = "import sys, eisbach.grid; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_grid_errors():
    base = {"adapters": [DORA], "seeds": [0]}
    with pytest.raises(ValueError, match="needs lam"):
        expand_grid(base | {"schemes": [{"name": "eisbach"}]})
    with pytest.raises(ValueError, match="does not train"):
        expand_grid(
            base
            | {
                "schemes": [
                    {"name": "eisbach", "lam": 0.5},
                    {"name": "constant", "c": "matched", "lam": 0.3},
                ]
            }
        )
    with pytest.raises(ValueError, match="not in grid.seeds"):
        expand_grid(base | {"schemes": [{"name": "none", "seeds": [4]}]})
    # duplicates collapse, and `sample` of any duplicate wins
    runs = expand_grid(
        base
        | {
            "lams": [0.0, 0.5],
            "schemes": [{"name": "none", "sample": False}, {"name": "eisbach"}],
        }
    )
    assert list(runs) == ["none_dora-r16_s0", "eisbach-l0.5_dora-r16_s0"]
    assert runs["none_dora-r16_s0"]["sample"]


def test_dag_declares_matched_dependency_and_resources(workflow_copy):
    target = "results/runs/constant-matched-l0.5_dora-r16_s0/run.json"
    result = run_snakemake(workflow_copy, "-n", "-p", "--forceall", "--cores", "1", target)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    jobs = out.split("rule ")
    matched = next(j for j in jobs if j.startswith("finetune") and "constant-matched" in j)
    assert "results/runs/eisbach-l0.5_dora-r16_s0/run.json" in matched
    assert "--match-run results/runs/eisbach-l0.5_dora-r16_s0/run.json" in matched
    assert re.search(r"gpu=0", matched) and re.search(r"runtime=\d+", matched)
    assert re.search(r"mem_mb=\d+", matched)
    assert any(j.startswith("finetune") and "eisbach-l0.5_dora-r16_s0" in j for j in jobs)

    paper = run_snakemake(
        workflow_copy,
        "results/runs/eisbach-l0.5_lora-r16_s2/run.json",
        "-n",
        "-p",
        "--cores",
        "4",
        *paper_configfiles(workflow_copy),
    )
    out = paper.stdout + paper.stderr
    assert paper.returncode == 0, out[-3000:]
    assert "gpu=1" in out and "mem_mb=64000" in out
