"""P2-P4 on per-prompt and per-sample rows with a known effect, and Holm's adjustment."""

import numpy as np
import pytest

from eisbach.evaluate import adjust_for_multiple_claims
from eisbach.predictions import p2, p3, p4
from eisbach.stats import bootstrap_p, holm

CFG = {"n_boot": 2000, "alpha": 0.05, "seed": 0}
PROMPTS = ["piglet", "seal", "raccoon", "pallas"]


def prompt_rows(lam, seeds, vendi, consistency=0.5, adapter="dora"):
    group = "baseline" if lam == 0 else "barrier"
    rng = np.random.default_rng(int(lam * 10))
    return [
        {
            "run_id": f"{group}-{lam}-{adapter}-s{s}",
            "prompt_id": p,
            "group": group,
            "lam": None if lam == 0 else lam,
            "adapter": adapter,
            "train_seed": s,
            "vendi": vendi + 0.01 * rng.standard_normal(),
            "consistency": consistency + 0.01 * rng.standard_normal(),
        }
        for s in seeds
        for p in PROMPTS
    ]


def sample_rows(lam, seeds, pca, adapter):
    rng = np.random.default_rng(1)
    return [
        {
            "run_id": f"barrier-{lam}-{adapter}-s{s}",
            "prompt_id": p,
            "seed": k,
            "group": "barrier",
            "lam": lam,
            "adapter": adapter,
            "train_seed": s,
            "pca_coverage": pca + i + 0.01 * rng.standard_normal(),
        }
        for s in seeds
        for i, p in enumerate(PROMPTS)
        for k in (0, 1)
    ]


def test_p2_collapse_beyond_0_8_with_the_best_lambda_in_band():
    rows = (
        prompt_rows(0, [0, 1], 1.5) + prompt_rows(0.5, [0, 1], 1.8) + prompt_rows(0.9, [0, 1], 1.2)
    )
    claim = p2(rows, [], "dora", CFG)
    assert claim["verdict"] == "supported"
    assert claim["best_lambda"] == 0.5 and claim["diff"] == pytest.approx(0.6, abs=0.02)
    assert [r["lam"] for r in claim["by_lambda"]] == [0.0, 0.5, 0.9]


def test_p2_more_diverse_beyond_0_8_contradicts_and_a_missing_lambda_is_named():
    rows = (
        prompt_rows(0, [0, 1], 1.5) + prompt_rows(0.5, [0, 1], 1.2) + prompt_rows(0.9, [0, 1], 1.8)
    )
    assert p2(rows, [], "dora", CFG)["verdict"] == "contradicted"
    missing = p2(prompt_rows(0, [0, 1], 1.5) + prompt_rows(0.5, [0, 1], 1.8), [], "dora", CFG)
    assert missing["verdict"] == "inconclusive" and "above 0.8" in missing["reason"]


def test_p2_best_lambda_outside_the_band_is_not_support():
    rows = (
        prompt_rows(0, [0, 1], 2.0) + prompt_rows(0.5, [0, 1], 1.8) + prompt_rows(0.9, [0, 1], 1.2)
    )
    claim = p2(rows, [], "dora", CFG)
    assert claim["verdict"] == "inconclusive" and "outside" in claim["reason"]


def test_p3_needs_both_consistency_and_diversity():
    base = prompt_rows(0, [0, 1], 1.5, consistency=0.5)
    both = p3(base + prompt_rows(0.5, [0, 1], 1.7, consistency=0.7), 0.5, "dora", CFG)
    assert both["verdict"] == "supported"
    assert both["consistency"]["diff"] == pytest.approx(0.2, abs=0.02)
    only_one = p3(base + prompt_rows(0.5, [0, 1], 1.3, consistency=0.7), 0.5, "dora", CFG)
    assert only_one["verdict"] == "contradicted"  # diversity fell
    one_seed = p3(prompt_rows(0, [0], 1.5) + prompt_rows(0.5, [0], 1.7, 0.7), 0.5, "dora", CFG)
    assert one_seed["verdict"] == "inconclusive" and "one training seed" in one_seed["reason"]


def test_p4_pairs_lora_with_dora_samples_of_the_same_noise():
    rows = sample_rows(0.5, [0, 1], 40.0, "dora") + sample_rows(0.5, [0, 1], 30.0, "lora")
    claim = p4(rows, 0.5, CFG)
    assert claim["verdict"] == "supported" and claim["diff"] == pytest.approx(10.0, abs=0.05)
    assert claim["units"] == 2 * len(PROMPTS) * 2
    no_lora = p4(sample_rows(0.5, [0, 1], 40.0, "dora"), 0.5, CFG)
    assert no_lora["verdict"] == "inconclusive" and "LoRA" in no_lora["reason"]


def test_bootstrap_p_and_holm():
    boots = np.random.default_rng(0).normal(1.0, 0.3, 4000)
    assert bootstrap_p(boots) < 0.01
    assert bootstrap_p(boots, side="greater") < 0.01 < bootstrap_p(boots, side="less")
    assert bootstrap_p(np.random.default_rng(0).normal(0, 1, 4000)) > 0.5
    # Holm: 0.01 <= 0.05/3, 0.02 <= 0.05/2, 0.04 <= 0.05/1 -> all; 0.03 stops at rank 2 of 3
    assert all(d["rejected"] for d in holm({"a": 0.01, "b": 0.02, "c": 0.04}, 0.05).values())
    decided = holm({"a": 0.01, "b": 0.03, "c": 0.04}, 0.05)
    assert decided["a"]["rejected"] and not decided["b"]["rejected"]
    assert not decided["c"]["rejected"]  # step-down stops at the first failure


def test_a_verdict_that_does_not_survive_holm_becomes_inconclusive():
    claims = [
        {"id": "strong", "verdict": "supported", "p_value": 0.001},
        {"id": "weak", "verdict": "supported", "p_value": 0.04},
        {"id": "none", "verdict": "inconclusive", "p_value": 0.6},
        {"id": "untested", "verdict": "inconclusive", "reason": "no runs"},
    ]
    out = {c["id"]: c for c in adjust_for_multiple_claims(claims, 0.05)}
    assert out["strong"]["verdict"] == "supported"
    assert out["weak"]["verdict"] == "inconclusive"
    assert out["weak"]["verdict_unadjusted"] == "supported"
    assert "Holm" in out["weak"]["reason"] and out["weak"]["holm"]["family"] == 3
    assert "holm" not in out["untested"]
