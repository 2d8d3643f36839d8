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
        # A URL the server says is gone (yt-dlp's generic extractor, a mirror): asking again
        # finds nothing. YouTube itself answers a missing video with "Video unavailable" above.
        ("unavailable", "not found (HTTP 404/410)", r"HTTP Error (404|410)\b"),
        # The server asks every client to slow down, not only this clip's: the downloader pauses
        # all its workers (data.Downloader), then tries the clip again.
        ("rate_limited", "rate limited (HTTP 429)", r"HTTP Error 429|too many requests"),
        (
            "transient",
            "HTTP error",
            r"HTTP Error (5\d\d|408|403)|service unavailable",
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
# Outcomes of one call that are tried again (with backoff) within the run; a clip that still
# fails after data.max_attempts is recorded as transient, and a rerun tries it again.
RETRIED = frozenset({"transient", "rate_limited"})

# Where yt-dlp is sent for a ytid (data.url_template). The ytid is checked before it is put in.
YOUTUBE_URL = "https://www.youtube.com/watch?v={ytid}"
# yt-dlp's words when --download-archive already lists the video: it downloads nothing.
IN_ARCHIVE = "has already been recorded in the archive"

# The cookies path never travels in argv (Snakemake prints shell commands with -p): rules pass
# `env:EISBACH_YTDLP_COOKIES#<fingerprint>` and the Snakefile puts the path in this variable.
COOKIES_ENV = "EISBACH_YTDLP_COOKIES"


@dataclass
class CallResult:
    # downloaded / unavailable / private / corrupt / bot_check / transient / rate_limited
    status: str
    reason: str
    file: Path | None = None


@dataclass
class Toolchain:
    """What the data stage found at start-up: yt-dlp and the JS runtime and EJS it will use."""

    ytdlp_version: str
    js_runtime: str  # e.g. "deno-2.9.8", as yt-dlp -v names it
    ejs: str  # e.g. "yt_dlp_ejs-0.8.0", or "fetched by yt-dlp (...)"

    def describe(self) -> str:
        return f"yt-dlp {self.ytdlp_version}; JS runtime {self.js_runtime}; EJS {self.ejs}"


class ToolchainError(RuntimeError):
    """yt-dlp cannot solve YouTube's JS challenges as installed: no clip is tried."""


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


def _debug_field(output: str, name: str) -> str | None:
    match = re.search(rf"^\[debug\] {re.escape(name)}: (.*)$", output, re.MULTILINE)
    return match.group(1).strip() if match else None


def check_toolchain(exe: str, extra_args=(), timeout: float = 60.0) -> Toolchain:
    """``yt-dlp --version`` and yt-dlp's own view of its JS runtimes and EJS, once, before any
    clip; a clear :class:`ToolchainError` when YouTube's JS challenges could not be solved.

    The runtime is the one yt-dlp itself finds (``--js-runtimes`` in data.ytdlp_args, else deno
    beside its Python, i.e. .venv/bin/deno from the lock, else on PATH): its verbose header
    (``yt-dlp -v`` with no URL) names it, so nothing here guesses yt-dlp's search order.
    """
    code, out = run_with_timeout([exe, "--version"], timeout)
    version = out.strip().splitlines()[-1].strip() if code == 0 and out.strip() else ""
    if not version:
        raise ToolchainError(f"data.ytdlp: `{exe} --version` failed: {error_line(out)}")
    args = [str(a) for a in extra_args]
    _, out = run_with_timeout([exe, "--ignore-config", "-v", *args], timeout)
    runtimes = _debug_field(out, "JS runtimes")
    libraries = _debug_field(out, "Optional libraries") or ""
    if runtimes is None:
        raise ToolchainError(
            f"data.ytdlp: `{exe} -v` printed no 'JS runtimes' line (yt-dlp {version}; the "
            f"lock's yt-dlp prints one): {error_line(out)}"
        )
    usable = [
        r.strip()
        for r in runtimes.split(",")
        if r.strip() and not r.strip().startswith("none") and "unsupported" not in r
    ]
    if not usable:
        raise ToolchainError(
            f"yt-dlp {version} finds no usable JavaScript runtime (it reports 'JS runtimes: "
            f"{runtimes}'), so YouTube's JS challenges would fail on most videos. The lock "
            "installs deno into .venv/bin, where yt-dlp looks first: run `make setup` (or pip "
            "install deno), or name a runtime with data.ytdlp_args: [--js-runtimes, "
            "deno:/path/to/deno]."
        )
    ejs = next((lib for lib in libraries.split(", ") if lib.startswith("yt_dlp_ejs")), None)
    if ejs is None:
        if "--remote-components" not in args:
            raise ToolchainError(
                f"yt-dlp {version} has a JS runtime ({', '.join(usable)}) but not yt-dlp-ejs, "
                "the challenge solver scripts: run `make setup` (the lock installs it) or pip "
                "install yt-dlp-ejs, or allow yt-dlp to fetch them with data.ytdlp_args: "
                "[--remote-components, ejs:npm]."
            )
        allowed = args[args.index("--remote-components") + 1 :][:1]
        ejs = f"fetched by yt-dlp (--remote-components {' '.join(allowed)})"
    return Toolchain(version, ", ".join(usable), ejs)


def video_url(template: str, ytid: str) -> str:
    """data.url_template with the (checked) ytid put in; only http(s) URLs."""
    if not is_valid_ytid(ytid):
        raise ValueError(f"refusing to call yt-dlp with ytid {ytid!r}")
    if template.count("{ytid}") != 1 or not template.startswith(("https://", "http://")):
        raise ValueError(
            f"data.url_template: {template!r} must be an http(s) URL holding {{ytid}} once"
        )
    return template.replace("{ytid}", ytid)


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
    url_template: str = YOUTUBE_URL,
    archive: str | None = None,
) -> list[str]:
    """argv of one yt-dlp call: best audio, only [start, end] when given (--download-sections)."""
    url = video_url(url_template, ytid)
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
    if archive:
        argv += ["--download-archive", archive]
    argv += [str(a) for a in extra_args]
    argv += ["-o", out_template, "--", url]
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


def _finished_downloads(work_dir: Path) -> list[Path]:
    """yt-dlp's finished files in work_dir: it renames a download to its final name only once
    the download (and, for a section, ffmpeg's cut) has succeeded."""
    return sorted(
        p
        for p in work_dir.iterdir()
        if p.is_file()
        and p.name.startswith("download.")
        and not p.name.endswith((".part", ".ytdl", ".temp"))
    )


def _prepare_work_dir(work_dir: Path) -> None:
    """An empty work_dir, except for a finished download that a killed run left there: yt-dlp
    (--no-overwrites, or the archive) then skips it, and it is kept instead of fetched again."""
    if work_dir.is_dir():
        keep = set(_finished_downloads(work_dir))
        for p in work_dir.iterdir():
            if p not in keep:
                shutil.rmtree(p) if p.is_dir() else p.unlink()
    else:
        shutil.rmtree(work_dir, ignore_errors=True)
        work_dir.mkdir(parents=True)


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
    url_template: str = YOUTUBE_URL,
    archive: str | None = None,
) -> CallResult:
    """One try: yt-dlp (and, in mode 'full', an ffmpeg slice). The audio lands in work_dir.

    With an archive, yt-dlp skips a video that it lists. Whether that skip is kept rests on
    work_dir alone: a finished download there (a run killed before it recorded the outcome) is
    used as it is; without one (the ytid's other section, a lost file) the call is made again
    without the archive, so a listed video never ends as "no file".
    """
    work_dir = Path(work_dir).resolve()
    _prepare_work_dir(work_dir)
    section = mode == "section"

    def call(use_archive: bool):
        argv = ytdlp_argv(
            exe,
            ytid,
            str(work_dir / "download.%(ext)s"),
            start_s=start_s if section else None,
            end_s=end_s if section else None,
            ffmpeg=ffmpeg,
            cookies=cookies,
            extra_args=extra_args,
            url_template=url_template,
            archive=archive if use_archive else None,
        )
        code, out = run_with_timeout(argv, timeout, cwd=work_dir)
        return code, redact(out, [cookies])

    started = time.monotonic()
    code, out = call(use_archive=bool(archive))
    if code == 0 and IN_ARCHIVE in out and not _finished_downloads(work_dir):
        code, out = call(use_archive=False)
    if code is None:
        return CallResult(
            "transient", f"timeout: yt-dlp ran past data.timeout_s={timeout:g} s and was killed"
        )
    if code != 0:
        status, label = classify(out)
        return CallResult(status, f"{label}: {error_line(out)}")
    files = _finished_downloads(work_dir)
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
