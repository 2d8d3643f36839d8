"""The execution profiles (profiles/default, slurm, kubernetes): a dry run of the paper DAG each,
with the resources that each executor would request; and the runtime limits of config/paper.yaml
against the cost model's estimate (eisbach.cloud)."""

import re

import pytest
import yaml
from conftest import REPO, copy_workflow, paper_configfiles, run_snakemake
from moto_s3 import moto_server

PAPER_JOBS = 416
GPU_RULES = ("latents", "pretrain_base", "finetune", "sample_run")


def dry_run(tmp_path, *args):
    workdir = tmp_path / "wf"
    workdir.mkdir()
    copy_workflow(workdir)
    result = run_snakemake(workdir, "-n", *paper_configfiles(workdir), *args, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def job_resources(output: str) -> dict[str, list[dict]]:
    """rule name -> the resources line of each of its jobs, parsed."""
    jobs: dict[str, list[dict]] = {}
    for block in re.split(r"\n(?:localrule|rule) ", output)[1:]:
        name = block.split(":", 1)[0]
        match = re.search(r"^\s+resources: (.*)$", block, re.M)
        items = dict(kv.split("=", 1) for kv in match.group(1).split(", ")) if match else {}
        jobs.setdefault(name, []).append(items)
    return jobs


def total_jobs(output: str) -> int:
    return int(re.search(r"^total\s+(\d+)", output, re.M).group(1))


def paper_dag(tmp_path, *args) -> tuple[str, dict[str, list[dict]]]:
    """Dry run of the paper DAG with these arguments: its output and its jobs' resources, once
    every job is there and the GPU stages ask for one GPU each."""
    out = dry_run(tmp_path, *args)
    assert total_jobs(out) == PAPER_JOBS
    jobs = job_resources(out)
    check_gpu_jobs(jobs)
    return out, jobs


def check_gpu_jobs(jobs):
    for rule in GPU_RULES:
        assert jobs[rule], rule
        for res in jobs[rule]:
            assert res["gpu"] == "1", (rule, res)
            assert int(res["mem_mb"]) >= 16000 and 0 < int(res["runtime"]) <= 60, (rule, res)
    for res in jobs["data_shard"] + jobs["evaluate"]:
        assert res.get("gpu", "0") == "0"


@pytest.mark.slow
def test_default_profile_dry_runs_the_paper_dag(tmp_path):
    out, jobs = paper_dag(tmp_path, "--workflow-profile", "profiles/default")
    assert jobs["evaluate"][0]["runtime"] == "2220"  # a CPU job of many hours (docs/cloud.md)
    # printshellcmds; the env's `python`, never an absolute interpreter path
    # through the GPU slots (eisbach.gpu_slots) with the job's one GPU
    assert re.search(
        r"^Shell command: python -m eisbach\.gpu_slots --gpus 1 -- +scripts/train\.py adapter",
        out,
        re.M,
    )


@pytest.mark.slow
def test_slurm_profile_dry_runs_the_paper_dag(tmp_path):
    out, jobs = paper_dag(tmp_path, "--profile", "profiles/slurm")
    for rule in GPU_RULES:
        assert {r["slurm_partition"] for r in jobs[rule]} == {"gpu"}
    assert {r["slurm_partition"] for r in jobs["data_shard"]} == {"cpu"}


@pytest.fixture
def s3_server(monkeypatch):
    """moto's S3 on a free local port, with the profile's bucket."""
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    profile = yaml.safe_load((REPO / "profiles/kubernetes/config.yaml").read_text())
    bucket = profile["default-storage-prefix"].removeprefix("s3://").split("/")[0]
    with moto_server(bucket) as url:
        yield url, profile["default-storage-prefix"]


@pytest.mark.slow
def test_kubernetes_profile_dry_runs_the_paper_dag_against_s3(tmp_path, s3_server):
    url, prefix = s3_server
    out, jobs = paper_dag(
        tmp_path, "--profile", "profiles/kubernetes", "--storage-s3-endpoint-url", url
    )
    for rule in GPU_RULES:
        assert {r["gpu_manufacturer"] for r in jobs[rule]} == {"nvidia"}  # nvidia.com/gpu
    assert f"{prefix}/results/runs/" in out  # every output goes to the bucket prefix
    assert "retrieve from storage" in out and "send to storage" in out


def test_profiles_name_their_executor_and_plugins_are_locked():
    lock = (REPO / "envs/requirements.lock").read_text()
    for name, plugin in (
        ("slurm", "snakemake-executor-plugin-slurm"),
        ("kubernetes", "snakemake-executor-plugin-kubernetes"),
    ):
        profile = yaml.safe_load((REPO / f"profiles/{name}/config.yaml").read_text())
        assert profile["executor"] == name
        assert f"\n{plugin}==" in lock
    k8s = yaml.safe_load((REPO / "profiles/kubernetes/config.yaml").read_text())
    assert k8s["default-storage-provider"] == "s3" and "\nsnakemake-storage-plugin-s3==" in lock
    assert re.fullmatch(r"s3://[a-z0-9.-]+/\S+", k8s["default-storage-prefix"])
    default = yaml.safe_load((REPO / "profiles/default/config.yaml").read_text())
    assert "executor" not in default and "cores" not in default  # it applies to every run


def test_paper_runtimes_cover_the_cost_model():
    from eisbach import cloud

    config = yaml.safe_load((REPO / "config/paper.yaml").read_text())
    est = cloud.estimate(config, cloud.dit_parameters())
    assert est["total_jobs"] == PAPER_JOBS
    assert 1.4e9 < est["n_params"] < 1.5e9  # SA3 Medium, 24 layers x 1536
    wanted = cloud.declared_runtimes(est)
    declared = {
        "latents": config["latents"]["resources"]["runtime"],
        "finetune": config["train"]["resources"]["runtime"],
        "sample_run": config["sample"]["resources"]["runtime"],
        "evaluate": config["evaluate"]["resources"]["runtime"],
    }
    for stage, minutes in declared.items():
        assert minutes == wanted[stage], stage
    for row in est["stages"]:
        assert declared.get(row["stage"], declared["finetune"]) >= row["job_minutes_low"]
    # the base job of a pretrained backend takes the training job's limit
    base = next(r for r in est["stages"] if r["stage"] == "pretrain_base")["job_minutes_low"]
    assert declared["finetune"] >= base * cloud.ASSUMPTIONS.margin


def declared_outputs(output: str) -> dict[str, list[str]]:
    """rule name -> the output files of its first job in a dry run."""
    outputs = {}
    for block in re.split(r"\n(?:localrule|rule) ", output)[1:]:
        name = block.split(":", 1)[0]
        match = re.search(r"^\s+output: (.*)$", block, re.M)
        if match and name not in outputs:
            outputs[name] = match.group(1).split(", ")
    return outputs


@pytest.mark.slow
def test_files_read_downstream_are_declared_outputs(tmp_path):
    """Executors without a shared filesystem (profiles/kubernetes) move only declared outputs:
    the folders that later jobs read are outputs (tests/test_s3_storage.py runs the smoke DAG
    that way end to end)."""
    outputs = declared_outputs(dry_run(tmp_path))
    shard, clips = outputs["data_shard"]
    assert clips == shard.replace("shards/shard-", "shards/audio-").removesuffix(".parquet")
    assert outputs["manifest"] == ["results/data/manifest.parquet", "results/data/audio"]
    assert outputs["latents"] == ["results/latents/stable-audio-3"]  # the whole store
    assert re.fullmatch(r"results/samples/[^/]+", outputs["sample_run"][0])  # WAVs + index
