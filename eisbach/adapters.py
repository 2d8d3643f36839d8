"""peft adapters (LoRA, DoRA) on a backend's DiT: build, save as safetensors, reload, merge.

The rank and alpha come from ``grid.adapters``. The target modules are resolved against the
DiT itself (``target_modules``): ``train.target_modules`` if set, else the backend's
``adapter_targets(dit)``, always as the full names of the Linear and Conv1d modules they
reach. A name that reaches any other kind of module (an ``nn.Identity``, say) is refused by
name, as is a name that reaches nothing. peft's DoRA keeps one magnitude per output row of
each target weight and divides by that row's norm, so a target whose weight has an all-zero
output row (Stable Audio 3 zero-initialises its pre/postprocess convs) gives NaN; ``plan``
leaves such layers out of a DoRA adapter and says so. Stable Audio 3's own DoRA (norm + 1e-12)
cannot move them either: their magnitude starts at 0, so the layer's output and every
gradient reaching its adapter stay exactly 0 (tests/test_sa3_medium.py).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from eisbach.atomic import share_mode

ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")


ADAPTABLE = (torch.nn.Linear, torch.nn.Conv1d)


def lora_config(adapter: dict, target_modules: list[str]):
    from peft import LoraConfig

    if adapter["type"] not in ("lora", "dora"):
        raise ValueError(f"unknown adapter type {adapter['type']!r}; known: lora, dora")
    return LoraConfig(
        r=int(adapter["rank"]),
        lora_alpha=float(adapter["alpha"]),
        target_modules=sorted(target_modules),
        use_dora=adapter["type"] == "dora",
        lora_dropout=0.0,
    )


def adaptable_modules(dit: torch.nn.Module) -> list[str]:
    """Full names of every Linear and Conv1d of dit, sorted."""
    return sorted(name for name, m in dit.named_modules() if name and isinstance(m, ADAPTABLE))


def resolve_targets(dit: torch.nn.Module, names: list[str], where: str) -> list[str]:
    """The full names of the modules that ``names`` reach by peft's rule (the name itself or a
    dotted suffix), sorted. Raises naming every name that reaches nothing or reaches a module
    peft cannot adapt here (anything but Linear and Conv1d)."""
    modules = dict(dit.named_modules())
    found, problems = set(), []
    for target in names:
        hits = [n for n in modules if n and (n == target or n.endswith("." + target))]
        wrong = [
            f"{n} ({type(modules[n]).__name__})"
            for n in hits
            if not isinstance(modules[n], ADAPTABLE)
        ]
        if not hits:
            problems.append(f"{target!r} matches no module")
        elif wrong:
            problems.append(f"{target!r} reaches {', '.join(wrong[:4])}")
        found.update(hits)
    if problems:
        raise ValueError(
            f"{where}: {'; '.join(problems)}; adapters attach to Linear and Conv1d modules only"
        )
    return sorted(found)


def target_modules(backend, train_cfg: dict, dit: torch.nn.Module) -> list[str]:
    """The adapter's targets on dit: ``train.target_modules`` resolved, or the backend's own."""
    names = train_cfg.get("target_modules")
    if names:
        return resolve_targets(dit, list(names), "train.target_modules")
    return backend.adapter_targets(dit)


def zero_row_weights(dit: torch.nn.Module, targets: list[str]) -> list[str]:
    """Targets whose weight has an output row (a Conv1d output channel) of norm 0."""
    modules = dict(dit.named_modules())
    out = []
    for name in targets:
        weight = modules[name].weight
        if weight.is_meta:
            continue
        if not bool(weight.detach().reshape(weight.shape[0], -1).any(dim=1).all()):
            out.append(name)
    return out


def plan(dit: torch.nn.Module, adapter: dict, targets: list[str]) -> tuple[list[str], dict]:
    """(the modules the adapter attaches to, the targets left out with the reason)."""
    if adapter["type"] != "dora":
        return sorted(targets), {}
    zero = zero_row_weights(dit, targets)
    reason = (
        "DoRA: the weight has an all-zero output row, whose norm peft divides by (NaN); "
        "Stable Audio 3's own DoRA leaves such a layer at exactly 0 (magnitude 0, no gradient)"
    )
    return sorted(set(targets) - set(zero)), {name: reason for name in zero}


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


__all__ = [
    "adaptable_modules",
    "attach",
    "base_dir",
    "changed_frozen",
    "frozen_snapshot",
    "load",
    "lora_config",
    "plan",
    "resolve_targets",
    "save",
    "target_modules",
]
