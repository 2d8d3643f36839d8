"""The paper profile's anchor metrics, each computed with the library that defines it, at
stable-audio-metrics' settings (docs/metrics.md, "Anchor metrics"):

* ``fd_openl3``: Fréchet distance on openl3 frames (torchopenl3; eisbach.anchors.openl3) of each
  sample group against each reference split, with its n, FD-infinity and an equal-n comparison
  (eisbach.fd_inf);
* ``kl_passt``: KL(sample || its own clip) of PaSST's AudioSet class probabilities
  (hear21passt; eisbach.anchors.passt), over the samples of eval captions (prompt ``cap-<id>``);
* ``clap_score``: cosine of LAION-CLAP's text and audio embeddings (laion_clap;
  eisbach.anchors.clap).

Weights come from a local file or the HF cache named in ``evaluate.anchors.<name>``; nothing is
downloaded. Where they are absent (or the library fails to load them) the anchor is skipped and
the summary says why. A config that asks for an anchor with no way to compute it is refused by
``check_config`` before any job runs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from eisbach.anchors.weights import ClipCache, WeightsMissing, has_source, resolve

log = logging.getLogger(__name__)

ANCHORS = ("fd_openl3", "kl_passt", "clap_score")
OPTION_KEYS = ("device", "fd_inf", "paper_reported")


def check_config(config: dict) -> None:
    """Refuse, naming the key, an anchor that cannot be computed whatever is on the machine."""
    anchors = (config.get("evaluate") or {}).get("anchors") or {}
    for name, spec in anchors.items():
        if name in OPTION_KEYS:
            continue
        key = f"evaluate.anchors.{name}"
        if name not in ANCHORS:
            raise ValueError(f"{key}: unknown anchor (known: {', '.join(ANCHORS)})")
        if not isinstance(spec, dict) or not has_source(spec):
            raise ValueError(
                f"{key}: no way to find its weights: set `weights` (a local file) or "
                "`hf: {repo, file}` (a file already in the Hugging Face cache)"
            )
    if "kl_passt" in anchors and not (config.get("sample") or {}).get("captions_from_eval", 0):
        raise ValueError(
            "evaluate.anchors.kl_passt compares each sample with its own reference clip, which "
            "only samples of eval captions have: sample.captions_from_eval is 0"
        )


def device_of(cfg: dict) -> str:
    import torch

    wanted = cfg.get("device", "auto")
    if wanted == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return wanted


def mean_row(values: list[float], alpha: float = 0.05) -> dict:
    """Mean with a t interval over samples (treated as independent: samples of one run share
    its weights, so the interval is of the sampling noise given those runs)."""
    import scipy.stats

    v = np.asarray(values, float)
    row = {"n": int(v.size), "mean": float(v.mean()) if v.size else None, "sd": None}
    if v.size >= 2:
        sd = float(v.std(ddof=1))
        half = float(scipy.stats.t.ppf(1 - alpha / 2, v.size - 1)) * sd / np.sqrt(v.size)
        row |= {"sd": sd, "ci_low": row["mean"] - half, "ci_high": row["mean"] + half}
    return row


def skipped(reason: str) -> dict:
    return {"skipped": True, "reason": reason, "rows": []}


def _load(name: str, spec: dict, device: str):
    """(model, weights path) or an exception saying why the anchor cannot run here."""
    from eisbach.anchors import clap, openl3, passt

    weights = resolve(spec, f"evaluate.anchors.{name}")
    if name == "fd_openl3":
        return openl3.load(weights, device), weights
    if name == "kl_passt":
        return passt.load(weights, device), weights
    return clap.load(weights, device, spec.get("hf_cache")), weights


def anchor_table(
    rows: list[dict],
    references: list[dict],
    cfg: dict,
    cache_dir: Path,
    group_of: Callable[[dict], str],
) -> dict:
    """Every anchor of ``cfg`` (the ``evaluate.anchors`` mapping), or why it was skipped.

    rows: the per-sample rows (path, prompt, prompt_id, ...); references: the training and eval
    clips (id, split, path); group_of: a sample's group label (FD pools samples by it)."""
    out = {}
    device = device_of(cfg)
    for name in ANCHORS:
        spec = cfg.get(name)
        if spec is None:
            out[name] = skipped(f"evaluate.anchors.{name} is not set")
            continue
        try:
            model, weights = _load(name, spec, device)
        except WeightsMissing as err:
            out[name] = skipped(f"weights absent: {err}")
            log.warning("%s skipped: %s", name, err)
            continue
        except (ImportError, OSError, RuntimeError, ValueError) as err:
            out[name] = skipped(f"could not load the model: {type(err).__name__}: {err}")
            log.warning("%s skipped: %s", name, err)
            continue
        started = time.perf_counter()
        compute = {"fd_openl3": _fd_openl3, "kl_passt": _kl_passt, "clap_score": _clap_score}[name]
        result = compute(model, weights, rows, references, cfg, Path(cache_dir), group_of, device)
        result |= {"skipped": False, "weights": str(weights), "device": device}
        result["seconds"] = round(time.perf_counter() - started, 2)
        out[name] = result
    return out


def _fd_openl3(model, weights, rows, references, cfg, cache_dir, group_of, device) -> dict:
    from eisbach import fd_inf
    from eisbach.anchors import openl3
    from eisbach.frechet import frechet_from_stats, gaussian_stats

    cache = ClipCache(cache_dir, "openl3", weights, openl3.SETTINGS)

    def frames(path) -> np.ndarray:
        return cache.get_or_compute(Path(path), lambda p: openl3.embed(p, model, device))

    groups: dict[str, list[np.ndarray]] = {}
    for row in rows:
        groups.setdefault(group_of(row), []).append(frames(row["path"]))
    inf_cfg = cfg.get("fd_inf") or {}
    seed = int(inf_cfg.get("seed", 0))
    result_rows, equal = [], {}
    for split in sorted({r["split"] for r in references}):
        ref = [frames(r["path"]) for r in references if r["split"] == split]
        if len(ref) < 2:
            continue
        ref_stats = gaussian_stats(np.concatenate(ref))
        for group, clips in sorted(groups.items()):
            stacked = np.concatenate(clips)
            row = {
                "group": group,
                "reference": split,
                "n_group": len(clips),
                "n_reference": len(ref),
                "frames_group": int(len(stacked)),
                "frames_reference": int(sum(len(c) for c in ref)),
                "fd": frechet_from_stats(*gaussian_stats(stacked), *ref_stats),
            }
            if len(clips) >= 4:
                interval = fd_inf.inf_interval(
                    clips,
                    *ref_stats,
                    seed=seed,
                    repeats=int(inf_cfg.get("repeats", 8)),
                    groups=int(inf_cfg.get("groups", 10)),
                )
                row |= {k: interval[k] for k in ("fd_inf", "ci_low", "ci_high", "r2")}
            else:
                row["note"] = f"FD-infinity needs at least 4 clips; {len(clips)} here"
            result_rows.append(row)
        if len(groups) > 1 and min(len(c) for c in groups.values()) >= 2:
            equal[split] = fd_inf.equal_n(
                groups, *ref_stats, repeats=int(inf_cfg.get("equal_n_repeats", 20)), seed=seed
            )
    return {
        "metric": "FD-openl3",
        "settings": {
            "content_type": openl3.CONTENT_TYPE,
            "input_repr": openl3.INPUT_REPR,
            "embedding_size": openl3.EMBEDDING_SIZE,
            "hop_s": openl3.HOP_S,
            "sample_rate": openl3.SAMPLE_RATE,
            "channels": openl3.CHANNELS,
        },
        "rows": result_rows,
        "equal_n": equal,
    }


def _kl_passt(model, weights, rows, references, cfg, cache_dir, group_of, device) -> dict:
    from eisbach.anchors import passt

    cache = ClipCache(cache_dir, "passt", weights, passt.SETTINGS)
    clips = {r["id"]: r for r in references}

    def probs(path) -> np.ndarray:
        return cache.get_or_compute(Path(path), lambda p: passt.probabilities(p, model, device))

    per_group: dict[str, list[float]] = {}
    unpaired = 0
    for row in rows:
        pid = str(row.get("prompt_id", ""))
        clip = clips.get(pid[4:]) if pid.startswith("cap-") else None
        if clip is None:
            unpaired += 1
            continue
        value = passt.kl(probs(row["path"]), probs(clip["path"]))
        per_group.setdefault(group_of(row), []).append(value)
    out_rows = [{"group": g} | mean_row(v) for g, v in sorted(per_group.items())]
    return {
        "metric": "KL-PaSST",
        "settings": {"arch": passt.ARCH, "sample_rate": passt.SAMPLE_RATE, "collect": "mean"},
        "rows": out_rows,
        "samples_without_reference_clip": unpaired,
    }


def _clap_score(model, weights, rows, references, cfg, cache_dir, group_of, device) -> dict:
    from eisbach.anchors import clap

    cache = ClipCache(cache_dir, "clap", weights, clap.SETTINGS)
    prompts = sorted({r["prompt"] for r in rows})
    text = dict(zip(prompts, clap.text_embeddings(model, prompts), strict=True)) if prompts else {}
    per_group: dict[str, list[float]] = {}
    for row in rows:
        audio = cache.get_or_compute(Path(row["path"]), lambda p: clap.audio_embedding(p, model))
        per_group.setdefault(group_of(row), []).append(clap.cosine(audio, text[row["prompt"]]))
    return {
        "metric": "CLAP score",
        "settings": {"checkpoint": clap.CHECKPOINT, "sample_rate": clap.SAMPLE_RATE},
        "rows": [{"group": g} | mean_row(v) for g, v in sorted(per_group.items())],
    }
