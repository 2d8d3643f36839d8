"""Step time of a training step with the Eisbach weight against the same step without it.

One process, one model, one batch: a stable-audio-tools DiT (random weights) with a peft DoRA
adapter (rank 16 on the attention and feed-forward linears, as the project trains), one
optimiser step of the project's loop body (eisbach.objectives, eisbach.weighting, AdamW):

  none       scheme `none`, no H/w computed at all: the bare step
  none+log   scheme `none`, H and w computed for the per-sample log (what the pipeline runs)
  eisbach    scheme `eisbach` (lam 0.5), plus H and w for the log (what the pipeline runs)

Steps of the modes are interleaved in rounds (one step of each mode, the order rotated and
reversed from round to round) after a warm-up, so that load from other processes hits all alike.
It reports each mode's median step time with its inter-quartile range, and the ratio
eisbach / none (and eisbach / none+log; the goal: <= 1.01) as the median of the per-round
ratios, whose two steps ran back to back under the same load, with its IQR and a bootstrap 95%
CI of that median; on CPU also from the process's CPU time, which other processes' load moves
less than wall time. The ratio of the two medians is printed as well.

Presets:
  cpu-mid     12 layers x 512 wide (~64 M), 64 latent channels, 256 frames, batch 4, fp32
  sa3-medium  an SA3-Medium-shaped DiT: 24 layers x 1536 wide, 24 heads (eisbach.cloud.SA3_MEDIUM,
              which names the sources: the MLX port of Medium and diffusers' test config; a
              stable-audio-tools DiT of that shape), 256 latent channels (SAME-L), 768-d text
              tokens (T5Gemma), 108 frames (10 s at 10.77 latents/s, MusicCaps clips), batch 4,
              base weights in bf16 and bf16 autocast. Needs CUDA.

It also counts the kernels (aten ops) the weight adds against those of the bare step: on a GPU
at small batches, launches rather than FLOPs bound the weight's cost, and the count is the same
on every device (sa3-medium at depth 1 and 2 on CPU: 56 against 723 and 1,388, i.e. ~16,000 at
depth 24).

On CUDA it also reports tokens/s (latent frames per second through the DiT) and MFU: FLOPs of
one step (counted by torch.utils.flop_counter) per second over the GPU's dense bf16 peak
(known GPUs, or --peak-tflops).

    python benchmarks/weight_overhead.py                       # cpu-mid on CPU
    python benchmarks/weight_overhead.py --preset sa3-medium   # on a GPU
    python benchmarks/weight_overhead.py --preset cpu-mid --depth 2 --steps 3   # smoke
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time

import torch

from eisbach.objectives import noisy_input, sample_timesteps
from eisbach.weighting import eisbach_terms, get_scheme, weighted_loss

PRESETS = {
    "cpu-mid": {
        "embed_dim": 512,
        "depth": 12,
        "num_heads": 8,
        "io_channels": 64,
        "cond_dim": 128,
        "cond_tokens": 32,
        "frames": 256,
        "batch": 4,
        "precision": "fp32",
    },
    "sa3-medium": {
        "embed_dim": 1536,
        "depth": 24,
        "num_heads": 24,
        "io_channels": 256,
        "cond_dim": 768,
        "cond_tokens": 64,
        "frames": 108,
        "batch": 4,
        "precision": "bf16",
    },
}
TARGET_MODULES = ["to_qkv", "to_out", "to_q", "to_kv", "ff.ff.0.proj", "ff.ff.2"]
# Dense bf16 peak FLOP/s (no sparsity) by device-name substring.
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12}
MODES = ("none", "none+log", "eisbach")


def build_model(p: dict, adapter: str, device: torch.device):
    from eisbach.cloud import shaped_dit

    torch.manual_seed(0)
    dit = shaped_dit(p, zero_init_branch_outputs=False)
    if p["precision"] == "bf16" and device.type == "cuda":
        dit = dit.to(torch.bfloat16)  # the frozen base in bf16, as SA3 runs half
    if adapter != "none":
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(
            r=16,
            lora_alpha=16,
            target_modules=TARGET_MODULES,
            use_dora=adapter == "dora",
            lora_dropout=0.0,
        )
        dit = get_peft_model(dit, config)
        for param in dit.parameters():  # adapters train in fp32
            if param.requires_grad:
                param.data = param.data.float()
    else:
        dit.requires_grad_(True)
    return dit.to(device).train()


def make_batch(p: dict, device: torch.device):
    g = torch.Generator().manual_seed(0)
    b, frames = p["batch"], p["frames"]
    x0 = torch.randn(b, p["io_channels"], frames, generator=g)
    noise = torch.randn(x0.shape, generator=g)
    t = sample_timesteps("logit_normal", b, g)
    mask = torch.ones(b, frames, dtype=torch.bool)
    mask[1:, frames - frames // 8 :] = False  # some padding, as real batches have
    cond = torch.randn(b, p["cond_tokens"], p["cond_dim"], generator=g)
    cond_mask = torch.ones(b, p["cond_tokens"], dtype=torch.bool)
    x_t, target = noisy_input("rectified_flow", x0, noise, t)
    return [v.to(device) for v in (x_t, target, t, mask, cond, cond_mask)]


def make_step(model, batch, p: dict, device: torch.device):
    params = [q for q in model.parameters() if q.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.0)
    schemes = {"none": get_scheme("none"), "eisbach": get_scheme("eisbach", lam=0.5)}
    x_t, target, t, mask, cond, cond_mask = batch
    bf16 = p["precision"] == "bf16"

    def step(mode: str) -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            pred = model(x_t, t, cross_attn_cond=cond, cross_attn_mask=cond_mask)
        weights = schemes["eisbach" if mode == "eisbach" else "none"](pred, target, t, mask)
        terms = eisbach_terms(pred, mask) if mode != "none" else None
        per_sample, loss = weighted_loss(pred, target, weights, mask)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        # the log reads the per-sample values on the host after backward, as the loop does
        logged = [per_sample.detach(), weights] + ([terms["H"], terms["w"]] if terms else [])
        torch.stack(logged, dim=1).cpu()
        optimizer.step()

    return step


def time_weight_alone(batch, p: dict, device: torch.device, repeats: int = 200) -> float:
    """Seconds per call of the eisbach scheme plus the H/w log terms, on the batch's shape."""
    _, target, t, mask, _, _ = batch
    dtype = torch.bfloat16 if p["precision"] == "bf16" else torch.float32
    pred = torch.randn(target.shape, device=device).to(dtype).requires_grad_(True)
    scheme = get_scheme("eisbach", lam=0.5)
    for _ in range(10):
        scheme(pred, target, t, mask)
    sync(device)
    started = time.perf_counter()
    for _ in range(repeats):
        scheme(pred, target, t, mask)
        eisbach_terms(pred, mask)["w"].mean().item()
    sync(device)
    return (time.perf_counter() - started) / repeats


# Ops that only make views or drop autograd history: no kernel runs for them.
NO_KERNEL = ("detach", "view", "alias", "_unsafe_view", "expand", "t.default", "transpose")


def count_kernels(fn) -> int:
    """Aten ops that fn dispatches (each a kernel launch on CUDA), views and detaches aside.

    Measurable here on CPU and what bounds the weight's cost on a GPU at small batches: a
    handful of tiny launches (a few microseconds each) next to the DiT's."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Counter(TorchDispatchMode):
        ops = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if not any(name in str(func) for name in NO_KERNEL):
                Counter.ops += 1
            return func(*args, **(kwargs or {}))

    with Counter():
        fn()
    return Counter.ops


def weight_kernels(batch) -> int:
    """Kernels of the eisbach scheme plus the H/w log terms on the batch's shape."""
    _, target, t, mask, _, _ = batch
    pred = torch.randn(target.shape, device=target.device)
    scheme = get_scheme("eisbach", lam=0.5)
    return count_kernels(lambda: (scheme(pred, target, t, mask), eisbach_terms(pred, mask)))


def paired_ratio(a: list[float], b: list[float], n_boot: int = 2000, seed: int = 0) -> dict:
    """Median, quartiles and a bootstrap 95% CI of the median of the per-round ratios a_i/b_i."""
    ratios = [x / y for x, y in zip(a, b, strict=True) if y > 0]
    out = {"n": len(ratios), "median": statistics.median(ratios) if ratios else float("nan")}
    if len(ratios) >= 2:
        q1, _, q3 = statistics.quantiles(ratios, n=4)
        rng = random.Random(seed)
        boot = sorted(statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(n_boot))
        out |= {"q1": q1, "q3": q3, "ci95": [boot[int(0.025 * n_boot)], boot[int(0.975 * n_boot)]]}
    return out


def format_ratio(name: str, r: dict) -> str:
    if "ci95" not in r:
        return f"{name} = {r['median']:.4f} (n={r['n']})"
    return (
        f"{name} = {r['median']:.4f}  IQR [{r['q1']:.4f}, {r['q3']:.4f}]  "
        f"95% CI of the median [{r['ci95'][0]:.4f}, {r['ci95'][1]:.4f}]  ({r['n']} paired rounds)"
    )


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory(device: torch.device) -> dict:
    if device.type == "cuda":
        gib = torch.cuda.max_memory_allocated(device) / 2**30
        return {"peak_memory_gib": gib, "peak_memory_kind": "cuda max_memory_allocated"}
    import resource

    gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 2**30
    return {"peak_memory_gib": gib, "peak_memory_kind": "host peak RSS"}


def count_flops(step, device) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        step("none")
    sync(device)
    return float(counter.get_total_flops())


def peak_flops(device: torch.device, override: float | None) -> float | None:
    if override:
        return override * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16.items() if k in name), None)


def preset_shape(args) -> dict:
    """The preset's shape with the command line's depth, width, heads, frames and batch."""
    p = dict(PRESETS[args.preset])
    for key in ("depth", "embed_dim", "num_heads", "frames", "batch"):
        if getattr(args, key, None) is not None:
            p[key] = getattr(args, key)
    if args.embed_dim is not None and args.num_heads is None:
        p["num_heads"] = max(1, args.embed_dim // 64)  # head dim 64, as the presets
    return p


def run(args) -> dict:
    p = preset_shape(args)
    if args.precision:
        p["precision"] = args.precision
    device = torch.device(
        args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    )
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    model = build_model(p, args.adapter, device)
    batch = make_batch(p, device)
    step = make_step(model, batch, p, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(args.warmup):
        for mode in MODES:
            step(mode)
    sync(device)
    times = {mode: [] for mode in MODES}
    cpu_times = {mode: [] for mode in MODES}
    for i in range(args.steps):
        # Each round runs every mode once, in a rotated order so that no mode always runs first
        # (or right after the same mode); a round's modes share the load of the moment.
        k = i % len(MODES)
        order = MODES[k:] + MODES[:k]
        order = order if (i // len(MODES)) % 2 == 0 else order[::-1]
        for mode in order:
            sync(device)
            cpu_started, started = time.process_time(), time.perf_counter()
            step(mode)
            sync(device)
            times[mode].append(time.perf_counter() - started)
            cpu_times[mode].append(time.process_time() - cpu_started)
    median = {mode: statistics.median(v) for mode, v in times.items()}
    weight_s = time_weight_alone(batch, p, device)
    tokens = p["batch"] * p["frames"]
    result = {
        "preset": args.preset,
        "shape": p,
        "adapter": args.adapter,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads() if device.type == "cpu" else None,
        "parameters": sum(q.numel() for q in model.parameters()),
        "trainable_parameters": sum(q.numel() for q in model.parameters() if q.requires_grad),
        "steps_per_mode": args.steps,
        "median_step_s": median,
        "iqr_step_s": {
            mode: statistics.quantiles(v, n=4)[2] - statistics.quantiles(v, n=4)[0]
            for mode, v in times.items()
            if len(v) >= 2
        },
        "ratio_eisbach_over_none": median["eisbach"] / median["none"],
        "ratio_eisbach_over_none_log": median["eisbach"] / median["none+log"],
        # The ratio of each round's two steps (run back to back, so under the same load), its
        # median, inter-quartile range and a bootstrap 95% CI of the median: the noise-robust
        # reading. Also from CPU time (user + sys of this process), which other processes'
        # load moves less than wall time.
        "paired_ratio": {
            "eisbach/none": paired_ratio(times["eisbach"], times["none"]),
            "eisbach/none+log": paired_ratio(times["eisbach"], times["none+log"]),
        },
        "paired_cpu_ratio": (
            {
                "eisbach/none": paired_ratio(cpu_times["eisbach"], cpu_times["none"]),
                "eisbach/none+log": paired_ratio(cpu_times["eisbach"], cpu_times["none+log"]),
            }
            if device.type == "cpu"
            else None
        ),
        "median_cpu_step_s": {m: statistics.median(v) for m, v in cpu_times.items()},
        "tokens_per_s": {mode: tokens / s for mode, s in median.items()},
        # the training steps' peak: CUDA's max_memory_allocated, or on CPU the process's RSS
        **peak_memory(device),
        # the weight alone (scheme + H/w for the log) on a prediction of the batch's shape:
        # a noise-free bound on its share of the step
        "weight_alone_s": weight_s,
        "weight_alone_fraction_of_step": weight_s / median["none"],
        "kernels": {
            "weight": weight_kernels(batch),
            "bare_step": count_kernels(lambda: step("none")),
        },
    }
    flops = count_flops(step, device) if device.type == "cuda" or args.flops else None
    peak = peak_flops(device, args.peak_tflops)
    if flops:
        result["flops_per_step"] = flops
        result["achieved_tflops"] = {mode: flops / s / 1e12 for mode, s in median.items()}
        if peak:
            result["mfu"] = {mode: flops / s / peak for mode, s in median.items()}
    return result


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu-mid")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--adapter", choices=["dora", "lora", "none"], default="dora")
    parser.add_argument(
        "--steps", type=int, default=30, help="timed rounds (one step of every mode each)"
    )
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per mode")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads")
    parser.add_argument("--precision", choices=["fp32", "bf16"], help="override the preset's")
    parser.add_argument("--depth", type=int)
    parser.add_argument("--embed-dim", dest="embed_dim", type=int)
    parser.add_argument("--num-heads", dest="num_heads", type=int)
    parser.add_argument("--frames", type=int)
    parser.add_argument("--batch", type=int)
    parser.add_argument("--flops", action="store_true", help="count FLOPs on CPU too")
    parser.add_argument("--peak-tflops", type=float, help="the device's dense peak, for MFU")
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args(argv)
    result = run(args)
    m = result["median_step_s"]
    print(
        f"{result['preset']} on {result['device']}: {result['parameters'] / 1e6:.1f} M parameters "
        f"({result['trainable_parameters'] / 1e6:.2f} M trainable, {result['adapter']}), "
        f"batch {result['shape']['batch']} x {result['shape']['frames']} frames, "
        f"{result['shape']['precision']}"
    )
    iqr = result["iqr_step_s"]
    for mode in MODES:
        line = (
            f"  {mode:<9} median step {m[mode] * 1e3:9.2f} ms (IQR {iqr.get(mode, float('nan')) * 1e3:7.2f} ms)"
            f"  {result['tokens_per_s'][mode]:10.0f} tokens/s"
        )
        if "mfu" in result:
            line += f"  MFU {100 * result['mfu'][mode]:5.1f}%"
        elif "achieved_tflops" in result:
            line += f"  {result['achieved_tflops'][mode]:.3f} TFLOP/s"
        print(line)
    print(
        f"  the weight alone (scheme + log terms): {result['weight_alone_s'] * 1e3:.3f} ms, "
        f"{100 * result['weight_alone_fraction_of_step']:.3f}% of the bare step; "
        f"{result['kernels']['weight']} kernels against the bare step's {result['kernels']['bare_step']}"
    )
    print(f"  peak memory {result['peak_memory_gib']:.2f} GiB ({result['peak_memory_kind']})")
    print(
        f"ratio of the medians: eisbach/none = {result['ratio_eisbach_over_none']:.4f}   "
        f"eisbach/none+log = {result['ratio_eisbach_over_none_log']:.4f}   (goal <= 1.01)"
    )
    print("paired per-round ratios (wall time):")
    for name, r in result["paired_ratio"].items():
        print("  " + format_ratio(name, r))
    if result["paired_cpu_ratio"]:
        print("paired per-round ratios (CPU time of this process):")
        for name, r in result["paired_cpu_ratio"].items():
            print("  " + format_ratio(name, r))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)
    return result


if __name__ == "__main__":
    main()
