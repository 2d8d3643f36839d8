"""MusicCaps download through a fake yt-dlp (tests/fake_bin) put first on PATH.

The fake honours -o and --download-sections and writes a real WAV, prints yt-dlp's real error
text for each class, or hangs; it appends every call to a log, so the tests can count calls.
"""

import csv
import json
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import soundfile as sf

from eisbach import audio_checks, data, ytdlp
from eisbach.data import BotCheckStop, build_manifest, file_sha256

FAKE_BIN = Path(__file__).resolve().parent / "fake_bin"
VALIDATION = {"min_seconds": 1.0, "silence_rms_db": -60.0, "max_clipped_fraction": 0.01}


def ytid(n: int, tag: str = "") -> str:
    return (tag + "x" * 11)[:8] + f"{n:03d}"


class Fake:
    """The fake yt-dlp's environment: behaviours per ytid and the log of its calls."""

    def __init__(self, tmp_path, monkeypatch):
        self.dir = tmp_path
        self.log = tmp_path / "ytdlp-calls.jsonl"
        self.ffmpeg_log = tmp_path / "ffmpeg-calls.jsonl"
        self.behaviour_file = tmp_path / "behaviour.json"
        self.set({})
        monkeypatch.setenv("PATH", f"{FAKE_BIN}{os.pathsep}{os.environ['PATH']}")
        monkeypatch.setenv("FAKE_YTDLP_LOG", str(self.log))
        monkeypatch.setenv("FAKE_FFMPEG_LOG", str(self.ffmpeg_log))
        monkeypatch.setenv("FAKE_YTDLP_BEHAVIOUR", str(self.behaviour_file))

    def set(self, behaviours: dict) -> None:
        self.behaviour_file.write_text(json.dumps(behaviours))

    def calls(self) -> list[dict]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def called(self) -> list[str]:
        return [c["ytid"] for c in self.calls()]

    def reset_log(self) -> None:
        self.log.unlink(missing_ok=True)


@pytest.fixture
def fake(tmp_path, monkeypatch):
    return Fake(tmp_path, monkeypatch)


def write_meta(path, ytids, start=0, end=3):
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["ytid", "start_s", "end_s", "aspect_list", "caption", "is_audioset_eval"])
        for i, y in enumerate(ytids):
            writer.writerow([y, start, end, "['tag']", f"caption {i}", str(i % 2 == 0)])
    return path


def config(csv_path, **overrides):
    return {
        "source": "musiccaps",
        "musiccaps_csv": str(csv_path),
        "workers": 4,
        "max_attempts": 3,
        "backoff_s": 0.01,
        "timeout_s": 20,
        "validation": VALIDATION,
    } | overrides


def run(tmp_path, cfg, sample_rate=16000):
    out = tmp_path / "results/data/manifest.parquet"
    build_manifest(cfg, sample_rate, out)
    return {r["ytid"]: r for r in pq.read_table(out).to_pylist()}


CLASSES = {
    "ok": ("ok", ""),
    "unavailable": ("unavailable", "Video unavailable"),
    "private": ("private", "Private video"),
    "removed": ("unavailable", "removed by the uploader"),
    "age": ("unavailable", "age-restricted"),
    "region": ("unavailable", "region-restricted"),
    "copyright": ("unavailable", "copyright claim"),
    "http429": ("transient", "HTTP Error 429"),
    "http503": ("transient", "HTTP Error 503"),
    "unknown": ("transient", "unrecognised error"),
    "nofile": ("transient", "wrote no file"),
    "flaky": ("ok", ""),
    "corrupt": ("corrupt", "does not decode"),
    "truncated": ("corrupt", "truncated WAV"),
    "silent": ("silent", "silence_rms_db"),
    "clipped": ("clipped", "max_clipped_fraction"),
    "short": ("too_short", "min_seconds"),
}
ATTEMPTS = {"http429": 3, "http503": 3, "unknown": 3, "nofile": 3, "flaky": 2}


def test_every_outcome_is_recorded_and_a_rerun_redoes_only_unfinished_clips(tmp_path, fake):
    ytids = {name: ytid(i, name) for i, name in enumerate(CLASSES)}
    fake.set({y: name for name, y in ytids.items()})
    csv_path = write_meta(tmp_path / "meta.csv", list(ytids.values()))
    rows = run(tmp_path, config(csv_path))
    assert len(rows) == len(CLASSES)
    for name, (status, reason) in CLASSES.items():
        row = rows[ytids[name]]
        assert row["status"] == status, (name, row)
        assert reason in row["reason"], (name, row["reason"])
        assert row["attempts"] == ATTEMPTS.get(name, 1), (name, row["attempts"])
        assert row["source"] == "musiccaps" and row["id"] == f"mc-{ytids[name]}"
        if status == "ok":
            audio, rate = sf.read(
                tmp_path / row["path"] if not Path(row["path"]).is_absolute() else row["path"]
            )
            assert rate == row["sample_rate"] == 16000 and audio.ndim == 1
            assert row["duration"] == pytest.approx(3.0) == len(audio) / rate
            assert row["sha256"] == file_sha256(row["path"])
        else:
            assert row["path"] is None and row["sha256"] is None
    called = fake.called()
    for name in ("unavailable", "private", "removed", "age", "region", "copyright", "ok"):
        assert called.count(ytids[name]) == 1, name  # permanent errors are never retried
    for argv in (c["argv"] for c in fake.calls()):
        assert (
            "--download-sections" in argv and argv[argv.index("--download-sections") + 1] == "*0-3"
        )
        assert argv[-2] == "--" and argv[-1].startswith("https://www.youtube.com/watch?v=")

    # Second run: finished clips (ok, quarantined, permanent errors) make 0 calls; only the
    # transient failures are tried again.
    fake.reset_log()
    fake.set({y: name for name, y in ytids.items() if name != "http503"})
    rows = run(tmp_path, config(csv_path, max_attempts=1))
    transient = {ytids[n] for n, (s, _) in CLASSES.items() if s == "transient"}
    assert set(fake.called()) == transient
    assert rows[ytids["http503"]]["status"] == "ok"
    assert rows[ytids["http503"]]["attempts"] == 4  # counted over both runs
    assert rows[ytids["flaky"]]["status"] == "ok" and rows[ytids["silent"]]["status"] == "silent"

    fake.reset_log()
    run(tmp_path, config(csv_path, max_attempts=1))
    assert set(fake.called()) == transient - {ytids["http503"]}


def test_a_hang_is_killed_at_the_timeout_and_retried(tmp_path, fake):
    hang = ytid(1, "hang")
    fake.set({hang: "hang"})
    csv_path = write_meta(tmp_path / "meta.csv", [hang, ytid(2, "ok")])
    started = time.monotonic()
    rows = run(tmp_path, config(csv_path, timeout_s=1.0, max_attempts=2))
    assert time.monotonic() - started < 15
    assert rows[hang]["status"] == "transient" and rows[hang]["attempts"] == 2
    assert "timeout" in rows[hang]["reason"] and "data.timeout_s" in rows[hang]["reason"]
    assert rows[ytid(2, "ok")]["status"] == "ok"


def test_backoff_is_exponential(tmp_path, fake, monkeypatch):
    delays = []
    monkeypatch.setattr(data.random, "uniform", lambda a, b: 1.0)
    original = data.backoff_delay

    def record(base, attempt):
        delays.append(original(base, attempt))
        return 0.0

    monkeypatch.setattr(data, "backoff_delay", record)
    y = ytid(1, "503")
    fake.set({y: "http503"})
    csv_path = write_meta(tmp_path / "meta.csv", [y])
    run(tmp_path, config(csv_path, backoff_s=2.0, max_attempts=4, workers=1))
    assert delays == [2.0, 4.0, 8.0]  # no wait after the last try
    assert fake.called() == [y] * 4


@pytest.mark.parametrize("kind", ["bot", "ratelimit"])
def test_bot_check_stops_the_shard_and_a_rerun_resumes(tmp_path, fake, kind):
    ytids = [ytid(i, "clip") for i in range(5)]
    fake.set({ytids[1]: kind})
    csv_path = write_meta(tmp_path / "meta.csv", ytids)
    with pytest.raises(BotCheckStop) as info:
        run(tmp_path, config(csv_path, workers=1))
    message = str(info.value)
    assert "data.cookies" in message and "slow down" in message and ytids[1] in message
    assert not (tmp_path / "results/data/manifest.parquet").exists()
    assert fake.called() == ytids[:2]  # stopped early: the clips after it were not asked for

    fake.reset_log()
    fake.set({})
    rows = run(tmp_path, config(csv_path, workers=1))
    assert fake.called() == ytids[1:]  # the finished clip is not downloaded again
    assert {r["status"] for r in rows.values()} == {"ok"}


def test_bot_check_record_mode_writes_the_rows(tmp_path, fake, capsys):
    ytids = [ytid(i, "clip") for i in range(4)]
    fake.set({ytids[0]: "bot"})
    csv_path = write_meta(tmp_path / "meta.csv", ytids)
    rows = run(tmp_path, config(csv_path, workers=1, on_bot_check="record"))
    assert rows[ytids[0]]["status"] == "bot_check" and "bot check" in rows[ytids[0]]["reason"]
    for y in ytids[1:]:
        assert rows[y]["status"] == "bot_check"
        assert rows[y]["reason"].startswith("not attempted: the shard stopped after a bot check")
    assert fake.called() == ytids[:1]
    err = capsys.readouterr()
    assert "data.cookies" in err.out + err.err


def test_shell_metacharacters_are_rejected_before_any_process(tmp_path, fake, monkeypatch):
    monkeypatch.chdir(tmp_path)
    evil = ["$(touch x)", "`touch y`", "a;touch z #", "--exec=ls", "../../../etc"]
    csv_path = write_meta(tmp_path / "meta.csv", evil)
    rows = build_manifest(config(csv_path), 16000, tmp_path / "m.parquet").to_pylist()
    assert fake.calls() == []  # the fake never ran
    assert not any((tmp_path / name).exists() for name in "xyz")
    for i, (row, y) in enumerate(zip(rows, evil), start=1):
        assert row["status"] == "unavailable"
        assert f"row {i}" in row["reason"] and repr(y) in row["reason"]
    with pytest.raises(ValueError, match="refusing"):
        ytdlp.ytdlp_argv("yt-dlp", "$(touch x)", "o", start_s=0, end_s=1, ffmpeg=None, cookies=None)


def test_cookies_path_never_appears_in_logs_or_manifest(tmp_path, fake, capfd):
    secret = tmp_path / "secret-place" / "my-cookies-XYZZY.txt"
    secret.parent.mkdir()
    secret.write_text("# Netscape HTTP Cookie File\n")
    ok, bad = ytid(1, "ok"), ytid(2, "cookies")
    fake.set({bad: "badcookies"})
    csv_path = write_meta(tmp_path / "meta.csv", [ok, bad])
    out = tmp_path / "results/data/manifest.parquet"
    data.main(
        [
            "all",
            "--config-json",
            json.dumps(config(csv_path, cookies=str(secret), max_attempts=1)),
            "--sample-rate",
            "16000",
            "--out",
            str(out),
        ]
    )
    for call in fake.calls():  # yt-dlp got the cookies ...
        assert call["argv"][call["argv"].index("--cookies") + 1] == str(secret)
    captured = capfd.readouterr()
    texts = [captured.out, captured.err, out.read_bytes().decode("latin-1")]
    texts += [p.read_text() for p in (tmp_path / "results/data/raw").glob("*.json")]
    for text in texts:  # ... and nothing that was written or printed names them
        assert "XYZZY" not in text and "secret-place" not in text
    rows = {r["ytid"]: r for r in pq.read_table(out).to_pylist()}
    assert "<redacted>" in rows[bad]["reason"] and rows[ok]["status"] == "ok"


def test_cookies_reach_jobs_through_the_environment(tmp_path, monkeypatch):
    secret = tmp_path / "c.txt"
    secret.write_text("#\n")
    redacted = ytdlp.redacted_config({"source": "musiccaps", "cookies": str(secret)})
    assert str(secret) not in json.dumps(redacted)
    assert redacted["cookies"].startswith(f"env:{ytdlp.COOKIES_ENV}#")
    monkeypatch.delenv(ytdlp.COOKIES_ENV, raising=False)
    with pytest.raises(data.DataStageError, match=ytdlp.COOKIES_ENV):
        data.cookies_path(redacted)
    monkeypatch.setenv(ytdlp.COOKIES_ENV, str(secret))
    assert data.cookies_path(redacted) == str(secret)
    with pytest.raises(FileNotFoundError) as info:
        data.cookies_path({"cookies": str(tmp_path / "gone-XYZZY.txt")})
    assert "XYZZY" not in str(info.value)


def test_full_mode_downloads_the_video_then_slices_with_ffmpeg(tmp_path, fake):
    y = ytid(1, "full")
    csv_path = write_meta(tmp_path / "meta.csv", [y], start=2, end=5)
    rows = run(tmp_path, config(csv_path, download="full"), sample_rate=44100)
    assert rows[y]["status"] == "ok" and rows[y]["duration"] == pytest.approx(3.0)
    assert sf.info(rows[y]["path"]).samplerate == 44100
    (call,) = fake.calls()
    assert "--download-sections" not in call["argv"]
    (ffmpeg_argv,) = [json.loads(x) for x in fake.ffmpeg_log.read_text().splitlines()]
    assert ffmpeg_argv[ffmpeg_argv.index("-ss") + 1] == "2.000"
    assert ffmpeg_argv[ffmpeg_argv.index("-to") + 1] == "5.000"


def test_ffmpeg_comes_from_imageio_when_none_is_on_path(monkeypatch):
    monkeypatch.setattr(audio_checks.shutil, "which", lambda name: None)
    module = types.SimpleNamespace(get_ffmpeg_exe=lambda: "/opt/imageio/ffmpeg-linux64")
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", module)
    assert audio_checks.find_ffmpeg() == "/opt/imageio/ffmpeg-linux64"
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # not installed
    assert audio_checks.find_ffmpeg() is None


def test_missing_tools_are_clear_errors(tmp_path, fake, monkeypatch):
    csv_path = write_meta(tmp_path / "meta.csv", [ytid(1)])
    with pytest.raises(FileNotFoundError, match="data.ytdlp: 'no-such-yt-dlp'"):
        run(tmp_path, config(csv_path, ytdlp="no-such-yt-dlp"))
    monkeypatch.setattr(data, "find_ffmpeg", lambda: None)
    with pytest.raises(FileNotFoundError, match="imageio-ffmpeg"):
        run(tmp_path, config(csv_path))


@pytest.mark.parametrize(
    "text, status",
    [
        ("ERROR: [youtube] abcdefghijk: Video unavailable", "unavailable"),
        (
            "ERROR: [youtube] abcdefghijk: Private video. Sign in if you've been granted access to this video",
            "private",
        ),
        (
            "ERROR: [youtube] abcdefghijk: Sign in to confirm you\u2019re not a bot. Use --cookies-from-browser or --cookies for the authentication.",
            "bot_check",
        ),
        ("ERROR: [youtube] abcdefghijk: Sign in to confirm you're not a bot", "bot_check"),
        ("ERROR: unable to download video data: HTTP Error 429: Too Many Requests", "rate_limited"),
        ("ERROR: unable to download video data: HTTP Error 503: Service Unavailable", "transient"),
        (
            "ERROR: [youtube] abcdefghijk: Video unavailable. This video has been removed by the uploader",
            "unavailable",
        ),
        (
            "ERROR: [youtube] abcdefghijk: Sign in to confirm your age. This video may be inappropriate for some users.",
            "unavailable",
        ),
        (
            "ERROR: [youtube] abcdefghijk: The uploader has not made this video available in your country",
            "unavailable",
        ),
        (
            "ERROR: [youtube] abcdefghijk: This video is no longer available due to a copyright claim by X",
            "unavailable",
        ),
        (
            "ERROR: [youtube] abcdefghijk: Video unavailable. This content isn't available, try again later.",
            "bot_check",
        ),
        ("ERROR: [youtube] abcdefghijk: Read timed out.", "transient"),
        ("ERROR: something new", "transient"),
    ],
)
def test_error_classes(text, status):
    assert ytdlp.classify(text)[0] == status


def test_parallel_workers_are_faster(tmp_path, fake, monkeypatch):
    monkeypatch.setenv("FAKE_YTDLP_DELAY", "0.2")
    ytids = [ytid(i, "par") for i in range(8)]
    csv_path = write_meta(tmp_path / "meta.csv", ytids)
    times = {}
    for workers in (1, 4):
        started = time.monotonic()
        build_manifest(
            config(csv_path, workers=workers), 16000, tmp_path / f"w{workers}/data/m.parquet"
        )
        times[workers] = time.monotonic() - started
    assert times[4] < 0.7 * times[1], times


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def test_sigterm_ends_the_calls_in_flight_and_records_nothing_for_them(tmp_path, fake):
    hung = [ytid(i, "hang") for i in range(2)]
    fake.set({y: "hang" for y in hung})
    csv_path = write_meta(tmp_path / "meta.csv", hung)
    script = Path(__file__).resolve().parent.parent / "scripts" / "data.py"
    argv = [sys.executable, str(script), "all", "--config-json"]
    argv += [json.dumps(config(csv_path, workers=2, timeout_s=600)), "--sample-rate", "16000"]
    argv += ["--out", str(tmp_path / "results/data/manifest.parquet")]
    env = dict(os.environ, PYTHONPATH=str(script.parent.parent))
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while len(fake.calls()) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        pids = [c["pid"] for c in fake.calls()]
        assert len(pids) == 2 and all(_alive(p) for p in pids)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) != 0
    finally:
        proc.kill()
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(p) for p in pids), "a hung yt-dlp outlived its shard"
    assert not list((tmp_path / "results/data/raw").glob("*.json"))  # retried on the rerun
