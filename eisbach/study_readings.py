"""The README's study readings, regenerated from an evaluate stage's summary.json, so that no
number in that table is typed by hand: each claim's estimate, its interval, its band delta and
the reading, with the minimum detectable effect (eisbach.stats) at the study's seed count and
at others, beside the effect the paper claims where it states one.

    .venv/bin/python -m eisbach.study_readings results/metrics/summary.json
    .venv/bin/python -m eisbach.study_readings --factors    # (mde - delta) / s by seed count
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from eisbach.stats import minimum_detectable_effect

LABELS = {
    "table2.ssm_block_scale": "Table 2 block scale (s)",
    "table2.spectral_contrast_db": "Table 2 spectral contrast (dB)",
    "table2.flux_sparsity": "Table 2 flux sparsity",
    "table2.pca_coverage": "Table 2 PCA coverage (dB^2)",
    "table2.dynamic_range_db": "Table 2 dynamic range (dB)",
    "table2.dynamic_range_levels": "Table 2 levels (barrier > 40 dB and baseline < 25 dB)",
    "P1": "P1: w higher at t < 0.3 than at t > 0.7",
    "P2": "P2: Vendi at the fixed lambda above Vendi beyond 0.8",
    "P3": "P3: consistency and diversity both up",
    "P4": "P4: DoRA covers more PCA area than LoRA",
    "P5": "P5: corr(H, loss) positive at low t, lower at high t",
}
# The effects the paper states as numbers (barrier - baseline, in the metric's unit); its other
# claims give a direction only.
PAPER_EFFECTS = {"table2.dynamic_range_db": (15.0, "> 40 dB against < 25 dB: a 15 dB gap")}


def num(value) -> str:
    if value is None or not np.isfinite(value):
        return ""
    return f"{value:+.3g}" if value else "0"


def size(value) -> str:
    return "" if value is None or not np.isfinite(value) else f"{value:.3g}"


def parts_of(claim: dict) -> list[dict]:
    parts = [v for v in claim.values() if isinstance(v, dict) and "seed_sd" in v]
    return parts or ([claim] if "seed_sd" in claim else [])


def readings_table(summary: dict) -> str:
    """One markdown row per claim: estimate, 95 % interval, delta, reading (and why), mde."""
    rows = [
        "| claim | estimate | 95 % CI | delta | reading | mde (80 % power) |",
        "|---|---|---|---|---|---|",
    ]
    for c in summary["claims"]:
        parts = [v for v in c.values() if isinstance(v, dict) and "verdict" in v]
        if parts and "ci_low" not in c:
            estimate = ", ".join(num(p.get("diff")) for p in parts)
            ci = ", ".join(f"[{num(p.get('ci_low'))}, {num(p.get('ci_high'))}]" for p in parts)
        else:
            estimate = num(c.get("diff"))
            ci = f"[{num(c['ci_low'])}, {num(c['ci_high'])}]" if "ci_low" in c else ""
        reading = c["verdict"]
        if c["verdict"] != c.get("verdict_unadjusted", c["verdict"]):
            reading += f" ({c['verdict_unadjusted']} before Holm)"
        if c.get("min_effect") is not None:
            delta = f"{c['min_effect']:.3g}"
        else:  # a conjunction without a band of its own: its parts'
            delta = ", ".join(f"{p['min_effect']:.3g}" for p in parts if "min_effect" in p)
        label = LABELS.get(c["id"], c["id"])
        rows.append(f"| {label} | {estimate} | {ci} | {delta} | {reading} | {size(c.get('mde'))} |")
    return "\n".join(rows)


def detectable_table(summary: dict, seeds=(3, 5, 10)) -> str:
    """Per claim with a spread between seeds: delta, the seeds' SD s, and the minimum detectable
    effect at each seed count (at Holm's first level for this summary's family), if the
    seeds spread as they did here; the paper's claimed effect where it states one."""
    family = int(summary["multiple_comparisons"]["family"])
    alpha = float(summary["multiple_comparisons"]["alpha"])
    level = alpha / (2 * max(family, 1))
    head = " | ".join(f"mde, {k} seeds" for k in seeds)
    rows = [
        f"| claim | delta | s | {head} | paper's effect |",
        "|---|---|---|" + "---|" * len(seeds) + "---|",
    ]
    for c in summary["claims"]:
        parts = parts_of(c)
        if not parts:
            continue
        s = max(p["seed_sd"] for p in parts)
        delta = max(p.get("min_effect", 0.0) for p in parts)
        mdes = [
            max(
                minimum_detectable_effect(p["seed_sd"], k, p.get("min_effect", 0.0), level)
                for p in parts
            )
            for k in seeds
        ]
        paper = PAPER_EFFECTS.get(c["id"])
        cells = " | ".join(f"{m:.3g}" for m in mdes)
        rows.append(
            f"| {LABELS.get(c['id'], c['id'])} | {delta:.3g} | {s:.3g} | {cells} | "
            f"{paper[1] if paper else 'a direction only'} |"
        )
    return "\n".join(rows)


def factors_table(family: int = 11, alpha: float = 0.05, seeds=(3, 4, 5, 6, 8, 10)) -> str:
    """(mde - delta) / s by seed count: at Holm's first level and for one claim alone."""
    rows = [
        "| training seeds k | " + " | ".join(str(k) for k in seeds) + " |",
        "|---|" + "---|" * len(seeds),
    ]
    for label, level in (
        (f"(mde - delta) / s, Holm's first level ({family} claims)", alpha / (2 * family)),
        ("(mde - delta) / s, one claim alone (alpha / 2)", alpha / 2),
    ):
        cells = " | ".join(f"{minimum_detectable_effect(1.0, k, 0.0, level):.2f}" for k in seeds)
        rows.append(f"| {label} | {cells} |")
    return "\n".join(rows)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("summary", type=Path, nargs="?", help="an evaluate summary.json")
    parser.add_argument("--factors", action="store_true", help="print (mde - delta) / s by k")
    parser.add_argument("--seeds", type=int, nargs="+", default=[3, 5, 10])
    args = parser.parse_args(argv)
    if args.factors or args.summary is None:
        print(factors_table())
    if args.summary is not None:
        summary = json.loads(args.summary.read_text())
        print(readings_table(summary))
        print()
        print(detectable_table(summary, tuple(args.seeds)))


if __name__ == "__main__":
    main()
