"""yt-dlp at its boundary: argv lists, a per-call timeout, and errors sorted into classes.

Nothing here builds a shell string. The ytid is checked against ``^[A-Za-z0-9_-]{11}$`` before a
process starts, and reaches yt-dlp only inside a watch URL after ``--``. The cookies path goes
into argv (yt-dlp needs it) but never into a message: every text that leaves this module passes
through :func:`redact`.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from eisbach.musiccaps import is_valid_ytid

# Order matters: the first class whose pattern matches wins.
ERROR_CLASSES: tuple[tuple[str, str, re.Pattern], ...] = tuple(
    (status, label, re.compile(pattern, re.IGNORECASE))
    for status, label, pattern in (
        ("bot_check", "bot check", r"confirm you.{0,3}re not a bot|confirm you are not a bot"),
        (
            "bot_check",
            "session rate-limited by YouTube",
            r"rate-limited by YouTube|content isn.t available, try again later",
        ),
        (
            "private",
            "private video",
            r"private video|video is private|members[- ]only|join this channel",
        ),
        ("unavailable", "copyright claim", r"copyright"),
        (
            "unavailable",
            "age-restricted",
            r"confirm your age|age[- ]restricted|inappropriate for some users",
        ),
        (
            "unavailable",
            "region-restricted",
            r"available in your country|blocked it in your country|geo[- ]?restrict",
        ),
        (
            "unavailable",
            "removed",
            r"removed by the uploader|has been removed|account associated with this video has been terminated",
        ),
        (
            "unavailable",
            "unavailable",
            r"video unavailable|video is unavailable|video is not available|video is no longer available|requires payment",
        ),
        (
            "transient",
            "HTTP error",
            r"HTTP Error (429|5\d\d|408|403)|too many requests|service unavailable",
        ),
        (
            "transient",
            "network error",
            r"timed out|connection (reset|refused|aborted)|temporary failure in name resolution|"
            r"incompleteread|remote end closed|network is unreachable|unable to download",
        ),
    )
)
# Outcomes that a rerun keeps: the clip is never asked for again.
PERMANENT = frozenset({"unavailable", "private", "corrupt"})

# The cookies path never travels in argv (Snakemake prints shell commands with -p): rules pass
# `env:EISBACH_YTDLP_COOKIES#<fingerprint>` and the Snakefile puts the path in this variable.
COOKIES_ENV = "EISBACH_YTDLP_COOKIES"


@dataclass
class CallResult:
    status: str  # downloaded / unavailable / private / corrupt / bot_check / transient
    reason: str
    file: Path | None = None


def find_executable(name: str) -> str:
    """The yt-dlp executable (data.ytdlp) looked up on PATH, then beside this Python (the
    project's .venv/bin, where the lock installs it), or a clear error."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if not found:
        raise FileNotFoundError(
            f"data.ytdlp: {name!r} is not an executable on PATH; install yt-dlp "
            "(pip install yt-dlp, with yt-dlp-ejs and deno for YouTube's JS challenges) "
            "or set data.ytdlp to its path"
        )
    return found


def redacted_config(data: dict) -> dict:
    """The data section as rules pass it in argv: the cookies path replaced by a reference.

    The fingerprint changes when the path does, so that setting data.cookies reruns the shards.
    """
    out = dict(data)
    if out.get("cookies"):
        digest = hashlib.sha256(str(out["cookies"]).encode()).hexdigest()[:12]
        out["cookies"] = f"env:{COOKIES_ENV}#{digest}"
    return out


def redact(text: str, secrets) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(str(secret), "<redacted>")
    return text


def classify(output: str) -> tuple[str, str]:
    """(status, label) for yt-dlp's output of a failed call; unknown errors are transient."""
    for status, label, pattern in ERROR_CLASSES:
        if pattern.search(output):
            return status, label
    return "transient", "unrecognised error"


def error_line(output: str) -> str:
    """The line of yt-dlp's output that says what went wrong (its last ERROR line)."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("ERROR")]
    return (errors or lines or ["no output"])[-1][:300]


def ytdlp_argv(
    exe: str,
    ytid: str,
    out_template: str,
    *,
    start_s: float | None,
    end_s: float | None,
    ffmpeg: str | None,
    cookies: str | None,
    extra_args=(),
) -> list[str]:
    """argv of one yt-dlp call: best audio, only [start, end] when given (--download-sections)."""
    if not is_valid_ytid(ytid):
        raise ValueError(f"refusing to call yt-dlp with ytid {ytid!r}")
    argv = [
        exe,
        "--ignore-config",
        "--no-playlist",
        "--no-progress",
        "--no-overwrites",
        "--retries",
        "1",
        "--fragment-retries",
        "1",
        "--socket-timeout",
        "30",
        "-f",
        "bestaudio/best",
    ]
    if start_s is not None and end_s is not None:
        argv += ["--download-sections", f"*{start_s:g}-{end_s:g}"]
    if ffmpeg:
        argv += ["--ffmpeg-location", ffmpeg]
    if cookies:
        argv += ["--cookies", cookies]
    argv += [str(a) for a in extra_args]
    argv += ["-o", out_template, "--", f"https://www.youtube.com/watch?v={ytid}"]
    return argv


# Calls in flight, so that an interrupted shard can end them. Each stays in the job's process
# group, so that a signal to the group (Snakemake cancelling the job, a cluster's SIGKILL, Ctrl-C)
# reaches yt-dlp and its ffmpeg too; a job killed outright leaves no orphan downloading on.
_RUNNING: dict[int, subprocess.Popen] = {}
_RUNNING_LOCK = threading.Lock()


def _kill_tree(proc: subprocess.Popen) -> None:
    """Ends a call and every process it started (yt-dlp's ffmpeg), not the group they share
    with this job."""
    import psutil  # a dependency of peft, which the lock pins

    try:
        parent = psutil.Process(proc.pid)
        # Listed before the kill: once yt-dlp dies its children are re-parented out of reach.
        tree = [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for member in tree:
        try:
            member.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(tree[1:], timeout=5)


def kill_running() -> int:
    """End every call in flight (with its children); the number ended."""
    with _RUNNING_LOCK:
        procs = list(_RUNNING.values())
    for proc in procs:
        _kill_tree(proc)
    return len(procs)


def run_with_timeout(argv: list[str], timeout: float, cwd=None) -> tuple[int | None, str]:
    """(returncode, stdout+stderr); returncode None when the call passed the timeout.

    A hang is ended with every child (ffmpeg) it spawned. The call shares the job's process
    group (no session of its own), so it dies with the job.
    """
    with _RUNNING_LOCK:
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        )
        _RUNNING[proc.pid] = proc
    try:
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out
    except subprocess.TimeoutExpired:
        _kill_tree(proc)
        out, _ = proc.communicate()
        return None, out or ""
    except BaseException:
        _kill_tree(proc)
        proc.wait()
        raise
    finally:
        with _RUNNING_LOCK:
            _RUNNING.pop(proc.pid, None)


def slice_with_ffmpeg(ffmpeg: str, src: Path, dst: Path, start_s: float, end_s: float, timeout):
    """[start_s, end_s] of a whole downloaded video into a lossless FLAC (argv, no shell)."""
    argv = [
        ffmpeg,
        "-nostdin",
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        "-ss",
        f"{start_s:.3f}",
        "-to",
        f"{end_s:.3f}",
        "-i",
        str(src),
        "-vn",
        "-c:a",
        "flac",
        str(dst),
    ]
    code, out = run_with_timeout(argv, timeout)
    if code is None:
        return f"ffmpeg slice passed the {timeout:g} s timeout"
    if code != 0 or not dst.is_file():
        return f"ffmpeg slice failed: {error_line(out)}"
    return None


def download_once(
    exe: str,
    ytid: str,
    work_dir: Path,
    *,
    start_s: float,
    end_s: float,
    mode: str,
    ffmpeg: str | None,
    cookies: str | None,
    timeout: float,
    extra_args=(),
) -> CallResult:
    """One try: yt-dlp (and, in mode 'full', an ffmpeg slice). The audio lands in work_dir."""
    work_dir = Path(work_dir).resolve()
    shutil.rmtree(work_dir, ignore_errors=True)
    work_dir.mkdir(parents=True)
    section = mode == "section"
    argv = ytdlp_argv(
        exe,
        ytid,
        str(work_dir / "download.%(ext)s"),
        start_s=start_s if section else None,
        end_s=end_s if section else None,
        ffmpeg=ffmpeg,
        cookies=cookies,
        extra_args=extra_args,
    )
    started = time.monotonic()
    code, out = run_with_timeout(argv, timeout, cwd=work_dir)
    out = redact(out, [cookies])
    if code is None:
        return CallResult(
            "transient", f"timeout: yt-dlp ran past data.timeout_s={timeout:g} s and was killed"
        )
    if code != 0:
        status, label = classify(out)
        return CallResult(status, f"{label}: {error_line(out)}")
    files = sorted(
        p
        for p in work_dir.iterdir()
        if p.is_file()
        and p.name.startswith("download.")
        and not p.name.endswith((".part", ".ytdl"))
    )
    if not files:
        return CallResult("transient", f"yt-dlp exited 0 but wrote no file: {error_line(out)}")
    if section:
        return CallResult("downloaded", "", files[0])
    sliced = work_dir / "clip.flac"
    left = max(timeout - (time.monotonic() - started), 10.0)
    problem = slice_with_ffmpeg(ffmpeg, files[0], sliced, start_s, end_s, left)
    if problem:
        status = "transient" if "timeout" in problem else "corrupt"
        return CallResult(status, problem)
    return CallResult("downloaded", "", sliced)
