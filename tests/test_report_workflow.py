"""The report of a real run (the smoke workflow on config/test.yaml): `snakemake --report`
builds a zip that holds every file it links, the HTML report inside it opens clean in
Chromium, and the profile from the config cannot reach the shell."""

import re
import shutil
import zipfile
from pathlib import Path

import pytest
from browser import ensure_chromium, inspect_page
from conftest import run_snakemake, training_music_players

from eisbach.figures import FIGURES
from eisbach.report import TABLE_NAMES

pytestmark = pytest.mark.slow
CONFIG = ("--configfile", "config/test.yaml")
LINK = re.compile(r'(?:src|href)="([^"#][^"]*)"')


@pytest.fixture
def finished(smoke_run):
    return smoke_run


@pytest.fixture(scope="module")
def unpacked(smoke_run, tmp_path_factory):
    zip_path = tmp_path_factory.mktemp("zip") / "report.zip"
    result = run_snakemake(smoke_run, *CONFIG, "--report", str(zip_path))
    assert result.returncode == 0, result.stderr[-5000:]
    out = zip_path.parent / "unpacked"
    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(out)
    (root,) = out.iterdir()
    return root


def local_links(page: str) -> list[str]:
    return [link for link in LINK.findall(page) if not re.match(r"[a-z]+:", link)]


def test_the_zip_holds_every_figure_table_and_the_html_report(unpacked):
    main = (unpacked / "report.html").read_text()
    registered = sorted(set(re.findall(r"data/raw/[0-9a-f]+/[^\"'\\\\]+", main)))
    names = {Path(p).name for p in registered}
    for stem in FIGURES:
        assert {f"{stem}.png", f"{stem}.svg"} <= names, stem
    for name in TABLE_NAMES:
        assert {f"{name}.csv", f"{name}.md", f"{name}.tex"} <= names, name
    assert "index.html" in names
    for path in registered:
        assert (unpacked / path).is_file(), f"report.html links {path}, absent from the zip"


def test_every_link_inside_the_zip_resolves(unpacked, finished):
    (index,) = unpacked.glob("data/raw/*/index.html")
    site = index.parent
    reached = set()
    for page in unpacked.rglob("*.html"):
        if page.name == "report.html":
            continue
        links = local_links(page.read_text())
        for link in links:
            target = (page.parent / link).resolve()
            assert target.is_relative_to(unpacked.resolve()), f"{page.name}: {link} leaves the zip"
            assert target.is_file(), f"{page.relative_to(unpacked)} links {link}, absent"
            reached.add(target)
    page = index.read_text()
    players = 42 + training_music_players(finished)
    assert page.count("<audio") == players and len(local_links(page)) > 100
    # nothing in the report folder is left unlinked
    for f in site.rglob("*"):
        if f.is_file() and f.name not in ("index.html", "provenance.json"):
            assert f.resolve() in reached, f"{f.relative_to(site)} is in the zip but unlinked"


def test_the_zipped_report_opens_clean_in_chromium(unpacked, finished, tmp_path):
    chromium, why = ensure_chromium()
    if chromium is None:
        pytest.skip(why)
    (index,) = unpacked.glob("data/raw/*/index.html")
    page = inspect_page(index, screenshot=tmp_path / "zipped.png", chromium=chromium)
    assert page.console_errors == [] and page.failed_loads == [] and page.media_failures == []
    players = 42 + training_music_players(finished)
    assert page.audios == players and page.images == len(FIGURES) + players


def test_a_profile_that_is_not_a_name_is_refused_before_anything_runs(finished, tmp_path):
    # report.smk also quotes it; the schema's pattern stops it first, so nothing is rebuilt
    workdir = Path(shutil.copytree(finished, tmp_path / "copy", symlinks=True))
    report = workdir / "results/report/index.html"
    before = report.stat().st_mtime_ns
    profile = "demo && touch INJECTED"
    result = run_snakemake(
        workdir, "--cores", "1", *CONFIG, "--config", f"profile={profile}",
        "--forcerun", "report_html", "--allowed-rules", "report_html",
    )  # fmt: skip
    assert result.returncode != 0
    assert "profile" in result.stderr and "does not match" in result.stderr, result.stderr[-2000:]
    assert not (workdir / "INJECTED").exists()
    assert report.stat().st_mtime_ns == before
