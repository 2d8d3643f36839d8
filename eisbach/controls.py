"""Controls against eisbach on the held-out loss: does the per-sample weight do more than scale
the step?

Every eisbach run with lam > 0 is a reference. Each other scheme of the grid is paired with the
reference runs of the same adapter and training seed, and of the same lam where it has one
(constant at the matched weight, shuffled, batch-mean, inverse); ``none`` and ``min_snr`` pair
with the reference of every lam. The unit is (training seed, eval clip); its value is the
control's held-out loss minus the reference's, averaged over the t grid, on identical inputs
(eisbach.heldout). The mean of the seeds' mean differences gets the t interval over training
seeds that the claims use (eisbach.stats.clustered_ci), and a reading computed from it: "eisbach lower" when the CI
lies above 0, "control lower" when below, "no difference detected" otherwise, and
"inconclusive" with one training seed, where no CI can carry the variation between seeds. These
are diagnostics of the method, not verdicts on the paper's claims.
"""

from __future__ import annotations

import json
from collections import defaultdict

import numpy as np

from eisbach.grid import scheme_tag
from eisbach.stats import clustered_ci


def adapter_tag(adapter: dict) -> str:
    return f"{adapter['type']}-r{adapter['rank']}"


def is_reference(run: dict) -> bool:
    scheme = run["scheme"]
    return scheme["name"] == "eisbach" and float(scheme.get("lam", 0.5)) > 0


def pairs_by_comparison(runs: dict[str, dict]) -> dict[tuple, list[tuple[str, str]]]:
    """(control tag, lam, adapter tag) -> [(control run, reference run)], one pair per seed."""
    adapters = [r for r in runs.values() if r.get("kind") == "adapter"]
    references = {
        (float(r["scheme"].get("lam", 0.5)), json.dumps(r["adapter"], sort_keys=True), r["seed"]): r
        for r in adapters
        if is_reference(r)
    }
    lams = sorted({lam for lam, _, _ in references})
    pairs = defaultdict(list)
    for run in adapters:
        scheme = run["scheme"]
        if is_reference(run):
            continue
        adapter = json.dumps(run["adapter"], sort_keys=True)
        for lam in [float(scheme["lam"])] if "lam" in scheme else lams:
            reference = references.get((lam, adapter, run["seed"]))
            if reference is not None:
                key = (scheme_tag(scheme), lam, adapter_tag(run["adapter"]))
                pairs[key].append((run["run_id"], reference["run_id"]))
    return pairs


def _losses(rows: list[dict]) -> dict[tuple[str, float], float]:
    return {(r["sample_id"], round(float(r["t"]), 6)): float(r["loss"]) for r in rows}


def compare(pairs: list[tuple[str, str]], heldout: dict[str, list[dict]], cfg: dict) -> dict:
    groups, control, reference, by_t = [], [], [], defaultdict(list)
    for control_run, reference_run in pairs:
        a, b = _losses(heldout[control_run]), _losses(heldout[reference_run])
        per_clip = defaultdict(list)
        for key in sorted(a.keys() & b.keys()):
            per_clip[key[0]].append(a[key] - b[key])
            by_t[key[1]].append(a[key] - b[key])
            control.append(a[key])
            reference.append(b[key])
        if per_clip:
            groups.append(np.array([np.mean(d) for d in per_clip.values()]))
    units = sum(len(g) for g in groups)
    result = {
        "seeds": len(pairs),
        "units": units,
        "control_loss": float(np.mean(control)) if control else None,
        "reference_loss": float(np.mean(reference)) if reference else None,
        "diff_by_t": {f"{t:g}": float(np.mean(d)) for t, d in sorted(by_t.items())},
    }
    if units < 2:
        return result | {
            "reading": "inconclusive",
            "reason": f"{units} paired (seed, clip) units; the eval split needs 2 or more",
        }
    diff, lo, hi = clustered_ci(groups, float(cfg["alpha"]))
    result |= {"diff": diff, "ci_low": lo, "ci_high": hi}
    if len(groups) < 2:
        return result | {
            "reading": "inconclusive",
            "reason": "one training seed: the CI covers clip-to-clip variation only",
        }
    if lo > 0:
        reading = "eisbach lower"
    elif hi < 0:
        reading = "control lower"
    else:
        reading = "no difference detected"
    return result | {"reading": reading}


def control_comparisons(
    runs: dict[str, dict], heldout: dict[str, list[dict]], cfg: dict
) -> list[dict]:
    """One entry per (control, lam, adapter): the paired held-out loss difference control -
    eisbach with its t interval over training seeds and reading (cfg: the evaluate section)."""
    out = []
    for (control, lam, adapter), pairs in sorted(pairs_by_comparison(runs).items()):
        out.append(
            {
                "control": control,
                "reference": f"eisbach-l{lam:g}",
                "adapter": adapter,
                "runs": sorted(pairs),
                **compare(pairs, heldout, cfg),
            }
        )
    return out
