#!/usr/bin/env bash
# Builds .venv/ at the repo root from envs/requirements.lock (hashes required).
# Does nothing when the venv already matches the lock.
set -euo pipefail
cd "$(dirname "$0")/.."
lock=envs/requirements.lock
stamp=.venv/.lock.sha256
want=$(sha256sum "$lock" | cut -d' ' -f1)
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi
python=${PYTHON:-python3.11}
command -v "$python" >/dev/null || { echo "setup: $python not found; Python 3.11 is required (set PYTHON=...)" >&2; exit 1; }
[[ -x .venv/bin/python ]] || "$python" -m venv .venv
# uv itself comes from its own entry of the lock, hashes checked, like everything it installs.
if [[ ! -x .venv/bin/uv ]]; then
  uv_req=$(mktemp)
  trap 'rm -f "$uv_req"' EXIT
  awk '/^uv==/{p=1; print; next} p && /^[^ #]/{exit} p' "$lock" > "$uv_req"
  .venv/bin/python -m pip install -q --no-deps --require-hashes -r "$uv_req"
fi
# Bytecode is compiled once here: every Snakemake job is a new interpreter, and where the
# environment forbids writing .pyc files (PYTHONDONTWRITEBYTECODE) each of them would compile
# torch's sources again (about 8 s of CPU a job, measured with cProfile on a first import).
.venv/bin/uv pip sync --python .venv/bin/python --require-hashes --compile-bytecode "$lock"
.venv/bin/uv pip install -q --python .venv/bin/python --no-deps --no-build-isolation -e .
# librosa's numba kernels compile on their first call (about 14 s of the demo's evaluate job on
# a new environment) and cache themselves beside librosa's sources: compile them once, here.
.venv/bin/python -c 'import numpy as np; from eisbach.metrics import analyse
analyse(np.random.default_rng(0).standard_normal(32000).astype(np.float32) * 0.1, 16000)'
# The install must import; doing so also reads torch's ~1 GB of libraries once, here, rather
# than in the demo's first training job (on a fresh clone that job took 105 s instead of 85 s).
.venv/bin/python -c 'import peft, torchaudio; from eisbach.backends.tiny import import_stable_audio_tools
import_stable_audio_tools()' >/dev/null \
  || { echo "setup: .venv does not import torch/peft/stable-audio-tools" >&2; exit 1; }
echo "$want" > "$stamp"
