"""yt-dlp calls die with their job (issue 14): they share the job's process group, so a SIGKILL
of the group leaves no orphan; a timeout ends the call with every process it started."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from eisbach.ytdlp import run_with_timeout

REPO = Path(__file__).resolve().parent.parent

# Stands for yt-dlp: starts a child (as yt-dlp starts ffmpeg), records both pids, then hangs.
FAKE = """#!{python}
import subprocess, sys, time
child = subprocess.Popen(["sleep", "600"])
with open(sys.argv[1] + ".tmp", "w") as fh:
    fh.write(f"{{__import__('os').getpid()}} {{child.pid}}")
__import__("os").replace(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(600)
"""


def alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def fake_ytdlp(tmp_path: Path) -> tuple[Path, Path]:
    exe = tmp_path / "yt-dlp"
    exe.write_text(FAKE.format(python=sys.executable))
    exe.chmod(0o755)
    return exe, tmp_path / "pids"


def wait_for(path: Path, proc=None, timeout: float = 30) -> list[int]:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc is None or proc.poll() is None, "the job ended before the call started"
        assert time.monotonic() < deadline, f"no {path} after {timeout} s"
        time.sleep(0.05)
    return [int(p) for p in path.read_text().split()]


def wait_dead(pids: list[int], timeout: float = 10) -> list[int]:
    deadline = time.monotonic() + timeout
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return [p for p in pids if alive(p)]


def test_sigkill_of_the_jobs_process_group_kills_the_call_and_its_children(tmp_path):
    exe, pids_file = fake_ytdlp(tmp_path)
    code = (
        "import sys; from eisbach.ytdlp import run_with_timeout; "
        "run_with_timeout(sys.argv[1:], 600)"
    )
    # A job as Snakemake starts one: in a process group of its own.
    job = subprocess.Popen(
        [sys.executable, "-c", code, str(exe), str(pids_file)],
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        start_new_session=True,
    )
    try:
        pids = wait_for(pids_file, job)
        assert all(alive(p) for p in pids)
        assert {os.getpgid(p) for p in pids} == {job.pid}, "the call left the job's group"
        os.killpg(job.pid, signal.SIGKILL)
        assert job.wait(timeout=30) == -signal.SIGKILL
    finally:
        job.kill()
    orphans = wait_dead(pids)
    for pid in orphans:
        os.kill(pid, signal.SIGKILL)
    assert not orphans, "yt-dlp (or its child) outlived the SIGKILL of its job's group"


def test_a_timeout_ends_the_call_and_every_process_it_started(tmp_path):
    exe, pids_file = fake_ytdlp(tmp_path)
    started = time.monotonic()
    code, _ = run_with_timeout([str(exe), str(pids_file)], timeout=8)
    assert code is None and time.monotonic() - started < 20
    pids = wait_for(pids_file, timeout=1)
    orphans = wait_dead(pids)
    for pid in orphans:
        os.kill(pid, signal.SIGKILL)
    assert not orphans, "a timed-out call left a child running"
    assert os.getpgid(os.getpid()) == os.getpgrp()  # the test process itself was spared
