"""Sampling speed and peak memory: 100 Euler steps at cfg 3 through a DoRA-adapted DiT.

The paper's sampler settings (100 steps, cfg 3.0) on the same SA3-Medium-shaped DiT as
benchmarks/weight_overhead.py (random weights, a DoRA r16 adapter left unmerged, as the sample
stage loads it with peft), in half precision on CUDA (bf16) and fp32 on CPU. The DiT's own
classifier-free guidance doubles the batch inside each step. Reports seconds per sampled clip,
tokens/s (latent frames through the DiT per second, both cfg halves counted), MFU (FLOPs of one
step counted by torch.utils.flop_counter, times the steps, over the device's dense bf16 peak)
and the peak memory (CUDA: max_memory_allocated; CPU: the process's peak RSS).

    python benchmarks/sampling_speed.py --preset sa3-medium --device cuda
    python benchmarks/sampling_speed.py --preset sa3-medium --device cpu --depth 2 --embed-dim 256 \\
        --frames 32 --flops --peak-tflops 1      # the same path on CPU, seconds
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from weight_overhead import PRESETS, build_model, peak_flops, peak_memory, preset_shape, sync


def run(args) -> dict:
    p = preset_shape(args)
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    model = build_model(p, "dora", device).eval()
    half = device.type == "cuda"
    if half:
        model = model.to(torch.bfloat16)  # the adapter too: inference in half precision
        torch.cuda.reset_peak_memory_stats(device)
    dtype = torch.bfloat16 if half else torch.float32
    g = torch.Generator().manual_seed(0)
    b, frames = args.batch, p["frames"]
    noise = torch.randn(b, p["io_channels"], frames, generator=g).to(device, dtype)
    cond = torch.randn(b, p["cond_tokens"], p["cond_dim"], generator=g).to(device, dtype)
    cond_mask = torch.ones(b, p["cond_tokens"], dtype=torch.bool, device=device)
    ts = torch.linspace(1.0, 0.0, args.steps + 1)

    def step(x, t_now, t_next):
        t = torch.full((b,), float(t_now), device=device, dtype=dtype)
        v = model(x, t, cross_attn_cond=cond, cross_attn_mask=cond_mask, cfg_scale=args.cfg)
        return x + (t_next - t_now) * v

    flops = None
    with torch.no_grad():
        step(noise, ts[0], ts[1])  # warm-up: kernels, allocator
        if device.type == "cuda" or args.flops:
            from torch.utils.flop_counter import FlopCounterMode

            counter = FlopCounterMode(display=False)
            with counter:
                step(noise, ts[0], ts[1])
            flops = float(counter.get_total_flops()) * args.steps
        sync(device)
        started = time.perf_counter()
        x = noise
        for t_now, t_next in zip(ts[:-1], ts[1:], strict=True):
            x = step(x, t_now, t_next)
        sync(device)
        seconds = time.perf_counter() - started
    result = {
        "preset": args.preset,
        "shape": p | {"batch": b, "precision": "bf16" if half else "fp32"},
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "steps": args.steps,
        "cfg_scale": args.cfg,
        "finite": bool(torch.isfinite(x).all()),
        "seconds": seconds,
        "seconds_per_clip": seconds / b,
        "tokens_per_s": 2 * b * frames * args.steps / seconds,
        **peak_memory(device),
    }
    peak_flop_s = peak_flops(device, args.peak_tflops)
    if flops:
        result["flops"] = flops
        result["achieved_tflops"] = flops / seconds / 1e12
        if peak_flop_s:
            result["mfu"] = flops / seconds / peak_flop_s
    return result


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), default="sa3-medium")
    parser.add_argument("--device", default="cuda", help="cuda or cpu")
    parser.add_argument("--steps", type=int, default=100, help="sampler steps (the paper's 100)")
    parser.add_argument("--cfg", type=float, default=3.0, help="cfg scale (the paper's 3.0)")
    parser.add_argument("--batch", type=int, default=4, help="clips sampled together")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads")
    parser.add_argument("--depth", type=int)
    parser.add_argument("--embed-dim", dest="embed_dim", type=int)
    parser.add_argument("--num-heads", dest="num_heads", type=int)
    parser.add_argument("--frames", type=int)
    parser.add_argument("--flops", action="store_true", help="count FLOPs on CPU too")
    parser.add_argument("--peak-tflops", type=float, help="the device's dense peak, for MFU")
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args(argv)
    r = run(args)
    line = (
        f"sampling {r['steps']} steps at cfg {r['cfg_scale']:g}, batch {r['shape']['batch']} x "
        f"{r['shape']['frames']} frames, {r['shape']['precision']} on {r['device']}: "
        f"{r['seconds']:.2f} s ({r['seconds_per_clip']:.2f} s per clip), "
        f"{r['tokens_per_s']:.0f} tokens/s, peak memory {r['peak_memory_gib']:.2f} GiB "
        f"({r['peak_memory_kind']})"
    )
    if "mfu" in r:
        line += f", MFU {100 * r['mfu']:.1f}%"
    print(line)
    if not r["finite"]:
        raise SystemExit("sampling produced non-finite latents")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(r, fh, indent=2)
    return r


if __name__ == "__main__":
    main()
