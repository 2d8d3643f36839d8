"""The README's study table is rendered from a summary.json by code, numbers included."""

import json

import pytest

from eisbach.evaluate import adjust_for_multiple_claims
from eisbach.stats import cluster_reading, compound_reading, minimum_detectable_effect
from eisbach.study_readings import detectable_table, factors_table, main, readings_table


def summary():
    flat = cluster_reading([[0.1], [0.3], [-0.2]], 0.89, 0.05)  # dB, inside a 0.89 dB band
    up = cluster_reading([[2.0], [2.1], [1.9]], 0.5, 0.05)
    parts = {"consistency": up, "vendi": flat}
    claims = [
        {"id": "table2.dynamic_range_db", "unit": "dB"} | flat,
        {"id": "P3"} | parts | compound_reading(parts, 0.05),
        {"id": "P2", "verdict": "inconclusive", "reason": "one training seed", "diff": 0.01},
    ]
    return {
        "claims": adjust_for_multiple_claims(claims, 0.05),
        "multiple_comparisons": {"method": "holm", "alpha": 0.05, "family": 2},
    }


def test_the_readings_table_is_the_summary():
    s = summary()
    table = readings_table(s)
    dr = next(c for c in s["claims"] if c["id"] == "table2.dynamic_range_db")
    row = next(line for line in table.splitlines() if line.startswith("| Table 2 dynamic range"))
    assert f"{dr['diff']:+.3g}" in row and f"{dr['ci_low']:+.3g}" in row
    assert f"| {dr['verdict']} (" in row and "0.89" in row and f"| {dr['mde']:.3g} |" in row
    assert "P3: consistency and diversity both up" in table


def test_the_detectable_effects_follow_the_seed_count(tmp_path, capsys):
    s = summary()
    table = detectable_table(s, seeds=(3, 5))
    dr = next(c for c in s["claims"] if c["id"] == "table2.dynamic_range_db")
    at5 = minimum_detectable_effect(dr["seed_sd"], 5, 0.89, 0.05 / 4)
    row = next(line for line in table.splitlines() if line.startswith("| Table 2 dynamic range"))
    assert f"{at5:.3g}" in row and "15 dB gap" in row
    assert "| P2" not in table  # one seed: no spread to scale by
    path = tmp_path / "summary.json"
    path.write_text(json.dumps(s))
    main([str(path), "--seeds", "3", "5"])
    assert table in capsys.readouterr().out


def test_factors_table():
    first = factors_table().splitlines()[2]
    assert "10.86" in first and "3.23" in first
    assert minimum_detectable_effect(2.0, 5, 1.0, 0.05 / 22) == pytest.approx(
        1.0 + 2 * 3.23, abs=0.01
    )
