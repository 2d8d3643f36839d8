"""Metadata of the data stage: the real MusicCaps CSV, safe parsing, and shard counting."""

import csv
from pathlib import Path

import pytest

from eisbach import musiccaps
from eisbach.musiccaps import MetadataError

REAL_CSV = Path(__file__).resolve().parents[2] / "shared" / "data" / "musiccaps-public.csv"
needs_real_csv = pytest.mark.skipif(
    not REAL_CSV.is_file(),
    reason=f"the real MusicCaps metadata ({REAL_CSV}) is absent: ../shared is not mounted",
)
HEADER = ["ytid", "start_s", "end_s", "aspect_list", "caption", "is_audioset_eval"]


def write_csv(path, rows, header=HEADER):
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@needs_real_csv
def test_real_musiccaps_csv_parses():
    rows = musiccaps.read_musiccaps_csv(REAL_CSV)
    assert len(rows) == 5521
    assert [r for r in rows if r["error"]] == []
    assert sum(r["split"] == "eval" for r in rows) == 2858
    assert len({r["id"] for r in rows}) == 5521
    assert all(r["end_s"] - r["start_s"] == 10 for r in rows)
    first = rows[0]
    assert first["ytid"] == "-0Gj8-vB1q4" and first["id"] == "mc--0Gj8-vB1q4"
    assert first["aspect_list"][:2] == ["low quality", "sustained strings melody"]
    assert first["split"] == "eval" and first["caption"].startswith("The low quality recording")


@needs_real_csv
def test_real_csv_shard_count_at_dag_build():
    data = {"source": "musiccaps", "musiccaps_csv": str(REAL_CSV), "shard_size": 256}
    assert musiccaps.count_csv_rows(REAL_CSV) == 5521
    assert musiccaps.n_shards(data) == 22
    assert musiccaps.n_shards(data | {"limit": 24}) == 1
    assert musiccaps.n_shards(data | {"limit": 24, "shard_size": 10}) == 3
    assert musiccaps.read_musiccaps_csv(REAL_CSV, limit=24)[-1]["row"] == 23


def test_hub_row_count_is_used_without_a_csv():
    assert musiccaps.n_shards({"source": "musiccaps", "musiccaps_csv": ""}) == 22
    assert musiccaps.n_shards({"source": "musiccaps", "limit": 100, "shard_size": 50}) == 2
    assert musiccaps.n_shards({"source": "demo", "demo": {"n_clips": 24}}) == 1


def test_shard_bounds_cover_every_row_once():
    for n_rows, shards, size in [(10, 3, 4), (10, 2, 4), (3, 3, 2), (0, 1, 5), (5521, 22, 256)]:
        seen = []
        for shard in range(shards):
            lo, hi = musiccaps.shard_bounds(n_rows, shard, shards, size)
            seen += range(lo, hi)
        assert seen == list(range(n_rows)), (n_rows, shards, size)


def test_malformed_rows_are_recorded_with_the_row_and_never_evaluated(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write_csv(
        tmp_path / "meta.csv",
        [
            ["AAAAAAAAAAA", "30", "40", "['piano', 'calm']", "fine", "True"],
            ["$(touch x)", "0", "10", "['a']", "shell", "False"],
            ["BBBBBBBBBBB", "0", "10", "__import__('os').system('touch y')", "code", "False"],
            ["CCCCCCCCCCC", "10", "10", "['a']", "empty span", "False"],
            ["DDDDDDDDDDD", "-1", "10", "['a']", "negative", "False"],
            ["EEEEEEEEEEE", "ten", "20", "['a']", "not a number", "False"],
            ["FFFFFFFFFFF", "0", "nan", "['a']", "nan", "False"],
            ["GGGGGGGGGGG", "0", "10", "[1, 2]", "not strings", "False"],
            ["HHHHHHHHHHH", "0", "10", "['a']", "bad flag", "maybe"],
            ["short", "0", "10", "['a']", "short ytid", "False"],
        ],
    )
    rows = musiccaps.read_musiccaps_csv(path)
    assert len(rows) == 10
    assert rows[0]["error"] is None and rows[0]["split"] == "eval"
    assert rows[0]["aspect_list"] == ["piano", "calm"]
    errors = [r["error"] for r in rows[1:]]
    assert all(errors), errors
    assert "row 2" in errors[0] and "$(touch x)" in errors[0] and "A-Za-z0-9_-" in errors[0]
    assert rows[1]["id"] == "mc-row00002"
    assert "row 3" in errors[1] and "aspect_list" in errors[1]
    assert "start_s" in errors[2] and "row 4" in errors[2]
    assert "start_s" in errors[3]
    assert "'ten'" in errors[4]
    assert "not finite" in errors[5]
    assert "list of strings" in errors[6]
    assert "is_audioset_eval" in errors[7]
    assert "'short'" in errors[8]
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_a_missing_column_is_a_hard_error_naming_file_and_column(tmp_path):
    header = [h for h in HEADER if h != "is_audioset_eval"]
    path = write_csv(tmp_path / "nocol.csv", [["AAAAAAAAAAA", "0", "10", "[]", "c"]], header)
    with pytest.raises(MetadataError, match=r"nocol\.csv: column 'is_audioset_eval' is missing"):
        musiccaps.read_musiccaps_csv(path)
    with pytest.raises(MetadataError, match="no such metadata file"):
        musiccaps.read_musiccaps_csv(tmp_path / "absent.csv")


def test_repeated_ytids_get_unique_ids(tmp_path):
    path = write_csv(
        tmp_path / "dup.csv",
        [
            ["AAAAAAAAAAA", "0", "10", "[]", "first", "False"],
            ["AAAAAAAAAAA", "20", "30", "[]", "other part", "False"],
            ["AAAAAAAAAAA", "0", "10", "[]", "exact repeat", "False"],
        ],
    )
    rows = musiccaps.read_musiccaps_csv(path)
    assert [r["id"] for r in rows[:2]] == ["mc-AAAAAAAAAAA", "mc-AAAAAAAAAAA-20000"]
    assert "repeats the clip of row 1" in rows[2]["error"]
    assert len({r["id"] for r in rows}) == 3


def test_datasets_failure_names_the_csv_key(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError(
            "Couldn't reach 'google/MusicCaps' on the Hub (LocalEntryNotFoundError)"
        )

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(MetadataError, match="data.musiccaps_csv") as info:
        musiccaps.load_musiccaps({"source": "musiccaps", "musiccaps_csv": ""})
    assert "google/MusicCaps" in str(info.value)


def test_datasets_rows_parse_like_the_csv(monkeypatch):
    import datasets

    calls = []

    def fake_load(name, split):
        calls.append((name, split))
        return datasets.Dataset.from_dict(
            {
                "ytid": ["AAAAAAAAAAA", "BBBBBBBBBBB"],
                "start_s": [30, 0],
                "end_s": [40, 10],
                "aspect_list": ["['rock', 'loud']", "['calm']"],
                "caption": ["a rock song", "calm"],
                "is_audioset_eval": [True, False],
            }
        )

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    rows = musiccaps.load_musiccaps({"source": "musiccaps", "musiccaps_csv": "", "limit": 1})
    assert calls == [("google/MusicCaps", "train")]
    assert (
        len(rows) == 1 and rows[0]["split"] == "eval" and rows[0]["aspect_list"] == ["rock", "loud"]
    )


def test_captions_csv_generic_mode(tmp_path):
    path = write_csv(
        tmp_path / "captions.csv",
        [
            ["songs/a.wav", "a song", "eval", "['pop']"],
            ["songs/b.flac", "b song", "", ""],
            ["../outside.wav", "escape", "", ""],
            ["/etc/passwd", "absolute", "", ""],
            ["c.wav", "c", "test", ""],
        ],
        header=["file", "caption", "split", "aspect_list"],
    )
    rows = musiccaps.read_captions_csv(path, eval_fraction=0.0)
    assert rows[0]["split"] == "eval" and rows[0]["aspect_list"] == ["pop"]
    assert rows[0]["id"] == "local-songs_a" and rows[0]["error"] is None
    assert rows[1]["split"] == "train" and rows[1]["error"] is None
    assert (
        "inside data.audio_dir" in rows[2]["error"] and "inside data.audio_dir" in rows[3]["error"]
    )
    assert "split 'test'" in rows[4]["error"]
    all_eval = musiccaps.read_captions_csv(path, eval_fraction=1.0)
    assert all_eval[1]["split"] == "eval"
    with pytest.raises(MetadataError, match="column 'caption'"):
        musiccaps.read_captions_csv(write_csv(tmp_path / "bad.csv", [["a.wav"]], ["file"]), 0.1)


@pytest.mark.parametrize("reader", ["captions", "musiccaps", "count"])
def test_a_non_utf8_csv_names_file_row_and_line(tmp_path, reader):
    path = tmp_path / "meta.csv"
    if reader == "captions":
        text = 'file,caption\na.wav,"an organ drone"\nb.wav,"a caf\xe9 piano,\nwith a quoted newline"\n'
    else:
        text = (
            "ytid,start_s,end_s,aspect_list,caption,is_audioset_eval\n"
            'abcdefghijk,0,10,"[\'a\']","one",False\n'
            'bcdefghijkl,0,10,"[\'b\']","\xe9t\xe9",False\n'
        )
    path.write_bytes(text.encode("latin-1"))  # é as the single byte 0xe9
    read = {
        "captions": lambda: musiccaps.read_captions_csv(path, 0.1),
        "musiccaps": lambda: musiccaps.read_musiccaps_csv(path),
        "count": lambda: musiccaps.count_csv_rows(path),
    }[reader]
    with pytest.raises(
        MetadataError, match=r"meta\.csv: data row 2 \(line 3, byte \d+\) is not UTF-8"
    ):
        read()
