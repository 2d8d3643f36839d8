#!/usr/bin/env bash
# The few-minute check of a lent GPU (docs/cloud.md, "GPU check"):
#   1. the environment: torch, CUDA, the device, bf16 support;
#   2. training steps of an SA3-Medium-shaped DiT (24 x 1536, random weights, base in bf16,
#      bf16 autocast, DoRA r16, AdamW: the project's loop body) with and without the Eisbach
#      weight: benchmarks/weight_overhead.py --preset sa3-medium, which reports the step time,
#      the weight's overhead, tokens/s and MFU;
#   3. the cost of the paper grid at the measured MFU (scripts/cloud_cost.py --gpu-check).
# Everything lands in OUT (default results/gpu_check/): env.json, weight_overhead.json,
# cloud_cost.json and cloud_cost.md.
#
#   scripts/gpu_check.sh                        # on the GPU: the full shape, 10 timed rounds
#   scripts/gpu_check.sh --device cpu --small   # the same path on CPU, a 2-layer model, seconds
#
# --small shrinks the model (2 layers x 256, 32 frames, 2 rounds) so the path runs anywhere; its
# figures measure nothing about a GPU, so step 3 is skipped for it.
set -euo pipefail
cd "$(dirname "$0")/.."

device=cuda
small=0
steps=10
out=results/gpu_check
while [[ $# -gt 0 ]]; do
  case "$1" in
    --device) device="$2"; shift 2 ;;
    --small) small=1; shift ;;
    --steps) steps="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "gpu_check: unknown argument $1" >&2; exit 2 ;;
  esac
done
case "$device" in cuda|cpu) ;; *) echo "gpu_check: --device is cuda or cpu" >&2; exit 2 ;; esac
python=${PYTHON:-python}
mkdir -p "$out"

"$python" - "$device" "$out/env.json" <<'EOF'
import json, sys

import torch

device, path = sys.argv[1], sys.argv[2]
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
print(json.dumps(env))
EOF

bench=(--preset sa3-medium --device "$device" --steps "$steps" --json "$out/weight_overhead.json")
if [[ $small == 1 ]]; then
  # --flops: count FLOPs on CPU too, so that the path to MFU runs; the peak is nominal.
  bench+=(--depth 2 --embed-dim 256 --num-heads 4 --frames 32 --steps 2 --warmup 1
          --precision fp32 --flops --peak-tflops 1)
fi
"$python" benchmarks/weight_overhead.py "${bench[@]}"

if [[ $small == 1 ]]; then
  echo "gpu_check: --small: the cost estimate is skipped (its MFU would be a toy model's)"
  exit 0
fi
"$python" scripts/cloud_cost.py --config config/paper.yaml \
  --gpu-check "$out/weight_overhead.json" --json "$out/cloud_cost.json" | tee "$out/cloud_cost.md"
