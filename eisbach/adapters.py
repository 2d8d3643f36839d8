"""peft adapters (LoRA, DoRA) on a backend's DiT: build, save as safetensors, reload, merge.

The rank, alpha and target modules come from config (``grid.adapters`` and
``train.target_modules``; the backend's ``peft_target_modules`` when that is unset). peft's
DoRA keeps one magnitude per output row of each target weight.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")


def lora_config(adapter: dict, target_modules: list[str]):
    from peft import LoraConfig

    if adapter["type"] not in ("lora", "dora"):
        raise ValueError(f"unknown adapter type {adapter['type']!r}; known: lora, dora")
    return LoraConfig(
        r=int(adapter["rank"]),
        lora_alpha=float(adapter["alpha"]),
        target_modules=list(target_modules),
        use_dora=adapter["type"] == "dora",
        lora_dropout=0.0,
    )


def target_modules(backend, train_cfg: dict) -> list[str]:
    return list(train_cfg.get("target_modules") or backend.peft_target_modules)


def attach(dit: torch.nn.Module, adapter: dict, modules: list[str], seed: int):
    """dit with a fresh adapter; only the adapter's parameters require grad."""
    from peft import get_peft_model

    torch.manual_seed(seed)  # peft's adapter initialisation
    return get_peft_model(dit, lora_config(adapter, modules))


def save(model, out_dir: Path) -> None:
    """peft's adapter_model.safetensors + adapter_config.json, each renamed into place."""
    out_dir = Path(out_dir)
    tmp_dir = out_dir / ".adapter.tmp"
    shutil.rmtree(tmp_dir, ignore_errors=True)
    model.save_pretrained(tmp_dir, safe_serialization=True)
    for name in ADAPTER_FILES:
        (tmp_dir / name).replace(out_dir / name)
    shutil.rmtree(tmp_dir)


def load(dit: torch.nn.Module, run_dir, merge: bool = False) -> torch.nn.Module:
    """The base dit with the adapter of run_dir (peft), merged into its weights if asked."""
    from peft import PeftModel

    model = PeftModel.from_pretrained(dit, str(run_dir))
    return model.merge_and_unload() if merge else model


def frozen_snapshot(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}


def changed_frozen(model, snapshot: dict[str, torch.Tensor]) -> list[str]:
    """Names of frozen (base) parameters that differ from the snapshot."""
    return [
        n
        for n, p in model.named_parameters()
        if n in snapshot and not torch.equal(p.detach().to(snapshot[n].device), snapshot[n])
    ]


__all__ = ["attach", "changed_frozen", "frozen_snapshot", "load", "lora_config", "save"]
