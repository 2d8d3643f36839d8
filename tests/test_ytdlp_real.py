"""The real, locked yt-dlp end to end, offline (issue 25).

No fake here: the yt-dlp of .venv/bin (the lock's) runs through the data stage's own download
code, with the argv it passes for YouTube, against a local HTTP server on 127.0.0.1
(tests/media_server.py) that serves an AAC file and injects failures. Only the URL differs:
data.url_template points at the server instead of YouTube, and yt-dlp's generic extractor takes
the place of its YouTube extractor. What YouTube alone does (JS challenges, bot checks, PO tokens)
is not exercised here; docs/cloud.md says so.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from media_server import BULK_FAULTS, MediaServer, bulk_plan, make_media

from eisbach import data, ytdlp
from eisbach.audio_checks import decode, find_ffmpeg
from eisbach.data import build_manifest, file_sha256

REPO = Path(__file__).resolve().parent.parent
YTDLP = Path(sys.executable).parent / "yt-dlp"  # what `make setup` installs from the lock
RATE = 44100
AAC_FRAME = 1024  # samples: the unit in which ffmpeg's stream copy can cut AAC
VALIDATION = {"min_seconds": 1.0, "silence_rms_db": -60.0, "max_clipped_fraction": 0.01}

pytestmark = pytest.mark.skipif(
    not YTDLP.is_file(), reason=f"no yt-dlp at {YTDLP}: run `make setup` (it is in the lock)"
)


def locked_version(name: str) -> str:
    lock = (REPO / "envs/requirements.lock").read_text()
    return re.search(rf"^{re.escape(name)}==(\S+)", lock, re.MULTILINE)[1]


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """The served file and its own decoding (the reference a cut is found in)."""
    ffmpeg = find_ffmpeg()
    path = tmp_path_factory.mktemp("media") / "song.m4a"
    make_media(path, ffmpeg, seconds=12.0, rate=RATE)
    reference, rate = decode(path, ffmpeg=ffmpeg)
    assert rate == RATE
    return path.read_bytes(), reference[:, 0]


def write_meta(path: Path, rows) -> Path:
    lines = ["ytid,start_s,end_s,aspect_list,caption,is_audioset_eval"]
    lines += [
        f"{y},{s:g},{e:g},\"['tag']\",caption {i},{i % 2 == 0}" for i, (y, s, e) in enumerate(rows)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def config(csv_path: Path, server: MediaServer, **overrides) -> dict:
    return {
        "source": "musiccaps",
        "musiccaps_csv": str(csv_path),
        "ytdlp": str(YTDLP),
        "url_template": server.url_template,
        "workers": 2,
        "max_attempts": 3,
        "backoff_s": 0.2,
        "timeout_s": 60,
        "validation": VALIDATION,
    } | overrides


def offset_in(reference: np.ndarray, clip: np.ndarray, near: int, window: int = RATE // 2) -> int:
    """Where clip starts in reference: the best match of its first 8192 samples within
    `window` samples of `near` (the seeded signal has one sharp peak)."""
    head = clip[:8192]
    lo = max(near - window, 0)
    scores = np.correlate(reference[lo : near + window + head.size], head, mode="valid")
    return lo + int(np.argmax(scores))


@pytest.fixture
def argv_log(monkeypatch):
    """Every argv that the data stage hands to a process (the real call still runs)."""
    seen, real = [], ytdlp.run_with_timeout

    def spy(argv, timeout, cwd=None):
        seen.append(list(argv))
        return real(argv, timeout, cwd=cwd)

    monkeypatch.setattr(ytdlp, "run_with_timeout", spy)
    return seen


def test_the_lock_provides_yt_dlp_its_js_runtime_and_ejs_and_the_stage_logs_them(tmp_path, capsys):
    toolchain = ytdlp.check_toolchain(str(YTDLP))
    assert toolchain.ytdlp_version == locked_version("yt-dlp")
    assert toolchain.js_runtime == f"deno-{locked_version('deno')}"
    assert toolchain.ejs == f"yt_dlp_ejs-{locked_version('yt-dlp-ejs')}"
    # the deno yt-dlp runs is the lock's, beside this Python, not one that happens to be on PATH
    assert (YTDLP.parent / "deno").is_file()


def test_the_image_gets_them_from_the_lock():
    """No Docker engine here: the Dockerfile syncs the whole lock into /app/.venv, copies that
    venv into the image and puts its bin/ (yt-dlp, deno) first on PATH, with apt's ffmpeg."""
    text = (REPO / "Dockerfile").read_text()
    build, final = text.split("# --- the image", 1)
    assert (
        "uv pip sync --python /app/.venv/bin/python --require-hashes envs/requirements.lock"
        in build
    )
    assert "COPY --from=build /app/.venv /app/.venv" in final
    assert re.search(r"ENV PATH=/app/\.venv/bin:\$PATH", final)
    assert re.search(r"apt-get install [^\n]*\bffmpeg\b", final)
    requirements = (REPO / "envs/requirements.in").read_text()
    for name in ("yt-dlp", "deno", "yt-dlp-ejs"):
        pinned = re.search(rf"^{re.escape(name)}==(\S+)$", requirements, re.MULTILINE)
        assert pinned and pinned[1] == locked_version(name), name


def test_a_missing_js_runtime_is_one_clear_message_before_any_clip(tmp_path, media, capfd):
    rows = [(f"nojs{i:07d}", 1, 3) for i in range(6)]
    with MediaServer(media[0]) as server:
        cfg = config(write_meta(tmp_path / "m.csv", rows), server, workers=3)
        cfg["ytdlp_args"] = ["--no-js-runtimes"]  # as if no runtime were installed
        out = tmp_path / "results/data/manifest.parquet"
        argv = ["all", "--config-json", json.dumps(cfg), "--sample-rate", "16000"]
        with pytest.raises(SystemExit) as exit_info:
            data.main([*argv, "--out", str(out)])
        assert server.log() == []  # no clip was tried
    assert exit_info.value.code == 3
    err = capfd.readouterr().err
    assert err.count("no usable JavaScript runtime") == 1, err
    assert "make setup" in err and "--js-runtimes" in err
    assert not out.exists() and not list((tmp_path / "results/data").glob("raw/*.json"))


def test_missing_ejs_is_a_clear_message(tmp_path):
    # yt-dlp's verbose header as it is without the yt-dlp-ejs package
    exe = tmp_path / "yt-dlp"
    exe.write_text(
        f"#!{sys.executable}\nimport sys\n"
        "print('2026.10.26') if '--version' in sys.argv else print("
        "'[debug] Optional libraries: certifi-2026.10.19\\n[debug] JS runtimes: deno-2.9.8')\n"
    )
    exe.chmod(0o755)
    with pytest.raises(ytdlp.ToolchainError, match="not yt-dlp-ejs.*make setup"):
        ytdlp.check_toolchain(str(exe))
    remote = ytdlp.check_toolchain(str(exe), ["--remote-components", "ejs:npm"])
    assert remote.js_runtime == "deno-2.9.8" and "ejs:npm" in remote.ejs


def test_the_real_yt_dlp_cuts_the_section_and_a_rerun_downloads_nothing(tmp_path, media, argv_log):
    served, reference = media
    rows = [("clipaaaaaaa", 3.0, 8.0), ("clipbbbbbbb", 1.5, 4.5)]
    out = tmp_path / "results/data/manifest.parquet"
    raw = out.parent / "raw"
    with MediaServer(served) as server:
        cfg = config(write_meta(tmp_path / "m.csv", rows), server)
        table = build_manifest(cfg, RATE, out)
        first = server.log()
        assert [server.media_reads(y) for y, *_ in rows] == [1, 1]

        calls = [a for a in argv_log if "--" in a]
        assert len(calls) == 2
        ffmpeg = find_ffmpeg()
        for argv in calls:
            ytid = argv[-1].rsplit("/", 1)[-1].removesuffix(".m4a")
            start, end = next((s, e) for y, s, e in rows if y == ytid)
            assert argv[0] == str(YTDLP)
            assert argv[argv.index("--download-sections") + 1] == f"*{start:g}-{end:g}"
            assert argv[argv.index("--ffmpeg-location") + 1] == ffmpeg
            assert argv[argv.index("--retries") + 1] == "1"
            assert argv[argv.index("--download-archive") + 1] == str(raw / "ytdlp-archive.txt")
            # the same argv as for YouTube, but for the URL
            youtube = ytdlp.ytdlp_argv(
                str(YTDLP),
                ytid,
                argv[argv.index("-o") + 1],
                start_s=start,
                end_s=end,
                ffmpeg=ffmpeg,
                cookies=None,
                archive=str(raw / "ytdlp-archive.txt"),
            )
            assert youtube[:-1] == argv[:-1]
            assert youtube[-1] == f"https://www.youtube.com/watch?v={ytid}"

        by_ytid = {r["ytid"]: r for r in table.to_pylist()}
        for ytid, start, end in rows:
            row = by_ytid[ytid]
            assert row["status"] == "ok", row
            state = json.loads((raw / f"{row['id']}.json").read_text())
            assert state["status"] == "downloaded" and state["attempts"] == 1
            assert state["sha256"] == file_sha256(raw / state["file"])
            clip, rate = decode(raw / state["file"], ffmpeg=ffmpeg)
            assert rate == RATE
            # cut where asked, and as long as asked, within one AAC frame
            found = offset_in(reference, clip[:, 0], int(start * RATE))
            assert abs(found - start * RATE) <= AAC_FRAME, (ytid, found / RATE)
            assert abs(clip.shape[0] - (end - start) * RATE) <= AAC_FRAME
            assert abs(row["duration"] - (end - start)) <= AAC_FRAME / RATE
        archive = (raw / "ytdlp-archive.txt").read_text().split()
        assert sorted(archive[1::2]) == sorted(y for y, *_ in rows)

        argv_log.clear()
        again = build_manifest(cfg, RATE, out)
        assert server.log() == first  # not one request
        assert argv_log == []  # not one process: not even the toolchain check
    assert again.select(["id", "status", "sha256"]) == table.select(["id", "status", "sha256"])


def section(server: MediaServer, ytid: str, work: Path, archive: str | None = None):
    """One try of the stage's download code, [2, 4] s of the served file."""
    return ytdlp.download_once(
        str(YTDLP),
        ytid,
        work,
        start_s=2.0,
        end_s=4.0,
        mode="section",
        ffmpeg=find_ffmpeg(),
        cookies=None,
        timeout=60,
        url_template=server.url_template,
        archive=archive,
    )


def test_a_download_that_a_killed_run_finished_is_kept_not_fetched_again(tmp_path, media):
    """yt-dlp finished (file renamed, archive written) but the job died before the outcome file:
    the next try keeps the file. Were the file lost, the archive must not leave the clip empty."""
    archive = tmp_path / "ytdlp-archive.txt"
    with MediaServer(media[0]) as server:

        def once(work):
            return section(server, "keptaaaaaaa", work, archive=str(archive))

        first = once(tmp_path / "work")
        digest = file_sha256(first.file)
        (first.file.parent / "download.m4a.part").write_bytes(b"left by the kill")
        again = once(tmp_path / "work")  # archive lists it; the finished file is there
        assert again.status == "downloaded" and file_sha256(again.file) == digest
        assert not (first.file.parent / "download.m4a.part").exists()
        assert server.media_reads("keptaaaaaaa") == 1
        lost = once(tmp_path / "elsewhere")  # archive lists it; no file: fetched without it
        assert lost.status == "downloaded" and server.media_reads("keptaaaaaaa") == 2
    assert archive.read_text().split() == ["generic", "keptaaaaaaa"]


def test_errors_are_classified_from_the_real_yt_dlp_output(tmp_path, media):
    faults = {
        "gone0000404": ["404"],
        "busy0000503": ["503"],
        "drop0000000": ["drop"],
        "slow0000429": ["429"],
    }
    want = {
        "gone0000404": ("unavailable", "HTTP Error 404"),
        "busy0000503": ("transient", "HTTP Error 503"),
        "drop0000000": ("transient", "Remote end closed connection"),
        "slow0000429": ("rate_limited", "HTTP Error 429"),
    }
    with MediaServer(media[0], faults) as server:
        for ytid, (status, text) in want.items():
            result = section(server, ytid, tmp_path / ytid)
            assert (result.status, result.file) == (status, None), (ytid, result)
            assert text in result.reason and "ERROR:" in result.reason
            # only the 404 is final; the others are tried again, the 429 after a pause of all
            assert (status in ytdlp.PERMANENT) == (ytid == "gone0000404")
        assert [len(server.probes(y)) for y in want] == [1, 1, 1, 1]


@pytest.fixture
def stage():
    """Starts data-stage jobs as Snakemake runs them (scripts/data.py), each in a session of its
    own so that a kill reaches the job and every yt-dlp and ffmpeg it started, as a cluster's
    would; whatever a failing test leaves running is killed the same way."""
    jobs = []

    def start(cfg: dict, step: str, *args: str, **popen) -> subprocess.Popen:
        argv = [sys.executable, str(REPO / "scripts/data.py"), step]
        argv += ["--config-json", json.dumps(cfg), *args]
        env = dict(os.environ, PYTHONPATH=str(REPO))
        jobs.append(subprocess.Popen(argv, env=env, start_new_session=True, **popen))
        return jobs[-1]

    yield start
    for job in jobs:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait()


@pytest.mark.slow
def test_bulk_run_with_failures_of_every_class_and_a_kill_9_that_resumes(tmp_path, media, stage):
    """200 clips with failures of each class; kill -9 of the shard job mid-run, then a rerun."""
    ytids, faults, expected = bulk_plan(200)
    csv_path = write_meta(tmp_path / "m.csv", [(y, 1.0, 2.5) for y in ytids])
    results = tmp_path / "results/data"
    base = 0.5
    with MediaServer(media[0], faults) as server:
        cfg = config(csv_path, server, workers=4, backoff_s=base)
        meta = results / "metadata.parquet"
        assert stage(cfg, "metadata", "--out", str(meta)).wait(120) == 0
        shard_args = ["--sample-rate", "16000", "--metadata", str(meta), "--shard", "0"]
        shard_args += ["--shards", "1", "--data-dir", str(results)]
        shard = results / "shards/shard-0.parquet"
        log1 = (tmp_path / "run1.log").open("w")
        job = stage(cfg, "shard", *shard_args, "--out", str(shard), stdout=log1, stderr=log1)
        deadline = time.monotonic() + 600
        while len(list(results.glob("raw/*.json"))) < 70:
            assert job.poll() is None, (tmp_path / "run1.log").read_text()
            assert time.monotonic() < deadline, "the first run made no progress"
            time.sleep(0.2)
        os.killpg(job.pid, signal.SIGKILL)
        job.wait()
        killed_at = time.monotonic()
        settled = {p.stem for p in results.glob("raw/*.json")}
        asked = {r.name for r in server.log()}
        assert not shard.exists() and 70 <= len(settled) < len(ytids)

        log2 = (tmp_path / "run2.log").open("w")
        rerun = stage(cfg, "shard", *shard_args, "--out", str(shard), stdout=log2, stderr=log2)
        assert rerun.wait(900) == 0, (tmp_path / "run2.log").read_text()
        manifest = results / "manifest.parquet"
        assert (
            stage(
                cfg, "manifest", "--sample-rate", "16000", "--out", str(manifest), str(shard)
            ).wait(120)
            == 0
        )
        rows = {r["ytid"]: r for r in pq.read_table(manifest).to_pylist()}
        requests = server.log()

    # every outcome recorded: in the manifest, and in an outcome file per clip. A clip in flight
    # at the kill kept no outcome: the rerun tried it afresh, with the faults it had left
    in_flight = {y for y in asked if f"mc-{y}" not in settled}
    assert len(in_flight) <= 4  # at most one per worker
    assert sorted(rows) == sorted(ytids)
    for y in ytids:
        status, attempts = expected[y]
        row = rows[y]
        if y in in_flight:
            after = [r for r in requests if r.name == y and not r.by_ffmpeg and r.at > killed_at]
            status = {200: "ok", 404: "unavailable"}.get(after[-1].status, "transient")
            # one probe per try, or two: yt-dlp's archive lists a video whose file the kill lost,
            # so the try asks again without the archive (ytdlp.download_once)
            assert 1 <= row["attempts"] <= len(after), (y, row, after)
            attempts = row["attempts"]
        assert (row["status"], row["attempts"]) == (status, attempts), (y, faults.get(y), row)
        state = json.loads((results / "raw" / f"mc-{y}.json").read_text())
        assert state["status"] == ("downloaded" if status == "ok" else status)
    gave_up = [rows[y] for y in ytids if faults.get(y) == ["503"] * 3]
    assert all("gave up after 3 attempts" in r["reason"] for r in gave_up)

    # no clip downloaded twice: a clip settled before the kill got no request after it, and
    # only clips in flight at the kill (asked for, not settled; at most one per worker) were
    # fetched again
    for y in ytids:
        late = [r for r in requests if r.name == y and r.at > killed_at]
        if f"mc-{y}" in settled:
            assert late == [], y
    twice = {y for y in ytids if server_reads(requests, y) > 1}
    assert twice <= in_flight, twice - in_flight

    # the backoff followed: each retry waited base * 2^(try-1) (jitter -25%) before its request
    for y, fault in faults.items():
        if y in in_flight:
            continue  # its tries were split by the kill
        probes = sorted(r.at for r in requests if r.name == y and not r.by_ffmpeg)
        state = json.loads((results / "raw" / f"mc-{y}.json").read_text())
        for k, (before, after) in enumerate(zip(probes, probes[1:]), start=1):
            assert after - before >= 0.75 * base * 2 ** (k - 1), (y, fault, k, after - before)
        assert len(state["waits_s"]) == len(probes) - 1, (y, state)
        for k, wait in enumerate(state["waits_s"], start=1):
            assert wait >= 0.75 * base * 2 ** (k - 1)
    logs = (tmp_path / "run1.log").read_text() + (tmp_path / "run2.log").read_text()
    n_429 = sum(1 for r in requests if r.status == 429)
    assert n_429 == BULK_FAULTS["http429_once"][0]
    # each 429 paused every worker (a 429 met by a call that the kill ended went unlogged)
    assert n_429 - len(in_flight) <= logs.count("rate limited (HTTP 429)") <= n_429
    assert logs.count("JS runtime deno-") == 2  # the toolchain check, once per run


def server_reads(requests, name: str) -> int:
    return sum(1 for r in requests if r.name == name and r.by_ffmpeg and r.sent_all)
