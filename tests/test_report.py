"""The report: provenance across code versions, escaping, the grouping of samples, which
claims a run can judge, and that it verifies the clips it links."""

import json
import re
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from markupsafe import escape
from synthetic_results import build_report, report_argv

from eisbach import report, tables
from eisbach.figures import FIGURES
from eisbach.integrity import IntegrityError
from eisbach.provenance import file_sha256
from eisbach.report import judgeable, mixed_commits, sample_groups


def record(commit):
    return {"config_hash": "abc", "git_commit": commit, "packages": {"torch": "2.9.1"}}


def test_one_commit_no_warning():
    records = {"summary.json": record("1d97cd9"), "runs/a": record("1d97cd9")}
    assert mixed_commits(records) == []


def test_mixed_commits_are_named():
    records = {"summary.json": record("4bd6823"), "runs/a": record("1d97cd9+dirty")}
    assert mixed_commits(records) == ["1d97cd9+dirty", "4bd6823"]


def sample(run_id, group, prompt_id="p", seed=0, train_seed=0, scheme="none", lam=None):
    return {
        "run_id": run_id,
        "group": group,
        "prompt_id": prompt_id,
        "prompt": f"prompt {prompt_id}",
        "seed": seed,
        "train_seed": train_seed,
        "scheme": scheme,
        "lam": lam,
        "adapter": None if group == "base" else "dora",
        "path": f"results/samples/{run_id}/{prompt_id}-s{seed}.wav",
    }


def test_samples_of_one_prompt_and_seed_sit_side_by_side():
    rows = [
        sample("eisbach-l0.5_dora-r4_s1", "barrier", train_seed=1, scheme="eisbach", lam=0.5),
        sample("none_dora-r4_s1", "baseline", train_seed=1),
        sample("eisbach-l0.5_dora-r4_s0", "barrier", scheme="eisbach", lam=0.5),
        sample("none_dora-r4_s0", "baseline"),
        sample("base-tiny", "base", train_seed=None, scheme="base"),
        sample("none_dora-r4_s0", "baseline", seed=1),
        sample("none_dora-r4_s0", "baseline", prompt_id="q"),
    ]
    groups = sample_groups(rows)
    assert [g["prompt_id"] for g in groups] == ["p", "q"]
    seeds = groups[0]["seeds"]
    assert [s["seed"] for s in seeds] == [0, 1]
    # base first, then each training seed's baseline beside its barrier
    assert [c["run_id"] for c in seeds[0]["cards"]] == [
        "base-tiny",
        "none_dora-r4_s0",
        "eisbach-l0.5_dora-r4_s0",
        "none_dora-r4_s1",
        "eisbach-l0.5_dora-r4_s1",
    ]


def test_which_claims_a_run_can_judge():
    two_seeds = {
        "id": "table2.x",
        "seeds": 2,
        "ci_low": -1,
        "ci_high": 1,
        "verdict": "inconclusive",
    }
    one_seed = two_seeds | {"seeds": 1}
    no_ci = {"id": "P4", "verdict": "inconclusive", "reason": "needs LoRA"}
    levels = {"id": "table2.dynamic_range_levels", "ci_low": 1, "reason": "...; one training seed"}
    p1 = {"id": "P1", "ci_low": 0.1}
    part = {"seeds": 2, "ci_low": 0, "verdict": "inconclusive"}
    p3 = {"id": "P3", "consistency": part, "vendi": part | {"seeds": 1}}
    assert judgeable(two_seeds) and judgeable(p1)
    assert not any(map(judgeable, (one_seed, no_ci, levels, p3)))
    assert judgeable(p3 | {"vendi": part})
    # any conjunction: the levels claim is judged where both its parts are
    both = {
        "id": "table2.dynamic_range_levels",
        "barrier_above_40": part,
        "baseline_below_25": part,
    }
    assert judgeable(both) and not judgeable(both | {"baseline_below_25": {"verdict": "x"}})


EVIL_PROMPT = "<script>alert('x')</script> & <b>co</b>"
EVIL_PROFILE = '"><img src=x onerror=alert(1)>'


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    prompts = {"piglet": EVIL_PROMPT, "seal": "Seal Lawyer"}
    return build_report(tmp_path_factory.mktemp("report"), prompts, profile=EVIL_PROFILE)


def links_of(page: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"]+)"', page)


def test_text_from_data_is_escaped(built):
    page = built["report"].read_text()
    assert "<script>" not in page and "<b>co</b>" not in page and "<img src=x" not in page
    assert str(escape(EVIL_PROMPT)) in page and str(escape(EVIL_PROFILE)) in page


def test_the_report_folder_holds_everything_it_links(built):
    report_dir = built["report"].parent
    page = built["report"].read_text()
    links = [link for link in links_of(page) if not link.startswith("#")]
    assert len(links) > 40
    for link in links:
        target = (report_dir / link).resolve()
        assert target.is_relative_to(report_dir.resolve()), f"{link} leaves the report folder"
        assert target.is_file() and target.stat().st_size > 0, link
    per_sample = pq.read_table(built["per_sample"]).to_pylist()
    # every sample, and each prompt's training clip in front of each of its 2 sampling seeds
    assert len(per_sample) == 28 and page.count("<audio") == 28 + 2 * 2
    # the players and spectrograms are the stage outputs, byte for byte
    for row in per_sample:
        copy = report_dir / "assets/samples" / row["run_id"] / Path(row["path"]).name
        assert copy.read_bytes() == Path(row["path"]).read_bytes()
    for stem in FIGURES:
        assert f'src="assets/figures/{stem}.png"' in page and f"assets/figures/{stem}.svg" in page
    assert "config_hash" in json.loads((report_dir / "provenance.json").read_text())


def test_each_prompt_sets_its_training_music_beside_its_samples(built):
    """Seal Lawyer's samples open with the training clip captioned "Seal Lawyer's theme. ...",
    and the sound table reads the training clips against every group of samples."""
    page = built["report"].read_text()
    summary = json.loads(built["summary"].read_text())
    refs = summary["prompt_references"]
    assert {p: [c["id"] for c in cs] for p, cs in refs.items()} == {
        "piglet": ["c0"],
        "seal": ["c1"],
    }
    seal = page[page.index("<h3>seal:") :]
    seal = seal[: seal.index("</div>\n</div>")]
    first_card = seal[seal.index('<div class="card') :]
    assert first_card.startswith('<div class="card g-training"><b>training music</b> (train clip)')
    assert 'src="assets/samples/_training_music/c1.wav"' in first_card
    assert 'src="assets/samples/_training_music/c1.png"' in first_card
    copy = built["report"].parent / "assets/samples/_training_music/c1.wav"
    assert copy.read_bytes() == Path(refs["seal"][0]["path"]).read_bytes()
    sound = page[page.index('id="sound"') : page.index('id="samples"')]
    for group in ("training clips", "eval clips", "base samples", "baseline samples"):
        assert f"<td>{group}</td>" in sound
    assert sound.index("onset_peakiness") < sound.index("flux_sparsity")


def test_the_summary_opens_the_page(built):
    page = built["report"].read_text()
    summary_at = page.index('id="summary"')
    assert summary_at < page.index('id="claims"') < page.index('id="samples"')
    head = page[summary_at : page.index('id="claims"')]
    # the synthetic P2 and P4 rest on one training seed: the run cannot judge them
    cannot = head[head.index("Cannot judge here") :]
    assert "P2: one training seed" in cannot and "P4: one training seed" in cannot
    assert "says nothing about Stable Audio 3" in head
    assert "training seeds 0, 1" in head and "28 samples from 5 arms" in head
    verdicts = re.findall(r'class="v" data-verdict="([a-z]+)">([a-z]+)<', page)
    summary = json.loads(built["summary"].read_text())
    rows = tables.table2_rows(summary) + tables.prediction_rows(summary)
    assert [v for v, _ in verdicts] == [r["verdict"] for r in rows]
    assert all(a == b for a, b in verdicts)


# --- the report verifies what it links (issue 24) ---------------------------------------------
def flipped(path: Path) -> Path:
    """path with one byte inverted in its middle; the original is kept as path.orig."""
    shutil.copyfile(path, path.with_suffix(".orig"))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


def restore(path: Path) -> None:
    path.with_suffix(".orig").replace(path)


def test_provenance_lists_the_sha256_of_every_linked_asset(built):
    report_dir = built["report"].parent
    assets = json.loads((report_dir / "provenance.json").read_text())["assets"]
    on_disk = sorted(
        p.relative_to(report_dir).as_posix()
        for p in (report_dir / "assets").rglob("*")
        if p.is_file()
    )
    assert sorted(assets) == on_disk and len(on_disk) > 40
    for rel, sha in assets.items():
        assert file_sha256(report_dir / rel) == sha, rel


def a_sample(paths) -> str:
    return pq.read_table(paths["per_sample"]).to_pylist()[3]["path"]


def a_training_clip(paths) -> str:
    summary = json.loads(paths["summary"].read_text())
    return next(c for clips in summary["prompt_references"].values() for c in clips)["path"]


@pytest.mark.parametrize(
    "pick, named",
    [
        (a_sample, r"per_sample\.parquet.*`sample_run`"),
        (a_training_clip, r"summary\.json.*`data_shard`"),
    ],
)
def test_a_changed_clip_stops_the_report_naming_it(built, pick, named):
    wav = flipped(Path(pick(built)))
    try:
        with pytest.raises(IntegrityError, match=rf"{wav.name}.*{named}"):
            report.main(report_argv(built))
    finally:
        restore(wav)
    report.main(report_argv(built))  # and with the clip back, the report builds
