"""The inputs of config/paper-smoke.yaml: what the paper profile downloads, made locally.

The paper profile needs Stable Audio 3 Medium's weights (gated on the hub) and the MusicCaps
audio (YouTube). The smoke profile runs the same DAG on CPU with local stand-ins at the same
boundaries:

- ``model/``: a Stable Audio 3 model of Medium's shape and code path, narrow, random weights
  (eisbach.backends.sa3_medium), as a local model folder with its tiny T5Gemma; the
  ``backend.pretrained`` of the profile.
- ``musiccaps-public.csv``: a copy of the real MusicCaps CSV (``data.musiccaps_csv``).
- ``audio/<ytid>.wav``: stereo 10-s clips for the first ``limit`` rows of the real MusicCaps
  CSV, named by their real ytids, as the local MusicCaps mode reads them
  (``data.source: local``). Their sound is cut from the CC BY-SA recordings in
  ../shared/data/music (not the YouTube audio): each clip is a window of one recording, its
  right channel that window a quarter-second later, so the channels differ.

The profile's first job (rule paper_smoke_inputs) runs ``scripts/paper_smoke.py --csv
musiccaps-public.csv --music DIR --out DIR``, from the ``paper_smoke`` section.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

from eisbach.atomic import write_wav

CLIP_SECONDS = 10.0
RIGHT_DELAY_S = 0.25
PROMPTS = ["Little Piglet Prince", "Raccoon Mathematician", "Professor Pallas Cat", "Seal Lawyer"]


def first_rows(csv_path: Path, limit: int) -> list[dict]:
    with open(csv_path, newline="", encoding="utf-8") as fh:
        rows = []
        for row in csv.DictReader(fh):
            rows.append(row)
            if len(rows) == limit:
                break
    return rows


def cut_clips(rows: list[dict], music_dir: Path, out_dir: Path) -> list[Path]:
    """<ytid>.wav for every row: stereo windows cut from the recordings of music_dir in turn."""
    import soundfile as sf

    sources = sorted(Path(music_dir).glob("*.ogg"))
    if not sources:
        raise FileNotFoundError(f"{music_dir}: no .ogg recordings to cut clips from")
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, row in enumerate(rows):
        audio, rate = sf.read(sources[i % len(sources)], dtype="float32", always_2d=True)
        mono = audio.mean(axis=1)
        n, delay = int(CLIP_SECONDS * rate), int(RIGHT_DELAY_S * rate)
        start = (i // len(sources)) * n % max(1, len(mono) - n - delay)
        if start + n + delay > len(mono):
            raise ValueError(
                f"{sources[i % len(sources)]}: shorter than {CLIP_SECONDS + RIGHT_DELAY_S} s"
            )
        stereo = np.stack(
            [mono[start : start + n], mono[start + delay : start + delay + n]], axis=1
        )
        path = out_dir / f"{row['ytid']}.wav"
        write_wav(path, stereo, rate, {"source": str(sources[i % len(sources)].name)})
        paths.append(path)
    return paths


def prepare(csv_path: Path, music_dir: Path, out: Path, limit: int) -> dict:
    import shutil

    from eisbach.backends.sa3_medium import save_test_model

    out.mkdir(parents=True, exist_ok=True)
    if not Path(csv_path).is_file():
        raise FileNotFoundError(f"paper_smoke.musiccaps_csv: {csv_path} does not exist")
    shutil.copyfile(csv_path, out / ".musiccaps-public.csv.tmp")
    (out / ".musiccaps-public.csv.tmp").replace(out / "musiccaps-public.csv")
    for path, key in ((csv_path, "musiccaps_csv"), (music_dir, "music_dir")):
        if not Path(path).exists():
            raise FileNotFoundError(f"paper_smoke.{key}: {path} does not exist")
    rows = first_rows(csv_path, limit)
    clips = cut_clips(rows, music_dir, out / "audio")
    save_test_model(out / "model", PROMPTS + [r["caption"] for r in rows])
    return {"model": out / "model", "audio_dir": out / "audio", "clips": clips}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", type=Path, default=Path("../shared/data/musiccaps-public.csv"))
    parser.add_argument("--music", type=Path, default=Path("../shared/data/music"))
    parser.add_argument("--out", type=Path, default=Path("results/paper-smoke-inputs"))
    parser.add_argument("--limit", type=int, default=9, help="data.limit of the profile")
    args = parser.parse_args(argv)
    made = prepare(args.csv, args.music, args.out, args.limit)
    print(
        f"paper-smoke: {len(made['clips'])} clips -> {made['audio_dir']}, model -> {made['model']}"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
