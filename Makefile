# The two commands of the README: `make demo` and `make test`. Both set up .venv/ from the lock,
# and .venv-musicnn/ (the FD-musicnn TensorFlow env, envs/musicnn.lock) beside it.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
CORES ?= all
# Let every job reuse the bytecode of torch and stable-audio-tools instead of recompiling it
# (about 10 s per Snakemake job when the environment forbids writing .pyc files).
unexport PYTHONDONTWRITEBYTECODE

.PHONY: setup setup-paper site data demo test lint lock paper-dry-run clean

setup:
	bash scripts/setup_env.sh
	bash scripts/setup_musicnn_env.sh

# The host route of the paper profile (SLURM, a GPU machine without Docker): stable_audio_3 at
# the commit the image installs (envs/stable-audio-3.txt), without its conflicting dependencies.
setup-paper: setup
	bash scripts/setup_sa3.sh

# The site file: the weights and data a pretrained profile leaves to the machine, checked against
# the schema. e.g. make site SITE_ARGS="--pretrained medium-base --cookies /secrets/cookies.txt"
SITE_ARGS ?=
site: setup
	$(BIN)/python scripts/make_site.py $(SITE_ARGS)

# The paper profile's data stage alone (downloads, validation, the manifest): run it on a CPU
# machine, then copy results/data/ (rsync -a, which keeps mtimes) to the GPU machine.
PROFILE ?= config/paper.yaml
data: setup
	$(BIN)/snakemake --cores $(CORES) --configfile $(PROFILE) site.yaml --until manifest

demo: setup
	$(BIN)/snakemake --cores $(CORES)

test: setup
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakefmt --check Snakefile workflow/rules
	$(BIN)/snakemake --lint --cores 1
	$(BIN)/hadolint --config .hadolint.yaml Dockerfile

# The lock is the resolution of envs/requirements.in, then envs/requirements-nodeps.in resolved with
# --no-deps (packages whose metadata this stack cannot meet), appended; sync installs both.
lock:
	$(BIN)/uv pip compile envs/requirements.in --python-version 3.11 \
	  --python-platform x86_64-manylinux_2_28 --generate-hashes \
	  --override envs/overrides.txt -o envs/requirements.lock
	$(BIN)/uv pip compile envs/requirements-nodeps.in --python-version 3.11 \
	  --python-platform x86_64-manylinux_2_28 --generate-hashes --no-deps --no-header \
	  -o envs/requirements-nodeps.part
	cat envs/requirements-nodeps.part >> envs/requirements.lock
	rm envs/requirements-nodeps.part

paper-dry-run: setup
	$(BIN)/snakemake -n --configfile config/paper.yaml site.yaml

# Keeps site.yaml (at the repository root, not under results/).
clean:
	rm -rf results .snakemake
