"""profiles/slurm through the real executor plugin, against stand-ins for SLURM's commands:
sbatch records its arguments and runs the job script's --wrap command at once (under the
jobstep plugin, as a compute node would), sacct reports each job's exit, srun runs its command.
What a dry run cannot show: the plugin accepts the profile, the sbatch line carries partition,
memory, wall time and GPUs, and the job step finishes the output on the "node"."""

import json
import os
import shlex
import stat
import sys

import pytest
import yaml
from conftest import REPO, copy_workflow, run_snakemake

SBATCH = """\
import json, os, subprocess, sys
state = os.environ["FAKE_SLURM_DIR"]
args = sys.argv[1:]
wrap = next(a[len("--wrap="):] for a in args if a.startswith("--wrap="))
workdir = args[args.index("-D") + 1]
log = args[args.index("--output") + 1]
jobid = str(1000 + sum(1 for p in os.listdir(state) if p.endswith(".json")))
env = dict(os.environ, SLURM_JOB_ID=jobid)
with open(log.replace("%j", jobid), "w") as out:
    rc = subprocess.run(["bash", "-c", wrap], cwd=workdir, env=env, stdout=out, stderr=out).returncode
with open(os.path.join(state, jobid + ".json"), "w") as fh:
    json.dump({"argv": args, "rc": rc}, fh)
print(jobid)
"""
SACCT = """\
import json, os
state = os.environ["FAKE_SLURM_DIR"]
for name in sorted(os.listdir(state)):
    if name.endswith(".json"):
        with open(os.path.join(state, name)) as fh:
            job = json.load(fh)
        print(name[:-5] + "|" + ("COMPLETED" if job["rc"] == 0 else "FAILED"))
"""
# srun [options] command...: the options end at the first word that is not one
SRUN = """\
import os, sys
args = sys.argv[1:]
while args and args[0].startswith("-"):
    args.pop(0)
os.execvp(args[0], args)
"""


def fake_bin(folder):
    folder.mkdir()
    for name, body in (("sbatch", SBATCH), ("sacct", SACCT), ("srun", SRUN)):
        path = folder / name
        path.write_text(f"#!{sys.executable}\n{body}")
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return folder


@pytest.mark.slow
def test_slurm_profile_submits_and_runs_a_job(tmp_path):
    workdir = tmp_path / "wf"
    workdir.mkdir()
    copy_workflow(workdir)
    state = tmp_path / "slurm"
    state.mkdir()
    bin_dir = fake_bin(tmp_path / "bin")
    env_before = dict(os.environ)
    os.environ.update(
        PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        FAKE_SLURM_DIR=str(state),
        USER=os.environ.get("USER", "tester"),
    )
    try:
        result = run_snakemake(
            workdir,
            "--profile",
            "profiles/slurm",
            "--slurm-init-seconds-before-status-checks",
            "1",
            "--jobs",
            "1",
            "--configfile",
            "config/test.yaml",
            "--set-resources",
            "data_shard:gpu=1",  # a GPU request's path through the plugin
            "--",
            "results/data/shards/shard-0.parquet",
            timeout=900,
        )
    finally:
        os.environ.clear()
        os.environ.update(env_before)
    jobs = [json.loads(p.read_text()) for p in sorted(state.glob("*.json"))]
    assert result.returncode == 0, result.stderr[-4000:] + "\n".join(
        p.read_text()[-2000:] for p in (workdir / ".snakemake/slurm_logs").rglob("*.log")
    )
    assert (workdir / "results/data/shards/shard-0.parquet").stat().st_size > 0
    assert len(jobs) == 1 and jobs[0]["rc"] == 0
    argv = jobs[0]["argv"]
    line = shlex.join(argv)
    profile = yaml.safe_load((REPO / "profiles/slurm/config.yaml").read_text())
    assert argv[argv.index("-p") + 1] == profile["default-resources"]["slurm_partition"]
    assert argv[argv.index("--mem") + 1] == "4000"  # data_shard's mem_mb
    assert argv[argv.index("-t") + 1] == "60"  # its runtime in minutes (source demo)
    assert "--gpus=1" in argv and "--ntasks-per-gpu=1" in argv, line
    assert "--executor slurm-jobstep" in line  # the node runs the job through the jobstep plugin
