import json
import os
import re
import shlex
import sys

from eisbach.grid import expand_grid
from eisbach.anchors import check_config as check_anchors
from eisbach.s3_directories import remember_only_folders_found
from eisbach.site import missing_weights
from snakemake.exceptions import WorkflowError

# Folders (directory() outputs: the latent store, each run's samples, each data shard's clips)
# through S3 where jobs share no filesystem: see eisbach/s3_directories.py.
remember_only_folders_found()

# Rules call `python`, never an absolute interpreter path: params are part of each output's
# record, and a path (this checkout, the container's /app/.venv) would make a copied or moved run
# rerun everything. In the job's shell, `python` is a function that runs the interpreter running
# Snakemake where that exists (not inside an apptainer image, say), else the `python` on PATH.
# A function rather than a PATH entry: PATH, and with it the user's yt-dlp, ffmpeg and deno,
# stays as it is. Snakemake's own prefix (bash strict mode) is kept; it formats the prefix, so
# braces are doubled.
PYTHON = "python"
_python = shlex.quote(sys.executable).replace("{", "{{").replace("}", "}}")
shell.prefix(
    "set -euo pipefail; "
    f'python() ( if [ -x {_python} ]; then exec {_python} "$@"; fi; exec python "$@" ); '
)
# An anchor metric that no file on any machine could compute is refused before any job runs.
check_anchors(config)
BACKEND = config["backend"]["name"]

# A pretrained profile with no weights named fails here, at DAG build, before the downloads
# that come first in the DAG (most of a day for MusicCaps), not at the latents job.
if (_no_weights := missing_weights(config)) is not None:
    raise WorkflowError(_no_weights)

# Rules may run in the image that the Dockerfile builds (--sdm apptainer on a cluster; the
# Kubernetes executor takes --container-image instead). They have no `conda:` env: the stack is
# one hashed pip lock of CUDA wheels (envs/requirements.lock) that `make setup` and the
# Dockerfile install as it is, and a conda env file cannot point at it (`-r requirements.lock`
# does not resolve once Snakemake copies the env file into .snakemake/conda), so conda would
# only install a second, untested copy of the same lock.


container: config.get("container_image", "docker-daemon://eisbach:0.1.0")


LATENTS_DIR = f"results/latents/{BACKEND}"
BASE_DIR = f"results/base/{BACKEND}"

# run_id -> {scheme, adapter, seed, sample, match}: schemes x lambda sweep x adapters x seeds
# (eisbach.grid). `match` is the eisbach run whose mean applied weight a `constant c: matched`
# run takes; `sample` false trains and logs a run without sampling it.
RUNS = expand_grid(config["grid"])
BASE_RUN = f"base-{BACKEND}"
SAMPLED_RUNS = [BASE_RUN, *(rid for rid, run in RUNS.items() if run["sample"])]
# One folder per sampled run: its WAVs and their index.parquet (rule sample_run).
SAMPLE_DIRS = [f"results/samples/{sampled}" for sampled in SAMPLED_RUNS]

# Resources of the training jobs, for cluster executors (SLURM, Kubernetes): gpu is the GPU
# count of one job; with more than one, the job runs one process per GPU under torchrun.
DEFAULT_RESOURCES = {"mem_mb": 4000, "runtime": 240, "gpu": 0}


wildcard_constraints:
    run_id="|".join(map(re.escape, RUNS)),
    sampled="|".join(map(re.escape, SAMPLED_RUNS)),


def as_arg(obj):
    """A config section as one JSON argument; the shell line quotes it (`:q`), as it quotes
    every placeholder (tests/test_rule_quoting.py)."""
    return json.dumps(obj, sort_keys=True)


def section_arg(name):
    """A config section as one argument, without its `resources`: scripts never read them, and
    as params they would rerun every job of the stage when a limit is raised after a timeout.
    """
    section = {k: v for k, v in config.get(name, {}).items() if k != "resources"}
    return as_arg(section)


def run_param(key):
    return lambda wildcards: as_arg(RUNS[wildcards.run_id][key])


def train_resources(section):
    """mem_mb, runtime (minutes) and gpu of the `base` or `train` section. Without a `base`
    section (pretrained backends, whose base job loads and checks the same model that training
    loads), the base job takes the training job's resources on one GPU at most."""
    own = config.get(section, {}).get("resources")
    if own is None and section == "base":
        own = dict(config["train"].get("resources", {}))
        own["gpu"] = min(1, int(own.get("gpu", 0)))
    return DEFAULT_RESOURCES | (own or {})


# Resources of the GPU-capable stages other than training (latents, sample) when their config
# section has none: the demo's CPU figures. config/paper.yaml declares GPU ones.
STAGE_RESOURCES = {"mem_mb": 4000, "runtime": 60, "gpu": 0}


def stage_resources(section):
    """mem_mb, runtime (minutes) and gpu of the `latents` or `sample` section."""
    return STAGE_RESOURCES | config.get(section, {}).get("resources", {})


# The GPU rules (latents, pretrain_base, finetune, sample_run) start their interpreter through
# eisbach.gpu_slots with the job's `gpu` resource: it locks that many free devices of the machine
# and sets CUDA_VISIBLE_DEVICES to them, so that under `snakemake --cores all --resources gpu=N`
# no two running jobs share a GPU (and a job of gpu 0 sees none). Not in params: a resource
# change reruns nothing.


def torchrun(section):
    """The interpreter's arguments (argv items) that launch one process per GPU when a job has
    several; none otherwise."""
    gpus = int(train_resources(section)["gpu"])
    if gpus > 1:
        return [
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            str(gpus),
        ]
    return []


def matched_run_json(wildcards):
    """A `constant c: matched` run needs the run.json of its eisbach run."""
    match = RUNS[wildcards.run_id]["match"]
    return [f"results/runs/{match}/run.json"] if match else []


def adapter_files(wildcards):
    """The adapter of a sampled run, and the run.json that records its sha256."""
    if wildcards.sampled == BASE_RUN:
        return {}
    run_dir = f"results/runs/{wildcards.sampled}"
    return {
        "adapter": f"{run_dir}/adapter_model.safetensors",
        "adapter_config": f"{run_dir}/adapter_config.json",
        "adapter_run": f"{run_dir}/run.json",
    }


def run_dirs(wildcards, input):
    """The run folders of a job's `runs` input (one file of each run), as the job sees them."""
    return [os.path.dirname(p) for p in input.runs]
