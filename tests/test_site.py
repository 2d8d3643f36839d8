"""The site file (scripts/make_site.py) and the paper profile's refusal to build its DAG without
weights, before any download."""

import subprocess
import sys

import pytest
import yaml
from conftest import REPO, copy_workflow, run_snakemake

MAKE_SITE = [sys.executable, str(REPO / "scripts" / "make_site.py")]


def make_site(cwd, *args):
    return subprocess.run([*MAKE_SITE, *args], cwd=cwd, capture_output=True, text=True)


def test_make_site_writes_a_file_the_schema_accepts(tmp_path):
    from eisbach.site import check_site

    result = make_site(
        tmp_path, "--pretrained", "medium-base", "--text-encoder", "google/t5gemma-b-b-ul2"
    )
    assert result.returncode == 0, result.stderr
    site = yaml.safe_load((tmp_path / "site.yaml").read_text())
    assert site["backend"] == {
        "pretrained": "medium-base",
        "stable_audio_3": {"text_encoder": "google/t5gemma-b-b-ul2"},
    }
    config = check_site(site, REPO / "config" / "paper.yaml", check_paths=True)
    assert config["backend"]["name"] == "stable-audio-3" and config["grid"]["seeds"] == [0, 1, 2]
    assert "--configfile config/paper.yaml site.yaml" in result.stdout


def test_make_site_refuses_what_cannot_run_naming_the_key(tmp_path):
    empty = make_site(tmp_path, "--pretrained", "")
    assert empty.returncode != 0 and "backend.pretrained is empty" in empty.stderr
    (tmp_path / "sa3").mkdir()
    (tmp_path / "sa3" / "model_config.json").write_text("{}")
    folder = make_site(tmp_path, "--pretrained", str(tmp_path / "sa3"))
    assert folder.returncode != 0
    assert "backend.pretrained" in folder.stderr and "model.safetensors" in folder.stderr
    cookies = make_site(tmp_path, "--pretrained", "medium-base", "--cookies", "/nonexistent/c.txt")
    assert cookies.returncode != 0 and "data.cookies" in cookies.stderr
    # a container's mount points need not exist where the file is written
    mounted = make_site(tmp_path, "--pretrained", "/models/sa3", "--no-check-paths")
    assert mounted.returncode == 0, mounted.stderr
    assert not list(tmp_path.glob(".site.yaml*"))  # written atomically, no temporary left
    stdout = make_site(tmp_path, "--pretrained", "medium-base", "--out", "-")
    assert stdout.returncode == 0 and yaml.safe_load(stdout.stdout) == {
        "backend": {"pretrained": "medium-base"}
    }


@pytest.mark.slow
def test_paper_profile_without_weights_fails_at_dag_build(tmp_path):
    """A real (not dry) run: it stops while parsing, naming the key, and no job starts."""
    workdir = copy_workflow(tmp_path)
    result = run_snakemake(
        workdir, "--cores", "1", "--configfile", "config/paper.yaml", timeout=300
    )
    assert result.returncode != 0
    assert "backend.pretrained is empty" in result.stderr and "make_site.py" in result.stderr
    assert not (workdir / "results").exists()
