"""The evaluate stage's score cache is never a source of truth (issue 24): an entry copied over
another clip's, damaged anywhere, or computed by other analysis code or another librosa/numpy is
discarded with a warning that names it, and the clip is analysed afresh."""

import json
import shutil
import warnings
from importlib import metadata

import numpy as np
import pytest
from conftest import REPO, run_snakemake

from eisbach import probe_signals as P
from eisbach import provenance, score_cache
from eisbach.atomic import write_wav
from eisbach.evaluate import analyse_clip
from eisbach.metrics import METRICS, Analysis
from eisbach.score_cache import CacheEntryDiscarded, ScoreCache


def same_analysis(a, b) -> bool:
    """Bitwise the same analysis: metrics (NaN equal to NaN), SSM and embedding."""
    return (
        json.dumps(a.metrics) == json.dumps(b.metrics)
        and list(a.metrics) == list(b.metrics)
        and all(
            (x is None and y is None) or (x is not None and y is not None and np.array_equal(x, y))
            for x, y in ((a.ssm, b.ssm), (a.embedding, b.embedding))
        )
    )


def stored_analysis(seed=0):
    """An analysis at the real shapes (64 x 64 SSM, 128-dim embedding) with arbitrary values:
    what the cache stores, without the seconds of librosa that computing one costs."""
    rng = np.random.default_rng(seed)
    values = {name: float(rng.standard_normal()) for name in METRICS}
    return Analysis(values, rng.random((64, 64)), rng.random(128))


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Two clips of different music and their analyses, each cached under its sha256."""
    root = tmp_path_factory.mktemp("clips")
    out = []
    for name, audio in (("sections", P.sections(1.0, 3.0)), ("drone", P.drone(3.0))):
        path = root / f"{name}.wav"
        write_wav(path, audio, 16000)
        stats = {"scored": 0, "cached": 0}
        sha, analysis = analyse_clip(path, ScoreCache(root / "fresh"), stats)
        out.append((path, sha, analysis))
    return out


def test_an_entry_reads_back_bitwise(clips, tmp_path):
    cache = ScoreCache(tmp_path)
    for _, sha, analysis in clips:
        cache.put(sha, analysis)
        assert same_analysis(cache.get(sha), analysis)
    assert cache.get("0" * 64) is None  # never scored: a plain miss


def test_an_entry_copied_over_another_clips_is_discarded_and_rescored(clips, tmp_path):
    (path_a, sha_a, analysis_a), (path_b, sha_b, analysis_b) = clips
    cache = ScoreCache(tmp_path)
    cache.put(sha_a, analysis_a)
    cache.put(sha_b, analysis_b)
    shutil.copyfile(cache.path(sha_a), cache.path(sha_b))

    stats = {"scored": 0, "cached": 0}
    with pytest.warns(CacheEntryDiscarded, match=rf"{sha_b}\.npz.*clip_sha256.*{sha_a}"):
        sha, found = analyse_clip(path_b, cache, stats)
    assert sha == sha_b and stats == {"scored": 1, "cached": 0}
    assert same_analysis(found, analysis_b) and not same_analysis(found, analysis_a)
    # the rescored clip replaced the entry: the next read is a clean hit
    assert same_analysis(cache.get(sha_b), analysis_b)


def test_a_flipped_byte_anywhere_is_discarded_or_harmless(tmp_path):
    """Every 37th byte of an entry flipped in turn: each read gives the clip's analysis
    exactly, or nothing with a warning naming the entry; never another value."""
    sha, analysis = "ab" * 32, stored_analysis()
    cache = ScoreCache(tmp_path)
    cache.put(sha, analysis)
    entry = cache.path(sha)
    clean = entry.read_bytes()
    discarded = 0
    positions = range(0, len(clean), 37)
    for at in positions:
        damaged = bytearray(clean)
        damaged[at] ^= 0xFF
        entry.write_bytes(bytes(damaged))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")  # the same damage twice warns twice
            found = cache.get(sha)
        if found is None:
            discarded += 1
            [warning] = [w for w in caught if w.category is CacheEntryDiscarded]
            assert str(entry) in str(warning.message)
        else:
            assert same_analysis(found, analysis), f"byte {at} flipped gave another analysis"
    # the arrays and the key are most of the entry: most flips must have been caught
    assert discarded > 0.8 * len(positions), (discarded, len(positions))


def test_a_damaged_entry_costs_a_rescore_not_a_failure(clips, tmp_path):
    path, sha, analysis = clips[0]
    cache = ScoreCache(tmp_path)
    cache.put(sha, analysis)
    entry = cache.path(sha)
    clean = entry.read_bytes()
    damaged = bytearray(clean)
    damaged[len(clean) // 2] ^= 0x01
    entry.write_bytes(bytes(damaged))
    stats = {"scored": 0, "cached": 0}
    with pytest.warns(CacheEntryDiscarded, match=str(entry)):
        _, found = analyse_clip(path, cache, stats)
    assert stats == {"scored": 1, "cached": 0} and same_analysis(found, analysis)
    assert entry.read_bytes() == clean


@pytest.mark.parametrize("content", [b"", b"not a zip", b"PK\x03\x04" + b"\0" * 40])
def test_an_unreadable_entry_is_discarded(tmp_path, content):
    sha = "cd" * 32
    cache = ScoreCache(tmp_path)
    cache.dir.mkdir(parents=True)
    cache.path(sha).write_bytes(content)
    with pytest.warns(CacheEntryDiscarded, match=str(cache.path(sha))):
        assert cache.get(sha) is None


def test_an_entry_of_an_older_format_is_discarded(tmp_path):
    """The entries of the cache before issue 24 carried no key."""
    sha, analysis = "ef" * 32, stored_analysis()
    cache = ScoreCache(tmp_path)
    cache.dir.mkdir(parents=True)
    np.savez(
        cache.path(sha),
        metrics=np.array(json.dumps(analysis.metrics)),
        ssm=analysis.ssm,
        embedding=analysis.embedding,
    )
    with pytest.warns(CacheEntryDiscarded, match="key"):
        assert cache.get(sha) is None


def test_an_entry_of_another_analysis_version_is_discarded(tmp_path):
    """An entry moved into the folder of another version (its key says which it was for)."""
    sha, analysis = "01" * 32, stored_analysis()
    cache = ScoreCache(tmp_path)
    cache.put(sha, analysis)
    other = tmp_path / "0123456789abcdef"
    other.mkdir()
    shutil.copyfile(cache.path(sha), other / f"{sha}.npz")
    cache.dir, cache.version = other, other.name
    with pytest.warns(CacheEntryDiscarded, match=rf"metrics_version.*{other.name}"):
        assert cache.get(sha) is None


def test_the_version_covers_the_analysis_code_and_the_librosa_and_numpy_it_ran_on(monkeypatch):
    score_cache.metrics_version.cache_clear()
    base = score_cache.metrics_version()
    assert {"numpy", "scipy", "librosa", "soundfile"} <= set(score_cache.analysis_environment())
    real = metadata.version
    for package in ("librosa", "numpy"):
        monkeypatch.setattr(
            provenance.metadata,
            "version",
            lambda name, package=package: "0.0.0" if name == package else real(name),
        )
        score_cache.metrics_version.cache_clear()
        assert score_cache.metrics_version() != base, package
        monkeypatch.setattr(provenance.metadata, "version", real)
    score_cache.metrics_version.cache_clear()
    assert score_cache.metrics_version() == base
    assert REPO / "eisbach/metrics.py" in [p.resolve() for p in score_cache.ANALYSIS_SOURCES]


def test_the_version_covers_every_eisbach_module_the_analysis_imports():
    import ast

    tree = ast.parse((REPO / "eisbach/metrics.py").read_text())
    imported = {
        node.module.removeprefix("eisbach.")
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("eisbach.")
    }
    covered = set(score_cache.ANALYSIS_MODULES) | set(score_cache.NOT_ANALYSIS_MODULES)
    assert imported - covered == set(), "add them to score_cache.ANALYSIS_MODULES"
    assert all(path.exists() for path in score_cache.ANALYSIS_SOURCES)


def test_metrics_that_are_not_the_metric_names_are_discarded(tmp_path):
    sha, analysis = "23" * 32, stored_analysis()
    analysis.metrics.pop(next(iter(METRICS)))
    cache = ScoreCache(tmp_path)
    cache.put(sha, analysis)
    with pytest.warns(CacheEntryDiscarded, match="METRICS"):
        assert cache.get(sha) is None


# --- through the workflow -----------------------------------------------------------------------
@pytest.mark.slow
def test_evaluate_over_a_copied_and_a_flipped_entry_equals_the_clean_run(smoke_run, tmp_path):
    """The session's smoke run, copied; in its cache, one training clip's entry copied over an
    eval clip's (which moved the eval clips' dynamic range from 17.16 to 36.08 before issue 24)
    and one byte flipped in a sample's entry; then a forced rerun of evaluate. Its metrics and
    summary are the clean run's, with the two clips rescored and named in the log."""
    import pyarrow.parquet as pq

    work = tmp_path / "work"
    shutil.copytree(smoke_run, work, symlinks=True)
    metrics_dir = work / "results/metrics"
    cache = ScoreCache(metrics_dir / "cache/analyses")
    manifest = pq.read_table(work / "results/data/manifest.parquet").to_pylist()
    train = next(c["sha256"] for c in manifest if c["split"] == "train")
    evaluated = next(c["sha256"] for c in manifest if c["split"] == "eval")
    sample = pq.read_table(metrics_dir / "per_sample.parquet").column("sha256")[0].as_py()
    shutil.copyfile(cache.path(train), cache.path(evaluated))
    entry = bytearray(cache.path(sample).read_bytes())
    entry[len(entry) // 2] ^= 0xFF
    cache.path(sample).write_bytes(bytes(entry))

    result = run_snakemake(
        work,
        "--cores", "2", "--configfile", "config/test.yaml",
        "--forcerun", "evaluate", "--allowed-rules", "evaluate",
        "results/metrics/summary.json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-5000:]
    log = (work / "results/logs/evaluate/evaluate.log").read_text()
    for sha in (evaluated, sample):
        named = cache.path(sha).relative_to(work)  # as the rule names it
        assert f"discarded {named}" in log, (sha, log[-3000:])

    clean = json.loads((smoke_run / "results/metrics/summary.json").read_text())
    rerun = json.loads((metrics_dir / "summary.json").read_text())
    rescored, scored = rerun.pop("scoring"), clean.pop("scoring")
    assert rescored["scored"] == 2
    assert rescored["scored"] + rescored["cached"] == scored["scored"] + scored["cached"]
    assert rerun == clean
    for name in ("per_sample.parquet", "per_prompt.parquet", "reference.parquet"):
        assert (metrics_dir / name).read_bytes() == (
            smoke_run / "results/metrics" / name
        ).read_bytes(), name
