"""Local mode and quarantine: real bad files never crash a shard, and stay in the manifest."""

import csv

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from eisbach import audio_checks
from eisbach.data import build_manifest, file_sha256

VALIDATION = {"min_seconds": 2.0, "silence_rms_db": -60.0, "max_clipped_fraction": 0.01}
RATE = 22050


def sine(seconds, rate=RATE, amplitude=0.3, channels=1):
    t = np.arange(int(seconds * rate)) / rate
    x = amplitude * np.sin(2 * np.pi * 440 * t)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


def bad_files(folder):
    """Real bad files, named by what they are (as <name>.<ext>)."""
    folder.mkdir(parents=True, exist_ok=True)
    sf.write(folder / "good_wav.wav", sine(4), RATE, subtype="PCM_16")
    sf.write(folder / "good_flac.flac", sine(4, 44100, channels=2), 44100)
    sf.write(folder / "good_ogg.ogg", sine(4), RATE)
    sf.write(folder / "good_mp3.mp3", sine(4, 44100), 44100)
    sf.write(folder / "full_long.wav", sine(30), RATE, subtype="PCM_16")
    whole = folder / "truncated.wav"
    sf.write(whole, sine(4), RATE, subtype="PCM_16")
    whole.write_bytes(whole.read_bytes()[: whole.stat().st_size // 3])
    (folder / "zero_byte.wav").write_bytes(b"")
    (folder / "text_as_wav.wav").write_text("this is a text file, not audio\n" * 40)
    sf.write(folder / "silence.wav", np.zeros(4 * RATE), RATE, subtype="PCM_16")
    sf.write(
        folder / "clipped.wav", np.clip(3 * sine(4, amplitude=1.0), -1, 1), RATE, subtype="PCM_16"
    )
    sf.write(folder / "too_short.wav", sine(0.5), RATE, subtype="PCM_16")


EXPECTED = {
    "good_wav": ("ok", ""),
    "good_flac": ("ok", ""),
    "good_ogg": ("ok", ""),
    "good_mp3": ("ok", ""),
    "full_long": ("ok", "sliced"),
    "truncated": ("corrupt", "truncated WAV"),
    "zero_byte": ("corrupt", "zero-byte"),
    "text_as_wav": ("corrupt", "does not decode"),
    "silence": ("silent", "silence_rms_db"),
    "clipped": ("clipped", "max_clipped_fraction"),
    "too_short": ("too_short", "min_seconds"),
}


def ytid_of(name):
    return (name.replace("_", "") + "x" * 11)[:11]


def test_local_musiccaps_folder_with_bad_files_and_missing_clips(tmp_path):
    src = tmp_path / "clips"
    bad_files(src)
    for path in list(src.iterdir()):  # MusicCaps layout: <ytid>.<ext>
        path.rename(src / f"{ytid_of(path.stem)}{path.suffix}")
    names = [*EXPECTED, "absent_clip"]
    with open(tmp_path / "meta.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["ytid", "start_s", "end_s", "aspect_list", "caption", "is_audioset_eval"])
        for name in names:
            start, end = (10, 14) if name == "full_long" else (30, 34)
            writer.writerow([ytid_of(name), start, end, "['x']", name, name == "good_wav"])
        writer.writerow(["../../etc/pw", 0, 4, "['x']", "escape", False])
    cfg = {
        "source": "local",
        "audio_dir": str(src),
        "musiccaps_csv": str(tmp_path / "meta.csv"),
        "workers": 2,
        "validation": VALIDATION,
    }
    out = tmp_path / "results/data/manifest.parquet"
    build_manifest(cfg, 16000, out)
    rows = {r["caption"]: r for r in pq.read_table(out).to_pylist()}
    assert len(rows) == len(names) + 1
    for name, (status, reason) in EXPECTED.items():
        row = rows[name]
        assert (row["status"], row["source"]) == (status, "local"), (name, row)
        assert reason in row["reason"], (name, row["reason"])
        if status == "ok":
            audio, rate = sf.read(row["path"])
            assert rate == row["sample_rate"] == 16000 and audio.ndim == 1
            assert row["duration"] == pytest.approx(4.0, abs=0.05) == len(audio) / rate
            assert row["sha256"] == file_sha256(row["path"])
        else:
            assert row["path"] is None
    assert rows["absent_clip"]["status"] == "missing"
    assert "no file" in rows["absent_clip"]["reason"]
    assert rows["escape"]["status"] == "unavailable" and "ytid" in rows["escape"]["reason"]
    assert rows["good_wav"]["split"] == "eval" and rows["good_flac"]["split"] == "train"
    # the slice of a full-length file is the [start, end] part
    assert rows["full_long"]["start_s"] == 10


def test_generic_folder_with_captions_csv(tmp_path):
    src = tmp_path / "music"
    bad_files(src / "sub")
    with open(tmp_path / "captions.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", "caption", "split"])
        writer.writerow(["sub/good_wav.wav", "my song", "eval"])
        writer.writerow(["sub/good_flac.flac", "my other song", ""])
        writer.writerow(["sub/clipped.wav", "too loud", ""])
        writer.writerow(["sub/not_there.wav", "gone", ""])
        writer.writerow(["../captions.csv", "escape", ""])
    cfg = {
        "source": "local",
        "audio_dir": str(src),
        "captions_csv": str(tmp_path / "captions.csv"),
        "eval_fraction": 0.0,
        "validation": VALIDATION,
    }
    table = build_manifest(cfg, 16000, tmp_path / "results/data/manifest.parquet")
    rows = {r["caption"]: r for r in table.to_pylist()}
    assert rows["my song"]["status"] == "ok" and rows["my song"]["split"] == "eval"
    assert rows["my song"]["id"] == "local-sub_good_wav" and rows["my song"]["ytid"] is None
    assert rows["my other song"]["status"] == "ok" and rows["my other song"]["split"] == "train"
    assert rows["too loud"]["status"] == "clipped"
    assert rows["gone"]["status"] == "missing" and "sub/not_there.wav" in rows["gone"]["reason"]
    assert rows["escape"]["status"] == "unavailable"


def test_local_mode_needs_a_folder(tmp_path):
    with pytest.raises(ValueError, match="data.audio_dir"):
        build_manifest(
            {"source": "local", "captions_csv": "x.csv", "validation": VALIDATION},
            16000,
            tmp_path / "m.parquet",
        )


def test_decode_rejects_each_bad_file(tmp_path):
    bad_files(tmp_path)
    for name in ("truncated.wav", "zero_byte.wav", "text_as_wav.wav"):
        with pytest.raises(audio_checks.DecodeError):
            audio_checks.decode(tmp_path / name)
    audio, rate = audio_checks.decode(tmp_path / "good_flac.flac")
    assert audio.shape == (4 * 44100, 2) and rate == 44100


def test_clipping_is_judged_before_the_downmix():
    clipped = np.clip(3 * sine(4, 44100, amplitude=1.0), -1, 1)
    stereo = np.stack([clipped, 0.1 * clipped], axis=1).astype(np.float32)  # one channel clipped
    assert audio_checks.validate_clip(stereo, 44100, VALIDATION)[0] == "clipped"
    mono = audio_checks.to_mono(stereo, 44100, 44100)
    assert audio_checks.validate_clip(mono, 44100, VALIDATION)[0] == "ok"  # hidden after it
    assert audio_checks.validate_clip(sine(4), RATE, VALIDATION) == ("ok", "")
