"""One GPU (or N) of its own for each GPU job on one machine: a lock-file slot allocator.

``snakemake --cores all --resources gpu=N`` caps the GPUs that running jobs declare at N, but
gives no job a device: every one would open cuda:0. The GPU rules therefore start their
interpreter through this module:

    python -m eisbach.gpu_slots --gpus {resources.gpu} -- scripts/train.py ...

It takes as many free devices of the machine's pool as the job declares, each by an exclusive
``flock`` on ``<lock dir>/gpu<index>.lock``, sets ``CUDA_VISIBLE_DEVICES`` to them and replaces
itself (exec) by the job's interpreter, which inherits the locked descriptors: the slots stay
taken for as long as the job's process lives, and are freed by the kernel however it ends
(a crash or kill -9 included), so no stale lock survives. A job that declares 0 GPUs sees none
(``CUDA_VISIBLE_DEVICES=""``), so a CPU job never lands on a device that a GPU job holds. When
all devices are taken (another Snakemake, or a --resources larger than the pool) a job waits.

The pool: ``EISBACH_GPU_POOL`` (device entries, comma-separated), else the
``CUDA_VISIBLE_DEVICES`` that Snakemake itself was started with (a SLURM allocation sets it),
else one index per ``/dev/nvidia<k>`` device node of the machine or container (0 to n-1: CUDA
numbers the devices a container sees from 0, whatever their nodes are called). Locks live in
``EISBACH_GPU_LOCK_DIR``, by default ``/tmp/eisbach-gpu-slots-<uid>[-<SLURM_JOB_ID>]``: local to
the machine, and one set per SLURM job, so that jobs of the SLURM executor, each with its own
allocation, never wait for each other's slots while one Snakemake inside an ``salloc`` of
several GPUs shares its allocation out. ``EISBACH_GPU_SLOTS=off`` leaves the environment as it
is (a scheduler that places GPUs some other way).

This module imports only the standard library: it runs before torch, in every GPU job.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import re
import sys
import time
from pathlib import Path

POOL_ENV = "EISBACH_GPU_POOL"
LOCK_DIR_ENV = "EISBACH_GPU_LOCK_DIR"
MODE_ENV = "EISBACH_GPU_SLOTS"
# /tmp itself, not tempfile's TMPDIR: Snakemake may give each job a TMPDIR of its own, and the
# locks only work in a folder that every job on the machine shares.
DEFAULT_LOCK_DIR = "/tmp/eisbach-gpu-slots"  # noqa: S108 (+ -<uid>[-<SLURM_JOB_ID>], owner-checked)


def device_pool(environ=os.environ, dev=Path("/dev")) -> list[str]:
    """The devices jobs on this machine share, as CUDA_VISIBLE_DEVICES entries."""
    for name in (POOL_ENV, "CUDA_VISIBLE_DEVICES"):
        value = environ.get(name)
        if value is not None and value.strip():
            return [d.strip() for d in value.split(",") if d.strip()]
    nodes = [p for p in dev.glob("nvidia*") if re.fullmatch(r"nvidia\d+", p.name)]
    return [str(i) for i in range(len(nodes))]


def slots_enabled(environ=os.environ) -> bool:
    mode = environ.get(MODE_ENV, "on")
    if mode not in ("on", "off"):
        raise SystemExit(f"gpu_slots: {MODE_ENV}={mode!r}; use on or off")
    return mode == "on"


def lock_dir(environ=os.environ) -> Path:
    if environ.get(LOCK_DIR_ENV):
        return Path(environ[LOCK_DIR_ENV])
    job = environ.get("SLURM_JOB_ID")
    return Path(f"{DEFAULT_LOCK_DIR}-{os.getuid()}" + (f"-{job}" if job else ""))


def lock_name(device: str) -> str:
    """A file name for a device entry (an index, or a GPU UUID / MIG name)."""
    return "gpu" + re.sub(r"[^A-Za-z0-9_.-]", "_", device) + ".lock"


def try_acquire(pool: list[str], n: int, folder: Path) -> tuple[list[str], list[int]] | None:
    """n free devices of the pool with their locked descriptors, lowest first; None (nothing
    held) when fewer are free. A lock on the directory makes taking several slots atomic, so
    two jobs of 2 GPUs on 3 devices cannot each take one and wait for the other forever."""
    guard = os.open(folder / ".guard", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(guard, fcntl.LOCK_EX)
        taken: list[tuple[str, int]] = []
        for device in pool:
            fd = os.open(folder / lock_name(device), os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            taken.append((device, fd))
            if len(taken) == n:
                return [d for d, _ in taken], [fd for _, fd in taken]
        for _, fd in taken:
            os.close(fd)
        return None
    finally:
        os.close(guard)


def acquire(
    n: int, pool: list[str], folder: Path, poll_s: float = 0.5, log=sys.stderr
) -> tuple[list[str], list[int]]:
    """Blocks until n devices of the pool are free; (devices, locked descriptors)."""
    if n > len(pool):
        raise SystemExit(
            f"gpu_slots: the job declares {n} GPUs, but this machine's pool has {len(pool)} "
            f"({','.join(pool) or 'none'}; from {POOL_ENV}, CUDA_VISIBLE_DEVICES or /dev/nvidia*)"
        )
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = os.lstat(folder)
    if not os.path.isdir(folder) or os.path.islink(folder) or info.st_uid != os.getuid():
        raise SystemExit(f"gpu_slots: {folder} is not a folder of this user; set {LOCK_DIR_ENV}")
    waited = False
    while True:
        got = try_acquire(pool, n, folder)
        if got is not None:
            return got
        if not waited:
            print(f"gpu_slots: waiting for {n} free GPU(s) of {','.join(pool)}", file=log)
            waited = True
        time.sleep(poll_s)


def job_environment(n: int, environ=os.environ, log=sys.stderr) -> tuple[dict, list[int]]:
    """(the job's environment, descriptors to keep open) for a job that declares n GPUs."""
    env = dict(environ)
    if not slots_enabled(environ):
        return env, []
    if n == 0:
        env["CUDA_VISIBLE_DEVICES"] = ""
        return env, []
    pool = device_pool(environ)
    devices, fds = acquire(n, pool, lock_dir(environ), log=log)
    env["CUDA_VISIBLE_DEVICES"] = ",".join(devices)
    env.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")  # indices as nvidia-smi numbers them
    print(f"gpu_slots: CUDA_VISIBLE_DEVICES={env['CUDA_VISIBLE_DEVICES']}", file=log)
    return env, fds


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", type=int, required=True, help="GPUs the job declares")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="-- then the interpreter's args")
    args = parser.parse_args(argv)
    rest = args.args[1:] if args.args[:1] == ["--"] else args.args
    if args.gpus < 0 or not rest:
        parser.error("--gpus N (N >= 0) and, after --, the interpreter's arguments")
    env, fds = job_environment(args.gpus)
    for fd in fds:
        os.set_inheritable(fd, True)  # the exec'd job holds the slot until it exits
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *rest], env)  # noqa: S606 (argv, no shell)


if __name__ == "__main__":
    main()
