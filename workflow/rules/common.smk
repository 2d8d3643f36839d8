import json
import os
import re
import shlex
import sys

from eisbach.train import run_id

PYTHON = shlex.quote(sys.executable)
BACKEND = config["backend"]["name"]
LATENTS_DIR = f"results/latents/{BACKEND}"
BASE_DIR = f"results/base/{BACKEND}"

RUNS = {
    run_id(scheme, adapter, seed): {"scheme": scheme, "adapter": adapter, "seed": seed}
    for scheme in config["grid"]["schemes"]
    for adapter in config["grid"]["adapters"]
    for seed in config["grid"]["seeds"]
}
BASE_RUN = f"base-{BACKEND}"
SAMPLED_RUNS = [BASE_RUN, *RUNS]


wildcard_constraints:
    run_id="|".join(map(re.escape, RUNS)),
    sampled="|".join(map(re.escape, SAMPLED_RUNS)),


def as_arg(obj):
    """A config section as one shell-quoted JSON argument."""
    return shlex.quote(json.dumps(obj, sort_keys=True))


def run_param(key):
    return lambda wildcards: as_arg(RUNS[wildcards.run_id][key])


def adapter_files(wildcards):
    if wildcards.sampled == BASE_RUN:
        return []
    return [
        f"results/runs/{wildcards.sampled}/adapter_model.safetensors",
        f"results/runs/{wildcards.sampled}/adapter_config.json",
    ]


def run_dir_arg(wildcards):
    if wildcards.sampled == BASE_RUN:
        return ""
    return f"--run-dir results/runs/{wildcards.sampled}"
