"""The sha256 of every artefact under results/, to confirm a result on another machine.

Two clean runs of one commit write byte-identical artefacts (issue 24; tests/test_reproducible.py
runs the comparison), except the files of ``EXCLUDED``: logs and Snakemake's benchmark timings,
which hold wall-clock times, and each run's record (run.json), whose wall-clock fields
(``WALL_CLOCK_KEYS``) are left out before it is hashed; the rest of it must match.

    python scripts/result_hashes.py > hashes.txt              # on the first machine
    python scripts/result_hashes.py --check hashes.txt        # on the second: exit 1 on a mismatch

Each line is ``<sha256>  <path>`` (``sha256sum``'s format, for every file hashed as bytes); a
run record's line ends in ``  (without wall-clock)``, as its hash is of its canonical JSON
without those fields.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from fnmatch import fnmatch
from pathlib import Path

from eisbach.provenance import canonical_json, file_sha256

# path pattern (relative to the workflow folder) -> why it differs between two clean runs
EXCLUDED = {
    "results/logs/*": "logs: wall-clock times and progress bars",
    "results/benchmarks/*": "Snakemake's benchmark files: wall-clock timings",
}
# The run records: hashed without their wall-clock fields
RUN_RECORDS = ("results/runs/*/run.json", "results/base/*/run.json")
WALL_CLOCK_KEYS = ("seconds", "seconds_per_step")
WITHOUT_CLOCK = "(without wall-clock)"


def without_wall_clock(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in WALL_CLOCK_KEYS}


def artefact_hashes(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under root/results but EXCLUDED; a run record's
    value is the sha256 of its canonical JSON without WALL_CLOCK_KEYS, marked WITHOUT_CLOCK."""
    root = Path(root)
    out = {}
    for path in sorted((root / "results").rglob("*")):
        if not path.is_file():
            continue
        rel = path.relative_to(root).as_posix()
        if any(fnmatch(rel, pattern) for pattern in EXCLUDED):
            continue
        if any(fnmatch(rel, pattern) for pattern in RUN_RECORDS):
            record = without_wall_clock(json.loads(path.read_text()))
            digest = hashlib.sha256(canonical_json(record).encode()).hexdigest()
            out[rel] = f"{digest}  {WITHOUT_CLOCK}"
        else:
            out[rel] = file_sha256(path)
    return out


def format_lines(hashes: dict[str, str]) -> str:
    lines = []
    for rel, value in hashes.items():
        digest, _, note = value.partition("  ")
        lines.append(f"{digest}  {rel}" + (f"  {note}" if note else ""))
    return "\n".join(lines) + "\n"


def parse_lines(text: str) -> dict[str, str]:
    out = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        digest, sep, rest = line.partition("  ")
        if not sep or len(digest) != 64:
            raise ValueError(f"line {number} is not '<sha256>  <path>': {line!r}")
        rel, _, note = rest.partition("  ")
        out[rel] = digest + (f"  {note}" if note else "")
    return out


def differences(mine: dict[str, str], theirs: dict[str, str]) -> list[str]:
    """What differs between two hash lists, one line per file."""
    out = [f"only here: {p}" for p in sorted(set(mine) - set(theirs))]
    out += [f"only there: {p}" for p in sorted(set(theirs) - set(mine))]
    out += [f"differs: {p}" for p in sorted(set(mine) & set(theirs)) if mine[p] != theirs[p]]
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", type=Path, default=Path("."), help="the workflow folder")
    parser.add_argument("--check", type=Path, help="a list this script printed elsewhere")
    args = parser.parse_args(argv)
    if not (args.root / "results").is_dir():
        parser.error(f"{args.root / 'results'} is not a folder: run the workflow first")
    hashes = artefact_hashes(args.root)
    if args.check is None:
        sys.stdout.write(format_lines(hashes))
        return 0
    found = differences(hashes, parse_lines(args.check.read_text()))
    for line in found:
        print(line)
    print(
        f"{len(hashes)} artefacts: "
        + (f"{len(found)} differences from {args.check}" if found else f"all match {args.check}")
    )
    return 1 if found else 0
