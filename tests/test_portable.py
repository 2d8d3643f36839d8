"""Portable outputs (issue 13, point 2): a finished run moved to another folder reruns nothing,
model folders load from any working directory, adapters name their base, and weight files get
ordinary modes."""

import json
import os
import shutil
import stat

import pytest
import torch
from conftest import REPO, copy_workflow, run_snakemake

from eisbach import adapters
from eisbach.atomic import atomic_path
from eisbach.backends.base import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    PretrainedFiles,
    link_pretrained,
    read_config,
    relative_paths,
    resolve_paths,
)


def umask_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def test_safetensors_written_atomically_get_the_umask_mode(tmp_path):
    from safetensors.torch import save_file

    target = tmp_path / "m.safetensors"
    with atomic_path(target) as tmp:
        save_file({"w": torch.zeros(3)}, str(tmp))
    assert stat.S_IMODE(target.stat().st_mode) == umask_mode()


def test_model_config_paths_are_relative_to_the_model_folder(tmp_path):
    tokenizer = tmp_path / "latents" / "text_encoder"
    tokenizer.mkdir(parents=True)
    model = tmp_path / "base"
    model.mkdir()
    cfg = {
        "model": {
            "conditioning": {
                "configs": [
                    {"id": "prompt", "config": {"tokenizer_name": str(tokenizer)}},
                    {"id": "t5", "config": {"model_path": "google/t5gemma-b-b-ul2"}},
                ]
            }
        }
    }
    on_disk = relative_paths(cfg, model)
    configs = on_disk["model"]["conditioning"]["configs"]
    assert configs[0]["config"]["tokenizer_name"] == os.path.join("..", "latents", "text_encoder")
    assert configs[1]["config"]["model_path"] == "google/t5gemma-b-b-ul2"  # a hub id stays
    (model / CONFIG_NAME).write_text(json.dumps(on_disk))
    # read from another working directory: the relative path is resolved from the folder
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cwd = os.getcwd()
    try:
        os.chdir(elsewhere)
        loaded = read_config(model / CONFIG_NAME)
    finally:
        os.chdir(cwd)
    assert loaded["model"]["conditioning"]["configs"][0]["config"]["tokenizer_name"] == str(
        tokenizer.resolve()
    )
    assert resolve_paths(on_disk, model) == loaded


def test_copied_base_config_points_from_its_new_folder(tmp_path):
    src = tmp_path / "hub" / "model"
    (src / "t5").mkdir(parents=True)
    (src / CONFIG_NAME).write_text(json.dumps({"cond": {"model_path": "t5"}}))
    (src / WEIGHTS_NAME).write_bytes(b"weights")
    base = tmp_path / "results" / "base" / "sa"
    link_pretrained(PretrainedFiles(src / CONFIG_NAME, src / WEIGHTS_NAME, str(src)), base, True)
    assert not (base / CONFIG_NAME).is_symlink() and not (base / WEIGHTS_NAME).is_symlink()
    on_disk = json.loads((base / CONFIG_NAME).read_text())
    assert on_disk["cond"]["model_path"] == os.path.relpath(src / "t5", base)
    assert read_config(base / CONFIG_NAME)["cond"]["model_path"] == str((src / "t5").resolve())


def test_adapter_names_its_base_relative_to_itself(tmp_path):
    from peft import LoraConfig, get_peft_model

    base = tmp_path / "results" / "base" / "tiny"
    base.mkdir(parents=True)
    run = tmp_path / "results" / "runs" / "r"
    run.mkdir(parents=True)
    dit = torch.nn.Sequential(torch.nn.Linear(4, 4))
    dit.name_or_path = str(base)  # what the backends' load_dit records
    model = get_peft_model(dit, LoraConfig(r=2, target_modules=["0"]))
    adapters.save(model, run)
    config = json.loads((run / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == os.path.join("..", "..", "base", "tiny")
    for name in adapters.ADAPTER_FILES:
        assert stat.S_IMODE((run / name).stat().st_mode) == umask_mode()
    moved = tmp_path / "moved"
    shutil.move(tmp_path / "results", moved)
    assert adapters.base_dir(moved / "runs" / "r").resolve() == (moved / "base" / "tiny").resolve()


@pytest.mark.slow
def test_finished_run_moved_elsewhere_reruns_nothing(tmp_path):
    """The test DAG up to one run's samples, then the folder moved: a dry run there has nothing
    to do, and the base, its tokenizer and the adapter load from an unrelated working
    directory."""
    run_id = "eisbach-l0.5_dora-r4_s0"
    target = f"results/samples/{run_id}"  # the run's samples: WAVs and index.parquet
    (tmp_path / "a").mkdir()
    first = copy_workflow(tmp_path / "a")
    args = (target, "--configfile", "config/test.yaml")  # --configfile takes several values
    result = run_snakemake(first, "--cores", "2", *args)
    assert result.returncode == 0, result.stderr[-5000:]
    moved = tmp_path / "b" / "elsewhere"
    moved.parent.mkdir()
    shutil.move(first, moved)  # a rename keeps every mtime; so does `cp -a` or rsync -a
    again = run_snakemake(moved, "-n", *args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Nothing to be done" in again.stdout + again.stderr, again.stdout[-3000:]
    # Raising a limit after a timeout reruns nothing either: resources are not params.
    (moved / "limits.yaml").write_text(
        "train: {resources: {runtime: 999, mem_mb: 9999}}\n"
        "sample: {resources: {runtime: 999}}\nlatents: {resources: {mem_mb: 9999}}\n"
    )
    raised = run_snakemake(moved, "-n", target, "--configfile", "config/test.yaml", "limits.yaml")
    assert raised.returncode == 0, raised.stderr[-3000:]
    assert "Nothing to be done" in raised.stdout + raised.stderr, raised.stdout[-3000:]

    for weights in (moved / "results").rglob("*.safetensors"):
        assert stat.S_IMODE(weights.stat().st_mode) == umask_mode(), weights
    model_config = json.loads((moved / "results/base/tiny/model_config.json").read_text())
    text = json.dumps(model_config)
    assert str(tmp_path) not in text and str(REPO) not in text  # no absolute path inside
    run_dir = moved / "results/runs" / run_id
    assert adapters.base_dir(run_dir).resolve() == (moved / "results/base/tiny").resolve()

    import yaml

    from eisbach.backends import get_backend

    config = yaml.safe_load((REPO / "config/test.yaml").read_text())
    cwd = os.getcwd()
    try:
        os.chdir(tmp_path)
        backend = get_backend("tiny", config["backend"], moved / "results/latents/tiny")
        stored = read_config(moved / "results/base/tiny/model_config.json")
        tokenizer = stored["model"]["conditioning"]["configs"][0]["config"]["tokenizer_name"]
        assert os.path.isdir(tokenizer)
        dit = backend.load_dit(moved / "results/base/tiny")
        model = adapters.load(dit, run_dir)
        assert sum(p.numel() for n, p in model.named_parameters() if "lora_" in n) > 0
    finally:
        os.chdir(cwd)
