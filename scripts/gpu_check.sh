#!/usr/bin/env bash
# The few-minute check of a lent GPU (docs/cloud.md, "GPU check"), at SA3 Medium's full size:
# a DiT of 24 x 1536, 24 heads (eisbach.cloud.SA3_MEDIUM), random weights.
#   1. the environment: torch, CUDA, the device, bf16 support (env.json);
#   2. the estimated GPU memory of one fine-tune job and one sampling job, part by part
#      (weights, adapter, gradients, optimizer state, activations, CUDA context):
#      python -m eisbach.gpu_memory (memory_estimate.json);
#   3. bf16 training steps with DoRA r16 (base in bf16, bf16 autocast, AdamW: the project's
#      loop body) with and without the Eisbach weight: benchmarks/weight_overhead.py --preset
#      sa3-medium, which reports the step time, the weight's overhead, tokens/s, MFU and the
#      peak memory (weight_overhead.json);
#   4. 100-step sampling at cfg 3 in half precision with the DoRA adapter unmerged:
#      benchmarks/sampling_speed.py (sampling.json: s per clip, tokens/s, MFU, peak memory);
#   5. the cost of the paper grid at the measured MFU (scripts/cloud_cost.py --gpu-check).
# Everything lands in OUT (default results/gpu_check/).
#
#   scripts/gpu_check.sh                        # on a GPU: all five; without one: 1 and 2 only
#   scripts/gpu_check.sh --device cpu --small   # steps 1-4 on CPU with a 2-layer model, seconds
#
# --small shrinks the model (2 layers x 256, 32 frames, 2 rounds) so the path runs anywhere; its
# figures measure nothing about a GPU, so step 5 is skipped for it. The interpreter is the
# checkout's .venv/bin/python (make setup; /app/.venv in the image), or $PYTHON.
set -euo pipefail
cd "$(dirname "$0")/.."

device=auto
small=0
steps=10
out=results/gpu_check
while [[ $# -gt 0 ]]; do
  case "$1" in
    --device) device="$2"; shift 2 ;;
    --small) small=1; shift ;;
    --steps) steps="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
    *) echo "gpu_check: unknown argument $1" >&2; exit 2 ;;
  esac
done
case "$device" in auto|cuda|cpu) ;; *) echo "gpu_check: --device is auto, cuda or cpu" >&2; exit 2 ;; esac
python=${PYTHON:-.venv/bin/python}
if [[ ! -x $python ]]; then
  echo "gpu_check: no interpreter at $python: run make setup, or set PYTHON" >&2
  exit 2
fi
echo "gpu_check: python $python"
mkdir -p "$out"

device=$("$python" - "$device" "$out/env.json" <<'EOF'
import json, sys

import torch

device, path = sys.argv[1], sys.argv[2]
if device == "auto":
    device = "cuda" if torch.cuda.is_available() else "cpu"
env = {
    "torch": torch.__version__,
    "cuda_build": torch.version.cuda,
    "cuda_available": torch.cuda.is_available(),
    "device": device,
}
if device == "cuda":
    if not torch.cuda.is_available():
        sys.exit("gpu_check: --device cuda, but torch sees no CUDA device")
    props = torch.cuda.get_device_properties(0)
    env |= {
        "name": props.name,
        "memory_gib": round(props.total_memory / 2**30, 1),
        "capability": f"{props.major}.{props.minor}",
        "bf16": torch.cuda.is_bf16_supported(),
        "device_count": torch.cuda.device_count(),
    }
json.dump(env, open(path, "w"), indent=2)
print(json.dumps(env), file=sys.stderr)
print(device)
EOF
)

shape=()
if [[ $small == 1 ]]; then
  shape=(--depth 2 --embed-dim 256 --num-heads 4 --frames 32)
fi
"$python" -m eisbach.gpu_memory "${shape[@]}" --json "$out/memory_estimate.json"

if [[ $device == cpu && $small == 0 ]]; then
  echo "gpu_check: no GPU here: the estimate above only (--device cpu --small runs the path on CPU)"
  exit 0
fi

bench=(--preset sa3-medium --device "$device" --steps "$steps" --json "$out/weight_overhead.json")
sampling=(--preset sa3-medium --device "$device" --steps 100 --cfg 3 --json "$out/sampling.json")
if [[ $small == 1 ]]; then
  # --flops: count FLOPs on CPU too, so that the path to MFU runs; the peak is nominal. One
  # thread: on a loaded machine, two spinning OpenMP threads made a step ~100x slower here.
  bench+=("${shape[@]}" --steps 2 --warmup 1 --precision fp32 --flops --peak-tflops 1 --threads 1)
  sampling+=("${shape[@]}" --flops --peak-tflops 1 --threads 1)
fi
"$python" benchmarks/weight_overhead.py "${bench[@]}"
"$python" benchmarks/sampling_speed.py "${sampling[@]}"

if [[ $small == 1 ]]; then
  echo "gpu_check: --small: the cost estimate is skipped (its MFU would be a toy model's)"
  exit 0
fi
"$python" scripts/cloud_cost.py --config config/paper.yaml \
  --gpu-check "$out/weight_overhead.json" --json "$out/cloud_cost.json" | tee "$out/cloud_cost.md"
