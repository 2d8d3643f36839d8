"""P1-P5 on training logs, per-prompt and per-sample rows with a known effect, and Holm's
adjustment of the claims' readings."""

import numpy as np
import pytest
from conftest import adapter_run

from eisbach.evaluate import adjust_for_multiple_claims, group_of
from eisbach.predictions import p1, p2, p3, p4, p5

CFG = {"alpha": 0.05, "seed": 0}
PROMPTS = ["piglet", "seal", "raccoon", "pallas"]
SEEDS = [0, 1, 2]


def prompt_rows(lam, seeds, vendi, consistency=0.5, adapter="dora", noise=0.01):
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
            "vendi": vendi + noise * rng.standard_normal(),
            "consistency": consistency + noise * rng.standard_normal(),
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


def test_p2_tests_the_lambda_fixed_before_the_run_against_the_lambdas_above_0_8():
    rows = prompt_rows(0, SEEDS, 1.5) + prompt_rows(0.5, SEEDS, 1.8) + prompt_rows(0.9, SEEDS, 1.2)
    claim = p2(rows, [], "dora", CFG)
    assert claim["verdict"] == "supported" and claim["lambda_tested"] == 0.5
    assert claim["best_lambda"] == 0.5 and claim["diff"] == pytest.approx(0.6, abs=0.02)
    assert [r["lam"] for r in claim["by_lambda"]] == [0.0, 0.5, 0.9]
    # the band: 0.2 SD of the baseline's Vendi over its (run, prompt) rows
    assert "baseline (run, prompt) rows" in claim["min_effect_source"]
    # another fixed lambda is another test, not a search
    assert p2(rows, [], "dora", CFG | {"p2_lam": 0.3})["verdict"] == "inconclusive"


def test_p2_more_diverse_beyond_0_8_contradicts_and_a_missing_lambda_is_named():
    rows = prompt_rows(0, SEEDS, 1.5) + prompt_rows(0.5, SEEDS, 1.2) + prompt_rows(0.9, SEEDS, 1.8)
    assert p2(rows, [], "dora", CFG)["verdict"] == "contradicted"
    missing = p2(prompt_rows(0, SEEDS, 1.5) + prompt_rows(0.5, SEEDS, 1.8), [], "dora", CFG)
    assert missing["verdict"] == "inconclusive" and "above 0.8" in missing["reason"]


def test_p2_without_a_lambda_effect_rarely_reads_supported():
    """Picking the most diverse lambda of the band and then testing it read "supported" 5.7-13 %
    of the time without any effect; the fixed lambda keeps the test's own 2.5 % (400 sweeps of
    seven lambdas, 3 seeds, seed effect 0.5 x the within-seed SD; no band, the strictest case:
    Monte-Carlo SE 0.8 %)."""
    rng = np.random.default_rng(5)
    lams, within = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0), 0.1
    supported = 0
    for _ in range(400):
        rows = []
        for lam in lams:
            run_effect = {s: 0.5 * within * rng.standard_normal() for s in SEEDS}
            for r in prompt_rows(lam, SEEDS, 1.5, noise=0.0):
                noise = run_effect[r["train_seed"]] + within * rng.standard_normal()
                rows.append(r | {"vendi": r["vendi"] + noise})
        supported += p2(rows, [], "dora", CFG | {"min_effect_sd": 0.0})["verdict"] == "supported"
    assert supported / 400 <= 0.025 + 2 * np.sqrt(0.025 * 0.975 / 400)


def test_p3_needs_both_consistency_and_diversity():
    base = prompt_rows(0, SEEDS, 1.5, consistency=0.5)
    both = p3(base + prompt_rows(0.5, SEEDS, 1.7, consistency=0.7), 0.5, "dora", CFG)
    assert both["verdict"] == "supported"
    assert both["consistency"]["diff"] == pytest.approx(0.2, abs=0.02)
    # intersection-union: the p-value of "both up" is the larger part p-value
    assert both["p_supported"] == max(both[p]["p_supported"] for p in ("consistency", "vendi"))
    only_one = p3(base + prompt_rows(0.5, SEEDS, 1.3, consistency=0.7), 0.5, "dora", CFG)
    assert only_one["verdict"] == "contradicted"  # diversity fell
    assert only_one["p_contradicted"] == pytest.approx(
        min(1.0, 2 * min(only_one[p]["p_contradicted"] for p in ("consistency", "vendi")))
    )
    one_seed = p3(prompt_rows(0, [0], 1.5) + prompt_rows(0.5, [0], 1.7, 0.7), 0.5, "dora", CFG)
    assert one_seed["verdict"] == "inconclusive" and "one training seed" in one_seed["reason"]


def test_p3_equal_runs_read_negligible():
    base = prompt_rows(0, SEEDS, 1.5, consistency=0.5, noise=0.2)
    same = [r | {"group": "barrier", "lam": 0.5} for r in base]
    for r in same:  # tiny differences, well inside the band of 0.2 SD of the baseline rows
        r["vendi"] += 0.001 * (r["train_seed"] - 1)
    claim = p3(base + same, 0.5, "dora", CFG)
    assert claim["verdict"] == "negligible", claim


def test_p4_pairs_lora_with_dora_samples_of_the_same_noise():
    rows = sample_rows(0.5, SEEDS, 40.0, "dora") + sample_rows(0.5, SEEDS, 30.0, "lora")
    claim = p4(rows, 0.5, CFG, (1.0, "test band"))
    assert claim["verdict"] == "supported" and claim["diff"] == pytest.approx(10.0, abs=0.05)
    assert claim["units"] == 3 * len(PROMPTS) * 2 and claim["min_effect"] == 1.0
    no_lora = p4(sample_rows(0.5, SEEDS, 40.0, "dora"), 0.5, CFG)
    assert no_lora["verdict"] == "inconclusive" and "LoRA" in no_lora["reason"]


def logs_of(runs_and_shapes, rng):
    """run_id -> logged rows: w, H and the raw loss against t, per run's shape."""
    logs = {}
    for rid, (w_slope, corr_low) in runs_and_shapes.items():
        t = rng.uniform(0, 1, 400)
        h = rng.uniform(0.9, 1.0, 400)
        noise = rng.standard_normal(400)
        loss = np.where(t < 0.3, corr_low * (h - 0.95) / 0.03 + noise, -(h - 0.95) / 0.03 + noise)
        w = 0.2 - w_slope * (t - 0.5) + 0.001 * rng.standard_normal(400)
        logs[rid] = [
            {"t": a, "w": b, "H": c, "raw_loss": d}
            for a, b, c, d in zip(t, w, h, loss, strict=True)
        ]
    return logs


def training_grid(w_slope, corr_low):
    barrier = {"name": "eisbach", "lam": 0.5}
    dora = {"type": "dora", "rank": 4, "alpha": 4}
    runs = {}
    for s in SEEDS:
        for scheme in (barrier, {"name": "none"}):
            run = adapter_run(scheme, dora, s)
            runs[run["run_id"]] = run
    rng = np.random.default_rng(3)
    shapes = {
        rid: (w_slope if group_of(r) == "barrier" else 0.0, corr_low) for rid, r in runs.items()
    }
    return runs, logs_of(shapes, rng)


def test_p1_is_one_difference_per_run_tested_over_training_seeds():
    runs, logs = training_grid(w_slope=0.05, corr_low=1.0)
    claim = p1(logs, runs, group_of, CFG)
    assert claim["seeds"] == 3 and claim["runs"] == 3
    assert claim["diff"] == pytest.approx(0.05 * 0.65, abs=0.005)  # t 0.15 against 0.85
    assert "baseline runs" in claim["min_effect_source"] and claim["min_effect"] > 0
    assert claim["verdict"] == "supported"
    runs, logs = training_grid(w_slope=0.0, corr_low=1.0)
    flat = p1(logs, runs, group_of, CFG)
    assert flat["verdict"] in ("negligible", "inconclusive") and flat["min_effect"] > 0


def test_p5_needs_a_positive_low_t_correlation_and_a_drop():
    runs, logs = training_grid(w_slope=0.0, corr_low=1.0)
    claim = p5(logs, runs, group_of, CFG)
    assert claim["corr_low_t"] > 0.5 and claim["diff"] > 1.0
    assert claim["verdict"] == "supported" and claim["min_effect"] == 0.1
    runs, logs = training_grid(w_slope=0.0, corr_low=-1.0)
    assert p5(logs, runs, group_of, CFG)["verdict"] == "contradicted"  # negative at low t


def test_a_reading_that_does_not_survive_holm_becomes_inconclusive():
    claims = [
        {"id": "strong", "verdict": "supported", "p_value": 0.001},
        {
            "id": "weak",
            "verdict": "supported",
            "p_value": 0.04,
            "seeds": 3,
            "seed_sd": 1.0,
            "min_effect": 0.5,
        },  # fmt: skip
        {"id": "none", "verdict": "inconclusive", "p_value": 0.6},
        {"id": "untested", "verdict": "inconclusive", "reason": "no runs"},
    ]
    out = {c["id"]: c for c in adjust_for_multiple_claims(claims, 0.05)}
    assert out["strong"]["verdict"] == "supported"
    assert out["weak"]["verdict"] == "inconclusive"
    assert out["weak"]["verdict_unadjusted"] == "supported"
    assert "Holm-adjusted p = 0.08 > alpha 0.05" in out["weak"]["reason"]
    assert out["weak"]["holm"]["family"] == 3
    # 3 seeds at Holm's first level (0.05 / 3, one-sided / 2): delta + 10.9 sd / sqrt(3) * ...
    assert out["weak"]["mde"] > 0.5 + 3.0
    assert "holm" not in out["untested"] and "mde" not in out["strong"]
