"""A bad config is rejected before any job runs, with the offending key named."""

import yaml
from conftest import REPO, paper_configfiles, run_snakemake


def write_config(workdir, edit):
    config = yaml.safe_load((REPO / "config/test.yaml").read_text())
    edit(config)
    path = workdir / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def rejected(workdir, edit):
    bad = write_config(workdir, edit)
    result = run_snakemake(workdir, "--cores", "1", "--configfile", str(bad))
    assert result.returncode != 0
    assert not (workdir / "results").exists(), "a job ran before validation failed"
    return result.stdout + result.stderr


def test_wrong_type_names_the_key(workflow_copy):
    out = rejected(workflow_copy, lambda c: c["train"].update(lr="fast"))
    assert "lr" in out and "fast" in out


def test_unknown_key_is_named(workflow_copy):
    out = rejected(workflow_copy, lambda c: c["grid"].update(sedes=[0]))
    assert "sedes" in out


def test_unknown_scheme_is_named(workflow_copy):
    out = rejected(workflow_copy, lambda c: c["grid"]["schemes"].append({"name": "eisbachh"}))
    assert "eisbachh" in out


def test_shipped_configs_validate(workflow_copy):
    for name in ("config.yaml", "test.yaml", "paper.yaml"):
        configs = ["--configfile", f"config/{name}"]
        if name == "paper.yaml":  # a pretrained profile builds its DAG only with its site file
            configs = paper_configfiles(workflow_copy)
        result = run_snakemake(workflow_copy, "-n", "--cores", "1", *configs, "--quiet")
        assert result.returncode == 0, (name, result.stderr[-2000:])
