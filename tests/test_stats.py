"""The inference rule of eisbach.stats: its tests are scipy's, its four readings follow the
interval, Holm's adjusted p-values, compound claims and the minimum detectable effect."""

import numpy as np
import pytest
from scipy.stats import ttest_1samp

from eisbach.stats import (
    band_test,
    cluster_reading,
    compound_reading,
    holm,
    holm_adjusted,
    minimum_detectable_effect,
)


def test_band_test_is_scipys_one_sample_t_test_on_cluster_means():
    rng = np.random.default_rng(0)
    means = rng.normal(0.4, 1.0, (50, 4))
    out = band_test(means, 0.3, 0.05)
    greater = ttest_1samp(means - 0.3, 0.0, axis=-1, alternative="greater")
    less = ttest_1samp(means + 0.3, 0.0, axis=-1, alternative="less")
    tost = np.maximum(
        ttest_1samp(means + 0.3, 0.0, axis=-1, alternative="greater").pvalue,
        ttest_1samp(means - 0.3, 0.0, axis=-1, alternative="less").pvalue,
    )
    ci = ttest_1samp(means, 0.0, axis=-1).confidence_interval(0.95)
    np.testing.assert_allclose(out["p_supported"], greater.pvalue, rtol=1e-10)
    np.testing.assert_allclose(out["p_contradicted"], less.pvalue, rtol=1e-10)
    np.testing.assert_allclose(out["p_negligible"], tost, rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(out["ci_low"], ci.low, rtol=1e-10)
    np.testing.assert_allclose(out["ci_high"], ci.high, rtol=1e-10)


@pytest.mark.parametrize(
    ("seed_means", "higher", "expected"),
    [
        ([1.0, 1.1, 0.9], True, "supported"),  # interval [0.75, 1.25] beyond +0.5
        ([1.0, 1.1, 0.9], False, "contradicted"),  # the claim was "lower"
        ([-1.0, -1.1, -0.9], True, "contradicted"),
        ([-1.0, -1.1, -0.9], False, "supported"),
        ([0.0, 0.1, -0.1], True, "negligible"),  # interval [-0.25, 0.25] inside +-0.5
        ([0.5, 0.6, 0.4], True, "inconclusive"),  # excludes 0, straddles the band's edge
        ([1.0, -1.0, 0.0], True, "inconclusive"),  # covers everything
        ([1.0], True, "inconclusive"),  # one seed: nothing to test against
    ],
)
def test_the_four_readings_follow_the_interval(seed_means, higher, expected):
    reading = cluster_reading([[m] for m in seed_means], 0.5, 0.05, higher)
    assert reading["verdict"] == expected
    if len(seed_means) > 1:
        lo, hi = reading["ci_low"], reading["ci_high"]
        region = "supported" if lo > 0.5 else "contradicted" if hi < -0.5 else None
        if region and not higher:
            region = {"supported": "contradicted", "contradicted": "supported"}[region]
        region = region or ("negligible" if -0.5 < lo and hi < 0.5 else "inconclusive")
        assert region == expected  # the reading is the interval's, and the p-value agrees
        assert (reading["p_value"] <= 0.05) == (expected != "inconclusive")


def test_without_a_band_nothing_reads_negligible():
    assert cluster_reading([[0.0], [0.001], [-0.001]], 0.0, 0.05)["verdict"] == "inconclusive"


def test_holm_adjusted_p_values_decide_as_the_step_down_rule():
    # 0.01 <= 0.05/3, 0.02 <= 0.05/2, 0.04 <= 0.05/1: all; with 0.03 it stops at rank 2 of 3
    assert all(d["rejected"] for d in holm({"a": 0.01, "b": 0.02, "c": 0.04}, 0.05).values())
    decided = holm({"a": 0.01, "b": 0.03, "c": 0.04, "nan": float("nan")}, 0.05)
    assert decided["a"]["rejected"] and not decided["b"]["rejected"]
    assert not decided["c"]["rejected"]  # step-down stops at the first failure
    assert decided["b"]["adjusted_p"] == pytest.approx(0.06) and "nan" not in decided
    np.testing.assert_allclose(
        holm_adjusted(np.array([[0.04, 0.01, 0.03], [0.5, 0.2, 0.001]])),
        [[0.06, 0.03, 0.06], [0.5, 0.4, 0.003]],
    )


def test_a_conjunction_holds_only_when_every_part_does():
    up = cluster_reading([[1.0], [1.1], [0.9]], 0.5, 0.05)
    flat = cluster_reading([[0.0], [0.1], [-0.1]], 0.5, 0.05)
    down = cluster_reading([[-1.0], [-1.1], [-0.9]], 0.5, 0.05)
    assert compound_reading({"a": up, "b": up}, 0.05)["verdict"] == "supported"
    assert compound_reading({"a": up, "b": flat}, 0.05)["verdict"] == "inconclusive"
    assert compound_reading({"a": flat, "b": flat}, 0.05)["verdict"] == "negligible"
    both = compound_reading({"a": up, "b": down}, 0.05)
    assert both["verdict"] == "contradicted"
    assert both["p_contradicted"] == pytest.approx(2 * down["p_contradicted"])  # Bonferroni
    missing = compound_reading({"a": up, "b": {"verdict": "inconclusive"}}, 0.05)
    assert missing["verdict"] == "inconclusive" and "b" in missing["reason"]


def test_the_minimum_detectable_effect_has_its_power():
    k, sd, delta, alpha_one_sided = 5, 1.0, 0.5, 0.025
    mde = minimum_detectable_effect(sd, k, delta, alpha_one_sided)
    rng = np.random.default_rng(1)
    tests = band_test(rng.normal(mde, sd, (20_000, k)), delta, 2 * alpha_one_sided)
    power = (tests["p_supported"] <= alpha_one_sided).mean()
    assert power == pytest.approx(0.8, abs=0.015)  # Monte-Carlo SE 0.3 %
    # more seeds detect smaller effects; one seed detects nothing
    assert minimum_detectable_effect(sd, 10, delta, alpha_one_sided) < mde
    assert np.isnan(minimum_detectable_effect(sd, 1, delta, alpha_one_sided))
