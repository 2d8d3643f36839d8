"""Stand-ins for the anchors' pretrained weights: each library's own network at its real
architecture, randomly initialised and saved where the config points, so the whole load and
compute path runs without a download. The one reduction: the stand-in roberta-base text encoder
of CLAP has 2 layers instead of 12 (its width, 768, is the real one; the layer count changes no
code path) and a byte-level vocabulary built here."""

from __future__ import annotations

import json
from pathlib import Path

import torch

SNAPSHOT = "0" * 40


def hf_roberta_cache(root: Path) -> Path:
    """An HF cache holding a random roberta-base: config, safetensors, vocab.json, merges.txt."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import RobertaConfig, RobertaModel

    repo = root / "models--roberta-base"
    snap = repo / "snapshots" / SNAPSHOT
    snap.mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(SNAPSHOT)
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for char in ByteLevel.alphabet():
        vocab.setdefault(char, len(vocab))
    vocab["<mask>"] = len(vocab)
    (snap / "vocab.json").write_text(json.dumps(vocab))
    (snap / "merges.txt").write_text("#version: 0.2\n")
    config = RobertaConfig(
        vocab_size=len(vocab),
        hidden_size=768,
        num_hidden_layers=2,
        num_attention_heads=12,
        intermediate_size=3072,
        max_position_embeddings=514,
        type_vocab_size=1,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
    )
    torch.manual_seed(0)
    RobertaModel(config).save_pretrained(snap)
    return root


def save_openl3(path: Path) -> Path:
    from eisbach.anchors import openl3

    torch.manual_seed(1)
    torch.save(openl3.build().state_dict(), path)
    return path


def save_passt(path: Path) -> Path:
    from eisbach.anchors import passt

    torch.manual_seed(2)
    torch.save(passt.build().net.state_dict(), path)
    return path


def save_clap(path: Path, hf_cache: Path) -> Path:
    """Saved as LAION's checkpoints are: {"state_dict": {"module.<key>": ...}}, with the
    position_ids buffer that stable-audio-metrics drops before a strict load."""
    from eisbach.anchors import clap

    torch.manual_seed(3)
    state = clap.build("cpu", hf_cache).model.state_dict()
    state = {f"module.{k}": v for k, v in state.items()}
    state["module.text_branch.embeddings.position_ids"] = torch.arange(514).unsqueeze(0)
    torch.save({"state_dict": state, "epoch": 1}, path)
    return path
