"""A stand-in for a Kubernetes pod, as the submit command of Snakemake's cluster-sync executor:
it runs one job script in a fresh, empty folder that holds only the workflow's sources (what the
image holds) and removes the folder afterwards, so a job finds nothing that it does not retrieve
from storage and leaves nothing that it does not send there.

    fake_pod.py JOBSCRIPT
    FAKE_POD_SOURCES  the workflow folder whose sources each pod gets (never .snakemake, results)
    FAKE_POD_RECORD   a JSON-lines file: per job, its rule, exit status, seconds and the files
                      it left outside the sources

On failure it prints the job's log files, as `kubectl logs` would show the job's output."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SKIP = {".snakemake", "results"}


def main() -> int:
    jobscript = Path(sys.argv[1])
    sources = Path(os.environ["FAKE_POD_SOURCES"])
    rule = jobscript.name.split(".")[1]  # snakejob.<rule>.<jobid>.sh
    with tempfile.TemporaryDirectory(prefix=f"pod-{rule}-") as pod:
        pod = Path(pod)
        names = [p.name for p in sources.iterdir() if p.name not in SKIP]
        for name in names:
            src = sources / name
            if src.is_dir():
                shutil.copytree(src, pod / name)
            else:
                shutil.copy2(src, pod / name)
        env = dict(os.environ)
        # the image's interpreter first on PATH: the job script runs `python -m snakemake`
        env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env["PATH"]
        started = time.perf_counter()
        rc = subprocess.run(["bash", str(jobscript)], cwd=pod, env=env).returncode
        seconds = time.perf_counter() - started
        left = sorted(
            str(p.relative_to(pod))
            for p in pod.rglob("*")
            if p.is_file() and p.relative_to(pod).parts[0] not in names
        )
        if rc != 0:
            for log in (p for p in left if "/results/logs/" in f"/{p}"):
                print(f"--- {log}\n{(pod / log).read_text(errors='replace')}", file=sys.stderr)
    record = os.environ.get("FAKE_POD_RECORD")
    if record:
        with open(record, "a") as fh:
            fh.write(json.dumps({"rule": rule, "rc": rc, "seconds": seconds, "files": left}) + "\n")
    return rc


if __name__ == "__main__":
    sys.exit(main())
