"""peft adapters (LoRA, DoRA) on a backend's DiT: build, save as safetensors, reload, merge.

The rank, alpha and target modules come from config (``grid.adapters`` and
``train.target_modules``; the backend's ``peft_target_modules`` when that is unset). peft's
DoRA keeps one magnitude per output row of each target weight.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from eisbach.atomic import share_mode

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
    """peft's adapter_model.safetensors + adapter_config.json, each renamed into place.

    ``base_model_name_or_path`` names the base folder relative to the adapter's folder (the
    backend's load_dit records the folder it loaded), so the pair still finds its base after the
    results are moved; ``base_dir`` resolves it.
    """
    out_dir = Path(out_dir)
    tmp_dir = out_dir / ".adapter.tmp"
    shutil.rmtree(tmp_dir, ignore_errors=True)
    model.save_pretrained(tmp_dir, safe_serialization=True)
    config_file = tmp_dir / "adapter_config.json"
    config = json.loads(config_file.read_text())
    base = config.get("base_model_name_or_path")
    if base and Path(base).is_dir():
        config["base_model_name_or_path"] = os.path.relpath(Path(base).resolve(), out_dir.resolve())
    # peft keeps target_modules as a set, written in the order of string hashing, which
    # changes from process to process; sorted, the file is the same for the same run.
    if isinstance(config.get("target_modules"), list):
        config["target_modules"] = sorted(config["target_modules"])
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    for name in ADAPTER_FILES:
        share_mode(tmp_dir / name)
        (tmp_dir / name).replace(out_dir / name)
    shutil.rmtree(tmp_dir)


def base_dir(run_dir) -> Path | None:
    """The base model folder that the adapter of run_dir was trained on, or None if unnamed."""
    config = json.loads((Path(run_dir) / "adapter_config.json").read_text())
    base = config.get("base_model_name_or_path")
    return Path(run_dir) / base if base else None


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


__all__ = ["attach", "base_dir", "changed_frozen", "frozen_snapshot", "load", "lora_config", "save"]
