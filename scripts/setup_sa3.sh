#!/usr/bin/env bash
# Installs stable_audio_3 into .venv/ at the commit envs/stable-audio-3.txt pins (the Dockerfile
# installs the same file), with --no-deps, then checks what was installed.
#   SA3_SOURCE=path/to/stable_audio_3-0.1.0-py3-none-any.whl   a wheel of that commit, offline
#   VENV_PYTHON=...                                           another environment's interpreter
set -euo pipefail
cd "$(dirname "$0")/.."
python=${VENV_PYTHON:-.venv/bin/python}
uv=${UV:-.venv/bin/uv}
[[ -x "$python" ]] || { echo "setup_sa3: $python not found: run make setup first" >&2; exit 1; }
pinned=$(grep -oE '@[0-9a-f]{40}$' envs/stable-audio-3.txt | tr -d @)
if [[ -n "${SA3_SOURCE:-}" ]]; then
  "$uv" pip install -q --python "$python" --no-deps "$SA3_SOURCE"
else
  "$uv" pip install -q --python "$python" --no-deps -r envs/stable-audio-3.txt
fi
# The commit installed: from git, pip's direct_url.json records it; a wheel must be of that commit.
"$python" - "$pinned" "${SA3_SOURCE:-}" <<'PY'
import json
import sys
from importlib import metadata

pinned, source = sys.argv[1], sys.argv[2]
dist = metadata.distribution("stable-audio-3")
direct = json.loads(dist.read_text("direct_url.json") or "{}")
commit = direct.get("vcs_info", {}).get("commit_id")
if commit is not None and commit != pinned:
    sys.exit(f"setup_sa3: installed stable-audio-3 at {commit}, not the pinned {pinned}")
origin = f"commit {commit}" if commit else f"{source or direct.get('url')} (said to be {pinned})"
print(f"setup_sa3: stable-audio-3 {dist.version} from {origin}")
PY
