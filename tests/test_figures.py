"""The figures stage on a synthetic results tree: every figure as PNG and SVG with its
provenance, the tables in three formats, and the statistics the figures draw."""

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from synthetic_results import ADAPTER_RUNS, figures_argv, make_results

from eisbach import figures, tables

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    paths = make_results(tmp_path_factory.mktemp("figures"))
    figures.main(figures_argv(paths))
    return paths


def test_the_rule_declares_every_figure_with_a_caption():
    rule = (REPO / "workflow/rules/figures.smk").read_text()
    block = re.search(r"FIGURE_STEMS = \[(.*?)\]", rule, re.S).group(1)
    assert re.findall(r'"([a-z0-9_]+)"', block) == list(figures.FIGURES)
    for stem in figures.FIGURES:
        assert (REPO / "workflow/report" / f"{stem}.rst").read_text().strip(), stem
    for name in ("table2", "predictions", "controls", "index"):
        assert (REPO / "workflow/report" / f"{name}.rst").read_text().strip(), name
    # one figure per prediction, named for it
    for p in range(1, 6):
        assert any(stem.startswith(f"p{p}_") for stem in figures.FIGURES)


def test_every_figure_is_png_and_svg_with_provenance(built):
    for stem in figures.FIGURES:
        png, svg = built["figures"] / f"{stem}.png", built["figures"] / f"{stem}.svg"
        with Image.open(png) as image:
            assert image.size[0] > 300 and image.size[1] > 200, stem
            record = json.loads(image.text["Comment"])
        assert {"config_hash", "git_commit", "packages"} <= set(record)
        root = ET.parse(svg).getroot()
        assert root.tag.endswith("svg")
        assert record["config_hash"] in svg.read_text(), f"{stem}.svg has no provenance"


def test_p1_and_p5_draw_every_arm(built):
    arms = {
        figures.arm_label(scheme["name"], scheme.get("lam"), adapter)
        for scheme, adapter, _ in ADAPTER_RUNS.values()
    }
    assert len(arms) == 4
    for stem in ("p1_weight_vs_t", "p5_corr_h_loss"):
        text = (built["figures"] / f"{stem}.svg").read_text()
        for arm in arms:
            assert arm in text, f"{stem}: no legend entry for {arm}"


def test_arm_styles_are_distinct_and_stacked():
    arms = [
        "base",
        "none · dora",
        "eisbach λ0.5 · dora",
        "eisbach λ0.5 · lora",
        "eisbach λ0.9 · dora",
    ]
    groups = dict(zip(arms, ["base", "baseline", "barrier", "barrier", "barrier"], strict=True))
    styles = figures.arm_styles(arms, groups)
    assert len({(s["color"], s["marker"], s["linestyle"]) for s in styles.values()}) == len(arms)
    assert len({s["color"] for s in styles.values()}) == len(arms)
    assert styles["none · dora"]["color"] == figures.GROUP_COLOURS["baseline"]
    assert styles["eisbach λ0.5 · dora"]["color"] == figures.GROUP_COLOURS["barrier"]
    # each later arm on top of and thinner than the one before: coinciding lines stay visible
    z = [styles[a]["zorder"] for a in arms]
    lw = [styles[a]["linewidth"] for a in arms]
    assert z == sorted(z) and lw == sorted(lw, reverse=True) and lw[0] > lw[-1]


def test_binned_ci_is_the_mean_of_seed_means():
    df = pd.DataFrame(
        {
            "t": [0.05, 0.05, 0.06, 0.07, 0.55, 0.56, 0.95],
            "w": [1.0, 3.0, 2.0, 4.0, 5.0, 7.0, 9.0],
            "train_seed": [0, 0, 1, 1, 0, 1, 0],
        }
    )
    table = figures.binned_ci(df, "t", "w", np.linspace(0, 1, 11))
    # the last bin has one value: left out
    assert table[:, 0].tolist() == pytest.approx([0.05, 0.55])
    assert table[0, 1] == pytest.approx((2.0 + 3.0) / 2)  # seed means 2 and 3
    assert table[1, 1] == pytest.approx(6.0)
    assert np.all(table[:, 2] <= table[:, 1]) and np.all(table[:, 1] <= table[:, 3])


def test_correlation_ci():
    rng = np.random.default_rng(1)
    h = rng.standard_normal(200)
    r, lo, hi = figures.correlation_ci(h, 2 * h + 0.5 * rng.standard_normal(200))
    assert 0.9 < lo <= r <= hi <= 1.0
    r, lo, hi = figures.correlation_ci(h, rng.standard_normal(200))
    assert lo < 0 < hi and abs(r) < 0.2
    assert figures.correlation_ci(h[:3], h[:3]) is None
    assert figures.correlation_ci(h, np.ones(200)) is None


def test_log_snr_and_the_entropy_transition():
    t = np.array([0.1, 0.5, 0.9])
    assert figures.log_snr("rectified_flow", t) == pytest.approx(2 * np.log((1 - t) / t))
    assert figures.log_snr("v", np.array([0.5]))[0] == pytest.approx(0.0, abs=1e-6)
    centres = np.linspace(-6, 6, 25)
    h = 1 / (1 + np.exp(-(centres - 2.0) * 3))  # a step in H at log-SNR 2
    at, slope = figures.entropy_transition(centres, h)
    assert at == pytest.approx(2.0, abs=0.5) and slope > 0
    assert figures.entropy_transition(centres[:1], h[:1]) is None


def test_tables_carry_every_claim_with_its_ci(built):
    summary = json.loads(built["summary"].read_text())
    t2 = pd.read_csv(built["tables"] / "table2.csv")
    claims = {c["id"]: c for c in summary["claims"]}
    assert list(t2.columns) == tables.TABLE2_COLUMNS
    for row in t2.to_dict("records"):
        c = claims[row["id"]]
        assert row["diff"] == pytest.approx(c["diff"]) and row["verdict"] == c["verdict"]
        assert (row["ci_low"], row["ci_high"]) == pytest.approx((c["ci_low"], c["ci_high"]))
    preds = pd.read_csv(built["tables"] / "predictions.csv")
    # P3 is one row and one per reading
    assert preds["id"].tolist() == ["P1", "P2", "P3", "P3.consistency", "P3.vendi", "P4", "P5"]
    assert preds.set_index("id").loc["P3.vendi", "diff"] == pytest.approx(0.1)
    for name in ("table2", "predictions", "controls"):
        for ext in ("md", "tex"):
            text = (built["tables"] / f"{name}.{ext}").read_text()
            assert "config_hash" in text and "git_commit" in text
        assert "config_hash" in json.loads(
            (built["tables"] / f"{name}.provenance.json").read_text()
        )


def test_markdown_and_latex_escape_text_from_data():
    df = tables.frame(
        [{"id": "table2.flux_sparsity", "reason": "a | b\nc 50% & more", "diff": 0.123456789}],
        ["id", "diff", "reason"],
    )
    md = tables.to_markdown(df)
    lines = md.splitlines()
    assert len(lines) == 3 and lines[2].count(" | ") == 2  # the pipe in the cell is escaped
    assert r"a \| b c 50% & more" in md and "0.1235" in md
    tex = tables.to_latex(df)
    assert r"table2.flux\_sparsity" in tex and r"a | b c 50\% \& more" in tex
    assert r"\begin{tabular}{lrl}" in tex


def test_an_empty_grid_still_writes_every_figure(tmp_path):
    empty = pd.DataFrame(
        columns=["run_id", "prompt_id", "group", "scheme", "lam", "adapter", "train_seed",
                 "seed", "path", "sha256", "vendi", "consistency"]
        + [n for n, s in figures.METRICS.items() if s.table2]
    )  # fmt: skip
    written = figures.build_figures(tmp_path, empty, empty, [], "rectified_flow", {"x": 1})
    assert written.keys() == figures.FIGURES.keys()
    for paths in written.values():
        assert [p.suffix for p in paths] == [".png", ".svg"] and all(p.exists() for p in paths)


@pytest.mark.parametrize("which", ["sample", "training clip"])
def test_a_wav_changed_since_evaluate_stops_the_figures(tmp_path, which):
    """The spectrograms and SSMs must show the clips evaluate scored, or say they cannot."""
    from eisbach.integrity import IntegrityError

    paths = make_results(tmp_path)
    if which == "sample":
        wav = Path(pd.read_parquet(paths["per_sample"])["path"].iloc[3])
    else:
        summary = json.loads(paths["summary"].read_text())
        wav = Path(summary["prompt_references"]["seal"][0]["path"])
    data = bytearray(wav.read_bytes())
    data[-1] ^= 0xFF
    wav.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=re.escape(str(wav))):
        figures.main(figures_argv(paths))
