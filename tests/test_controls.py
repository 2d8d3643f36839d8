"""Controls paired with eisbach runs on the held-out loss, with a t interval over training seeds."""

import pytest
from conftest import adapter_run

from eisbach.controls import control_comparisons, pairs_by_comparison

CFG = {"alpha": 0.05, "seed": 0}
DORA = {"type": "dora", "rank": 4, "alpha": 4}
LORA = {"type": "lora", "rank": 4, "alpha": 4}
CLIPS = [f"c{i}" for i in range(6)]
T = [0.1, 0.5, 0.9]


def rows(offset, spread=0.0):
    """Held-out rows: a clip-and-t dependent base loss plus offset (+- spread by clip)."""
    return [
        {
            "sample_id": c,
            "t": t,
            "loss": 1.0 + i * 0.3 + t + offset + spread * (-1) ** i,
        }
        for i, c in enumerate(CLIPS)
        for t in T
    ]


def grid(specs):
    """specs: (scheme, adapter, seed, offset, spread) -> runs and their held-out rows."""
    runs, heldout = {}, {}
    for scheme, adapter, seed, offset, spread in specs:
        r = adapter_run(scheme, adapter, seed)
        runs[r["run_id"]] = r
        heldout[r["run_id"]] = rows(offset, spread)
    return runs, heldout


def by_control(results):
    return {(c["control"], c["reference"], c["adapter"]): c for c in results}


def test_readings_follow_the_paired_ci():
    eisbach = {"name": "eisbach", "lam": 0.5}
    matched = {"name": "constant", "c": "matched", "lam": 0.5}
    runs, heldout = grid(
        [(eisbach, DORA, s, 0.0, 0.0) for s in (0, 1)]
        + [(matched, DORA, s, 0.05, 0.01) for s in (0, 1)]
        + [({"name": "eisbach_shuffled", "lam": 0.5}, DORA, s, -0.2, 0.01) for s in (0, 1)]
        # the seeds disagree (+0.1, -0.1): only the spread between fine-tunes widens the CI,
        # however much the clips of one seed scatter
        + [
            ({"name": "eisbach_inverse", "lam": 0.5}, DORA, s, d, 0.3)
            for s, d in ((0, 0.1), (1, -0.1))
        ]
    )
    out = by_control(control_comparisons(runs, heldout, CFG))
    matched = out[("constant-matched-l0.5", "eisbach-l0.5", "dora-r4")]
    assert matched["reading"] == "eisbach lower" and matched["seeds"] == 2
    assert matched["units"] == 2 * len(CLIPS)
    assert matched["diff"] == pytest.approx(0.05) and 0 < matched["ci_low"] < 0.05
    assert matched["diff_by_t"] == pytest.approx({"0.1": 0.05, "0.5": 0.05, "0.9": 0.05})
    assert matched["control_loss"] - matched["reference_loss"] == pytest.approx(0.05)
    shuffled = out[("eisbach_shuffled-l0.5", "eisbach-l0.5", "dora-r4")]
    assert shuffled["reading"] == "control lower" and shuffled["ci_high"] < 0
    inverse = out[("eisbach_inverse-l0.5", "eisbach-l0.5", "dora-r4")]
    assert inverse["reading"] == "no difference detected"
    assert inverse["ci_low"] < 0 < inverse["ci_high"]


def test_the_ci_carries_the_variation_between_seeds():
    """Every clip agrees within a seed, but the seeds disagree: pooling the clips would call it
    "eisbach lower"; the t interval over seeds does not."""
    eisbach = {"name": "eisbach", "lam": 0.5}
    runs, heldout = grid(
        [(eisbach, DORA, s, 0.0, 0.0) for s in (0, 1)]
        + [({"name": "none"}, DORA, 0, 0.3, 0.001), ({"name": "none"}, DORA, 1, -0.1, 0.001)]
    )
    (result,) = control_comparisons(runs, heldout, CFG)
    assert result["diff"] == pytest.approx(0.1)
    assert result["ci_low"] < 0 < result["ci_high"]
    assert result["reading"] == "no difference detected"


def test_one_seed_is_inconclusive_whatever_the_ci():
    runs, heldout = grid(
        [({"name": "eisbach", "lam": 0.5}, DORA, 0, 0, 0), ({"name": "none"}, DORA, 0, 0.1, 0.01)]
    )
    (result,) = control_comparisons(runs, heldout, CFG)
    assert result["ci_low"] > 0 and result["diff"] == pytest.approx(0.1)
    assert result["reading"] == "inconclusive" and "one training seed" in result["reason"]


def test_pairs_need_the_same_adapter_seed_and_lam():
    runs, _ = grid(
        [
            ({"name": "eisbach", "lam": 0.3}, DORA, 0, 0, 0),
            ({"name": "eisbach", "lam": 0.7}, DORA, 0, 0, 0),
            ({"name": "eisbach", "lam": 0.7}, LORA, 0, 0, 0),
            ({"name": "none"}, DORA, 0, 0, 0),  # pairs with every lam of its adapter
            ({"name": "min_snr", "gamma": 5}, LORA, 0, 0, 0),
            ({"name": "eisbach_batchmean", "lam": 0.3}, DORA, 0, 0, 0),
            ({"name": "eisbach_batchmean", "lam": 0.3}, DORA, 1, 0, 0),  # no seed-1 eisbach
            ({"name": "eisbach_shuffled", "lam": 0.9}, DORA, 0, 0, 0),  # no lam-0.9 eisbach
            ({"name": "eisbach", "lam": 0.0}, DORA, 0, 0, 0),  # lam 0: no reference of its lam
        ]
    )
    pairs = pairs_by_comparison(runs)
    assert set(pairs) == {
        ("none", 0.3, "dora-r4"),
        ("none", 0.7, "dora-r4"),
        ("min_snr-g5", 0.7, "lora-r4"),
        ("eisbach_batchmean-l0.3", 0.3, "dora-r4"),
    }
    assert pairs[("eisbach_batchmean-l0.3", 0.3, "dora-r4")] == [
        ("eisbach_batchmean-l0.3_dora-r4_s0", "eisbach-l0.3_dora-r4_s0")
    ]


def test_too_few_units_are_inconclusive():
    runs, heldout = grid(
        [({"name": "eisbach", "lam": 0.5}, DORA, 0, 0, 0), ({"name": "none"}, DORA, 0, 0.1, 0)]
    )
    for rid in heldout:
        heldout[rid] = [r for r in heldout[rid] if r["sample_id"] == "c0"]
    (result,) = control_comparisons(runs, heldout, CFG)
    assert result["reading"] == "inconclusive" and "1 paired" in result["reason"]
    assert "diff" not in result


def test_no_reference_no_comparison():
    runs, heldout = grid([({"name": "none"}, DORA, 0, 0, 0)])
    assert control_comparisons(runs, heldout, CFG) == []
