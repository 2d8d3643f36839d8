#!/usr/bin/env bash
# Builds .venv-musicnn/ at the repo root from envs/musicnn.lock (hashes required): the separate
# TensorFlow environment in which scripts/musicnn_embed.py computes the FD-musicnn embeddings.
# Does nothing when the venv already matches the lock. Uses the main venv's uv (scripts/setup_env.sh
# runs first; `make setup` calls both).
set -euo pipefail
cd "$(dirname "$0")/.."
lock=envs/musicnn.lock
venv=.venv-musicnn
stamp=$venv/.lock.sha256
want=$(sha256sum "$lock" | cut -d' ' -f1)
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi
uv=${UV:-.venv/bin/uv}
[[ -x "$uv" ]] || { echo "setup: $uv not found; run scripts/setup_env.sh first (make setup)" >&2; exit 1; }
python=${PYTHON:-python3.11}
command -v "$python" >/dev/null || { echo "setup: $python not found; Python 3.11 is required (set PYTHON=...)" >&2; exit 1; }
# uv installs into it, so the venv needs no pip of its own
[[ -x $venv/bin/python ]] || "$python" -m venv --without-pip "$venv"
# The lock holds musicnn resolved with --no-deps (its metadata pins numpy<1.17): sync installs
# exactly the listed, hashed files and checks no metadata, so it is the one install step.
# Bytecode compiled once here, as in setup_env.sh: the evaluate job imports TensorFlow.
"$uv" pip sync --python "$venv/bin/python" --require-hashes --compile-bytecode "$lock"
"$venv/bin/python" -c "import musicnn, tensorflow, numpy, librosa" 2>/dev/null \
  || { echo "setup: $venv does not import musicnn/tensorflow; see envs/musicnn.in" >&2; exit 1; }
echo "$want" > "$stamp"
