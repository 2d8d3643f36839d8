"""The report in a real browser: headless Chromium (Debian's `chromium`, installed by
scripts/setup_browser.sh) opens it from file://, and every image and player must load with no
console error. A second test breaks a copy of the page to show that the check catches it."""

import shutil

import numpy as np
import pytest
from browser import ensure_chromium, inspect_page
from PIL import Image
from synthetic_results import build_report

from eisbach.figures import FIGURES


@pytest.fixture(scope="module")
def chromium():
    found, why = ensure_chromium()
    if found is None:
        pytest.skip(why)
    return found


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return build_report(tmp_path_factory.mktemp("browser"))


def test_report_opens_clean_in_chromium(chromium, built, tmp_path):
    shot = tmp_path / "report.png"
    page = inspect_page(built["report"], screenshot=shot, chromium=chromium)
    assert page.console_errors == []
    assert page.failed_loads == []
    assert page.media_failures == []
    players = 28 + 2 * 2  # the samples, and a training clip per prompt before each of 2 seeds
    assert page.audios == players
    assert page.images == len(FIGURES) + players  # figures, then a spectrogram per player
    assert page.title.startswith("Eisbach report")
    with Image.open(shot) as image:
        assert image.size[0] == 1280 and image.size[1] > 1000
        pixels = np.asarray(image.convert("L"))
    assert pixels.std() > 10, "the screenshot is blank"


def test_the_check_catches_broken_media_and_script_errors(chromium, built, tmp_path):
    broken = tmp_path / "report"
    shutil.copytree(built["report"].parent, broken)
    wav = sorted((broken / "assets/samples").rglob("*.wav"))[0]
    png = broken / "assets/figures/p3_consistency_vs_diversity.png"
    wav.unlink()
    png.write_bytes(b"not a png")
    index = broken / "index.html"
    index.write_text(
        index.read_text().replace(
            "</body>", "<script>console.error('boom'); undefined_function();</script></body>"
        )
    )
    page = inspect_page(index, chromium=chromium)
    failed = {f["src"] for f in page.media_failures}
    assert wav.relative_to(broken).as_posix() in failed
    assert png.relative_to(broken).as_posix() in failed
    assert len(failed) == 2
    text = " ".join(page.console_errors)
    assert "boom" in text and "undefined_function" in text
