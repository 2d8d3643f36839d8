"""Table 2: barrier samples paired with baseline samples, CIs clustered by training seed."""

import numpy as np
import pytest
from conftest import adapter_run

from eisbach.evaluate import (
    group_of,
    likeness,
    min_effects,
    prompt_references,
    table2_claims,
    table2_pairs,
)
from eisbach.metrics import METRICS

CFG = {"alpha": 0.05, "seed": 0}
DORA = {"type": "dora", "rank": 4, "alpha": 4}
LORA = {"type": "lora", "rank": 4, "alpha": 4}
PROMPTS = ["piglet", "seal", "raccoon"]
SAMPLE_SEEDS = [0, 1, 2]


def samples(run, shift=0.0):
    """One row per (prompt, sampling seed); every metric = a per-(prompt, seed) level + shift."""
    rng = np.random.default_rng(0)  # the same levels for every run: what shared noise gives
    rows = []
    for p, prompt in enumerate(PROMPTS):
        for s in SAMPLE_SEEDS:
            level = 10.0 + 3 * p + s + rng.normal(0, 0.01)
            rows.append(
                {
                    "run_id": run["run_id"],
                    "group": group_of(run),
                    "prompt_id": prompt,
                    "seed": s,
                    **{name: level + shift for name in METRICS},
                }
            )
    return rows


def build(specs):
    runs, rows = {}, []
    for scheme, adapter, seed, shift in specs:
        run = adapter_run(scheme, adapter, seed)
        runs[run["run_id"]] = run
        rows += samples(run, shift)
    return runs, rows


EISBACH = {"name": "eisbach", "lam": 0.5}
NONE = {"name": "none"}


def claims_by_id(claims):
    return {c["id"]: c for c in claims}


def test_pairs_are_the_table2_run_against_its_baseline():
    runs, rows = build(
        [(EISBACH, DORA, s, 1.0) for s in (0, 1)]
        + [(NONE, DORA, s, 0.0) for s in (0, 1)]
        + [({"name": "eisbach", "lam": 0.3}, DORA, 0, 5.0)]  # another lambda of the sweep
        + [(EISBACH, LORA, 0, 5.0)]  # another adapter type
        + [({"name": "eisbach_shuffled", "lam": 0.5}, DORA, 0, 5.0)]  # a control
    )
    pairs = table2_pairs(rows, runs, CFG)
    assert sorted(seed for _, seed in pairs) == [0, 1]
    for (_, seed), ps in pairs.items():
        assert len(ps) == len(PROMPTS) * len(SAMPLE_SEEDS)
        for barrier, baseline in ps:
            assert barrier["run_id"] == f"eisbach-l0.5_dora-r4_s{seed}"
            assert baseline["run_id"] == f"none_dora-r4_s{seed}"
            assert (barrier["prompt_id"], barrier["seed"]) == (
                baseline["prompt_id"],
                baseline["seed"],
            )
    assert len(table2_pairs(rows, runs, CFG | {"table2_lam": 0.3})) == 1
    assert table2_pairs(rows, runs, CFG | {"table2_adapter": "lora"}) == {}


def test_a_consistent_shift_is_judged_and_pairing_removes_the_prompt_spread():
    runs, rows = build(
        [(EISBACH, DORA, s, 0.5) for s in (0, 1)] + [(NONE, DORA, s, 0.0) for s in (0, 1)]
    )
    claims = claims_by_id(table2_claims(rows, runs, CFG))
    for name, spec in METRICS.items():
        if not spec.table2:
            continue
        c = claims[f"table2.{name}"]
        assert c["diff"] == pytest.approx(0.5) and c["ci_high"] - c["ci_low"] < 1e-6
        assert c["verdict"] == ("supported" if spec.higher_is_barrier else "contradicted")
        assert (c["seeds"], c["pairs"]) == (2, 2 * len(PROMPTS) * len(SAMPLE_SEEDS))


def test_seeds_that_disagree_and_a_single_seed_are_inconclusive():
    runs, rows = build(
        [(EISBACH, DORA, 0, 1.0), (EISBACH, DORA, 1, -1.0)] + [(NONE, DORA, s, 0.0) for s in (0, 1)]
    )
    c = claims_by_id(table2_claims(rows, runs, CFG))["table2.dynamic_range_db"]
    assert c["ci_low"] < 0 < c["ci_high"] and c["verdict"] == "inconclusive"

    runs, rows = build([(EISBACH, DORA, 0, 1.0), (NONE, DORA, 0, 0.0)])
    c = claims_by_id(table2_claims(rows, runs, CFG))["table2.dynamic_range_db"]
    # one seed: the estimate, but no interval and no test (no spread between fine-tunes)
    assert c["diff"] == pytest.approx(1.0) and "ci_low" not in c and "p_value" not in c
    assert c["verdict"] == "inconclusive" and "one training seed" in c["reason"]


def references(spread: float, n: int = 12) -> list[dict]:
    """Training clips whose metrics have sample standard deviation `spread` (eval clips 100x)."""
    values = np.linspace(-1.0, 1.0, n)
    values = 20.0 + spread * values / np.std(values, ddof=1)
    train = [{"split": "train", **{m: v for m in METRICS}} for v in values]
    return train + [{"split": "eval", **{m: 100 * v for m in METRICS}} for v in values]


def test_the_smallest_effect_of_interest_is_a_fraction_of_the_training_clips_spread():
    deltas = min_effects(references(spread=5.0), CFG)
    assert set(deltas) == {name for name, spec in METRICS.items() if spec.table2}
    delta, source = deltas["dynamic_range_db"]
    assert delta == pytest.approx(1.0)  # 0.2 x 5 dB, eval clips ignored
    assert source == "0.2 SD of dynamic_range_db over 12 training clips"
    fixed = min_effects(references(5.0), CFG | {"min_effect": {"pca_coverage": 3.0}})
    assert fixed["pca_coverage"] == (3.0, "evaluate.min_effect.pca_coverage")
    assert fixed["flux_sparsity"][0] == pytest.approx(1.0)
    zero = min_effects(references(5.0), CFG | {"min_effect_sd": 0.0})
    assert zero["ssm_block_scale"][0] == 0.0
    assert min_effects([], CFG)["dynamic_range_db"][0] == 0.0  # no training clips: no band


def test_a_shift_that_excludes_zero_but_is_inside_the_band_reads_negligible():
    """The demo's dynamic range read "supported" on +0.07 dB; against music whose dynamic range
    spreads over dB, a shift that small is no effect either way: the equivalence test says so."""
    runs, rows = build(
        [(EISBACH, DORA, s, 0.07) for s in (0, 1)] + [(NONE, DORA, s, 0.0) for s in (0, 1)]
    )
    refs = references(spread=5.0)
    c = claims_by_id(table2_claims(rows, runs, CFG, refs))["table2.dynamic_range_db"]
    assert c["ci_low"] > 0 and c["min_effect"] == pytest.approx(1.0)
    assert c["verdict"] == "negligible" and c["p_negligible"] < 0.025
    assert "training clips" in c["min_effect_source"]
    # the same shift against music that barely varies is an effect
    c = claims_by_id(table2_claims(rows, runs, CFG, references(spread=0.1)))
    assert c["table2.dynamic_range_db"]["verdict"] == "supported"
    # beyond the band in the other direction: contradicted, not negligible
    runs, rows = build(
        [(EISBACH, DORA, s, -2.0) for s in (0, 1)] + [(NONE, DORA, s, 0.0) for s in (0, 1)]
    )
    c = claims_by_id(table2_claims(rows, runs, CFG, refs))["table2.dynamic_range_db"]
    assert c["ci_high"] < -1.0 and c["verdict"] == "contradicted"


def test_a_grid_without_the_table2_run_names_what_is_missing():
    runs, rows = build([({"name": "eisbach", "lam": 0.3}, DORA, 0, 1.0), (NONE, DORA, 0, 0.0)])
    claims = table2_claims(rows, runs, CFG)
    assert all(c["verdict"] == "inconclusive" for c in claims)
    assert "lambda 0.5 with dora" in claims_by_id(claims)["table2.pca_coverage"]["reason"]


def test_absolute_dynamic_range_levels():
    runs, rows = build(
        [(EISBACH, DORA, s, 35.0) for s in (0, 1)] + [(NONE, DORA, s, 0.0) for s in (0, 1)]
    )
    levels = claims_by_id(table2_claims(rows, runs, CFG))["table2.dynamic_range_levels"]
    # barrier ~ 46 dB > 40, baseline ~ 11 dB < 25: both parts of the conjunction hold
    assert levels["verdict"] == "supported"
    assert levels["barrier_above_40"]["ci_low"] > 0 and levels["baseline_below_25"]["ci_low"] > 0
    assert levels["p_supported"] == max(
        levels[p]["p_supported"] for p in ("barrier_above_40", "baseline_below_25")
    )
    assert levels["barrier_mean"] > 40 > 25 > levels["baseline_mean"]
    # no clips to read the threshold against but the documented real recordings (max 36.7 dB)
    assert levels["threshold_range"]["barrier_threshold_in_range"] is False
    assert "above every measured level" in levels["reason"]


def test_dynamic_range_levels_fail_when_either_part_fails():
    runs, rows = build(
        [(EISBACH, DORA, s, 20.0) for s in (0, 1, 2)] + [(NONE, DORA, s, 0.0) for s in (0, 1, 2)]
    )  # barrier ~ 31 dB, baseline ~ 11 dB: the barrier part fails
    levels = claims_by_id(table2_claims(rows, runs, CFG))["table2.dynamic_range_levels"]
    assert levels["verdict"] == "contradicted"
    assert levels["barrier_above_40"]["verdict"] == "contradicted"
    assert levels["baseline_below_25"]["verdict"] == "supported"


def clip(cid, caption, split="train", status="ok"):
    return {"id": cid, "caption": caption, "split": split, "status": status,
            "path": f"results/data/audio/{cid}.wav", "sha256": cid.ljust(64, "0")}  # fmt: skip


def test_each_prompt_finds_the_music_it_asks_for():
    manifest = [
        clip("d3", "Seal Lawyer's theme. A drone."),
        clip("d1", "seal lawyer's theme. Another drone."),
        clip("d2", "Seal Lawyer's theme. A third.", status="unavailable"),
        clip("d0", "Seal Lawyer's theme. Held out.", split="eval"),
        clip("d4", "Seal Lawyer's theme. A fourth."),
        clip("e0", "An A-B-A piece.", split="eval"),
    ]
    rows = [
        {"prompt_id": "seal", "prompt": "Seal Lawyer"},
        {"prompt_id": "cap-e0", "prompt": "An A-B-A piece."},
        {"prompt_id": "jazz", "prompt": "A jazz trio"},
    ]
    refs = prompt_references(rows, manifest)
    # the first two ok training clips by id, case-insensitive; an eval caption's own clip
    assert [c["id"] for c in refs["seal"]] == ["d1", "d3"]
    assert [c["id"] for c in refs["cap-e0"]] == ["e0"] and refs["cap-e0"][0]["split"] == "eval"
    assert refs["jazz"] == []
    assert set(refs["seal"][0]) == {"id", "split", "path", "caption", "sha256"}


def test_likeness_reads_every_group_by_median_and_quartiles():
    def row(group, peak, static=0.0):
        return (
            {"group": group, "static_clip": static}
            | {name: peak for name in ("onset_peakiness", "flux_sparsity", "spectral_contrast_db")}
            | {"ssm_block_scale": float("nan") if static else 1.0}
        )

    references = [{"split": "train"} | row(None, v) for v in (10.0, 20.0, 30.0)]
    rows = [row("base", v) for v in (2.0, 3.0)] + [row("barrier", 2.0, static=1.0)] * 2
    table = {r["group"]: r for r in likeness(rows, references)}
    assert list(table) == ["training clips", "base samples", "barrier samples"]
    assert table["training clips"]["onset_peakiness"] == {
        "median": 20.0, "q1": 15.0, "q3": 25.0, "n": 3
    }  # fmt: skip
    assert table["base samples"]["clips"] == 2 and table["base samples"]["static_clip"] == 0.0
    assert table["barrier samples"]["static_clip"] == 1.0
    assert table["barrier samples"]["ssm_block_scale"] is None  # static clips have no block


def test_static_clips_are_left_out_of_every_table2_metric_and_their_share_shown():
    """A drone (static_clip 1) that out-scores music on contrast must not win the claim: its
    pairs are left out of every Table 2 metric, and each group's static share is shown."""
    runs, rows = build(
        [(EISBACH, DORA, s, 0.0) for s in (0, 1)] + [(NONE, DORA, s, 0.0) for s in (0, 1)]
    )
    for row in rows:
        row["static_clip"] = 0.0
        if row["group"] == "barrier" and row["prompt_id"] == "seal":
            row |= {"static_clip": 1.0, "spectral_contrast_db": 99.0}
    claims = claims_by_id(table2_claims(rows, runs, CFG))
    n = 2 * len(PROMPTS) * len(SAMPLE_SEEDS)
    for name, spec in METRICS.items():
        if not spec.table2:
            continue
        c = claims[f"table2.{name}"]
        assert c["static_pairs"] == 2 * len(SAMPLE_SEEDS) and c["pairs"] == n - c["static_pairs"]
        assert c["barrier_static_share"] == pytest.approx(1 / 3)
        assert c["baseline_static_share"] == 0.0
        assert c["diff"] == pytest.approx(0.0, abs=1e-9)  # the drones' 99 dB never enter
