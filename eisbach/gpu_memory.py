"""The GPU memory one fine-tune job and one sampling job need, estimated part by part.

What scripts/gpu_check.sh prints where it has no GPU to measure on, and beside the measured
peak where it has one. Parameter counts are counted: at Medium's shape, SA3 Medium's DiT and
its DoRA targets as stable_audio_3's own classes have them (eisbach.backends.sa3_medium); at
any other shape (--depth, --embed-dim, --num-heads), a stable-audio-tools DiT of that shape on
the meta device with DoRA on its Linear and Conv1d layers. The rest is arithmetic named in each
part:

- base weights as the training loop holds them: fp32 (bf16 autocast computes in bf16 but keeps
  the weights as loaded); sampling in half precision (2 bytes);
- the adapter (fp32), its gradients (fp32) and AdamW's two moments (fp32 each);
- activations per transformer layer kept for backward, after Korthikanti et al. 2022
  ("Reducing Activation Recomputation in Large Transformer Models", eq. 2 without the attention
  matrix, which SDPA / flash attention never stores): 34 * L * b * d bytes for self-attention
  and feed-forward in 16-bit, plus the cross-attention's q and output (4 * L * b * d) and its
  keys and values over the C text tokens (4 * C * b * d). With activation checkpointing only
  each layer's input (2 * L * b * d) is kept, plus one layer's full set during recomputation;
- a fixed allowance for the CUDA context, cuBLAS workspaces and allocator slack (an assumption).

L is the latent frames plus the DiT's memory tokens, b the batch, d the width. The text encoder
and the autoencoder are not in the fine-tune job (captions and audio are pre-encoded); the
sampling job decodes with the autoencoder, whose size is an assumption here.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass

GIB = 2**30


@dataclass(frozen=True)
class Shape:
    embed_dim: int = 1536
    depth: int = 24
    frames: int = 108  # 10 s at 10.77 latents/s
    memory_tokens: int = 64  # SA3 Medium (the MLX port's pack config)
    cond_tokens: int = 257  # T5Gemma's 256 tokens + seconds_total
    batch: int = 4
    sample_batch: int = 4  # seeds sampled together
    activation_checkpointing: bool = True
    cuda_overhead_gib: float = 1.5  # context, cuBLAS workspace, allocator slack (assumed)
    autoencoder_params: float = 0.2e9  # SAME-L decoder, assumed (its size is not public here)


def adapter_parameters(dit, rank: int, dora: bool = True) -> int:
    """LoRA A and B plus DoRA's magnitude (one per output) on every Linear and Conv1d, the
    modules SA3's LoRA trainer adapts: rank * (in * kernel + out) + out each."""
    import torch

    total = 0
    for module in dit.modules():
        if isinstance(module, torch.nn.Linear):
            n_in, n_out = module.in_features, module.out_features
        elif isinstance(module, torch.nn.Conv1d):
            n_in, n_out = module.in_channels * module.kernel_size[0], module.out_channels
        else:
            continue
        total += rank * (n_in + n_out) + (n_out if dora else 0)
    return total


def activation_bytes(s: Shape, batch: int) -> float:
    tokens, d = s.frames + s.memory_tokens, s.embed_dim
    full_layer = (34 + 4) * tokens * batch * d + 4 * s.cond_tokens * batch * d
    if s.activation_checkpointing:
        return s.depth * 2 * tokens * batch * d + full_layer
    return s.depth * full_layer


def estimate(n_base: int, n_adapter: int, s: Shape = Shape()) -> dict:
    """Bytes of each part for the fine-tune job and the sampling job, and their sums in GiB."""
    train = {
        "base weights (fp32)": 4 * n_base,
        "adapter weights (fp32)": 4 * n_adapter,
        "adapter gradients (fp32)": 4 * n_adapter,
        "AdamW moments (2 x fp32)": 8 * n_adapter,
        "activations for backward (16-bit)": activation_bytes(s, s.batch),
        "CUDA context and workspace (assumed)": s.cuda_overhead_gib * GIB,
    }
    tokens = s.frames + s.memory_tokens
    sample = {
        "DiT weights (half)": 2 * n_base,
        "adapter weights (half)": 2 * n_adapter,
        # one layer's working set for the cfg-doubled batch: the feed-forward's 4d hidden
        # dominates; nothing is kept across layers without backward
        "activations, one layer (cfg doubles the batch)": 2
        * (2 * s.sample_batch)
        * tokens
        * 8
        * s.embed_dim,
        "autoencoder (half, assumed size)": 2 * s.autoencoder_params,
        "CUDA context and workspace (assumed)": s.cuda_overhead_gib * GIB,
    }
    return {
        "shape": asdict(s),
        "n_base": n_base,
        "n_adapter": n_adapter,
        "finetune": {k: float(v) for k, v in train.items()},
        "sample": {k: float(v) for k, v in sample.items()},
        "finetune_gib": sum(train.values()) / GIB,
        "sample_gib": sum(sample.values()) / GIB,
    }


def text(est: dict) -> str:
    lines = []
    for job in ("finetune", "sample"):
        lines.append(f"estimated GPU memory of one {job} job: {est[job + '_gib']:.1f} GiB")
        for part, size in est[job].items():
            lines.append(f"  {part:<48} {size / GIB:8.2f} GiB")
    s = est["shape"]
    lines.append(
        f"  (DiT {est['n_base'] / 1e6:,.1f} M parameters, adapter {est['n_adapter'] / 1e6:.1f} M; "
        f"{s['depth']} x {s['embed_dim']}, batch {s['batch']} x ({s['frames']} frames + "
        f"{s['memory_tokens']} memory tokens), activation checkpointing "
        f"{'on' if s['activation_checkpointing'] else 'off'}; counted on {est['counted_on']})"
    )
    return "\n".join(lines)


def counted(shape: dict, rank: int, s: Shape) -> dict:
    """The estimate for a DiT of ``shape`` (eisbach.cloud) with a DoRA adapter of ``rank``:
    Medium's own counts at Medium's shape, else a stable-audio-tools DiT counted on meta."""
    from eisbach.backends import sa3_medium
    from eisbach.cloud import SA3_MEDIUM, dit_parameters, shaped_dit

    if shape == SA3_MEDIUM:
        est = estimate(dit_parameters(), sa3_medium.medium_dora_parameters(rank), s)
        return est | {"counted_on": "stable_audio_3's classes (SA3 Medium)"}
    import torch

    with torch.device("meta"):
        dit = shaped_dit(shape)
    n_base = sum(p.numel() for p in dit.parameters())
    est = estimate(n_base, adapter_parameters(dit, rank), s)
    return est | {"counted_on": "a stable-audio-tools DiT of this shape"}


def main(argv=None) -> dict:
    from eisbach.cloud import SA3_MEDIUM

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=SA3_MEDIUM["depth"])
    parser.add_argument("--embed-dim", type=int, default=SA3_MEDIUM["embed_dim"])
    parser.add_argument("--num-heads", type=int, default=SA3_MEDIUM["num_heads"])
    parser.add_argument("--rank", type=int, default=16, help="DoRA rank (the paper's: 16)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--frames", type=int, default=108)
    parser.add_argument("--no-checkpointing", action="store_true")
    parser.add_argument("--json", help="also write the estimate here")
    args = parser.parse_args(argv)
    shape = SA3_MEDIUM | {
        "depth": args.depth,
        "embed_dim": args.embed_dim,
        "num_heads": args.num_heads,
    }
    s = Shape(
        embed_dim=args.embed_dim,
        depth=args.depth,
        frames=args.frames,
        batch=args.batch,
        activation_checkpointing=not args.no_checkpointing,
    )
    est = counted(shape, args.rank, s)
    print(text(est))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(est, fh, indent=2)
    return est


if __name__ == "__main__":
    main()
