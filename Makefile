# The two commands of the README: `make demo` and `make test`. Both set up .venv/ from the lock,
# and .venv-musicnn/ (the FD-musicnn TensorFlow env, envs/musicnn.lock) beside it.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
CORES ?= all
# Let every job reuse the bytecode of torch and stable-audio-tools instead of recompiling it
# (about 10 s per Snakemake job when the environment forbids writing .pyc files).
unexport PYTHONDONTWRITEBYTECODE

.PHONY: setup demo test lint lock paper-dry-run clean

setup:
	bash scripts/setup_env.sh
	bash scripts/setup_musicnn_env.sh

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

lock:
	$(BIN)/uv pip compile envs/requirements.in --python-version 3.11 \
	  --python-platform x86_64-manylinux_2_28 --generate-hashes \
	  --override envs/overrides.txt -o envs/requirements.lock

paper-dry-run: setup
	$(BIN)/snakemake -n --configfile config/paper.yaml

clean:
	rm -rf results .snakemake
