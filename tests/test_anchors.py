"""The anchor metrics end to end on stand-in weights (tests/anchor_standins.py): each library's
network at its real architecture, random weights loaded from the paths the config names; the
distances checked against the defining libraries' own functions on the same outputs."""

from pathlib import Path

import numpy as np
import pytest
import scipy.special
import soundfile as sf
import torch
import yaml
from anchor_standins import hf_roberta_cache, save_clap, save_openl3, save_passt
from conftest import REPO, run_snakemake

from eisbach import anchors
from eisbach.anchors import clap, openl3, passt
from eisbach.anchors.weights import ClipCache
from eisbach.frechet import frechet_from_stats, gaussian_stats
from eisbach.provenance import file_sha256


def cached(setup, anchor, module, name, path):
    """The output anchor_table computed and cached for one clip (the same numbers it used)."""
    cache = ClipCache(
        setup["root"] / "cache", anchor, Path(setup["cfg"][name]["weights"]), module.SETTINGS
    )
    return np.load(cache.folder / f"{file_sha256(path)}.npy")


def tone(path, rate, seconds, channels, freq, seed):
    rng = np.random.default_rng(seed)
    t = np.arange(int(rate * seconds)) / rate
    wave = 0.3 * np.sin(2 * np.pi * freq * t) * (1 + 0.5 * np.sin(2 * np.pi * 0.7 * t))
    wave = wave[:, None] + 0.02 * rng.standard_normal((t.size, channels))
    sf.write(path, wave.astype(np.float32), rate)
    return str(path)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("anchors")
    hf = hf_roberta_cache(root / "hf")
    cfg = {
        "device": "cpu",
        "fd_openl3": {"weights": str(save_openl3(root / openl3.WEIGHTS_FILE))},
        "kl_passt": {"weights": str(save_passt(root / passt.WEIGHTS_FILE))},
        "clap_score": {"weights": str(save_clap(root / clap.CHECKPOINT, hf)), "hf_cache": str(hf)},
        "fd_inf": {"repeats": 2, "groups": 4, "equal_n_repeats": 3},
    }
    refs = [
        {
            "id": f"t{i}",
            "split": "train",
            "path": tone(root / f"t{i}.wav", 44100, 2, 2, 220 * (i + 1), i),
        }
        for i in range(3)
    ] + [
        {
            "id": f"e{i}",
            "split": "eval",
            "path": tone(root / f"e{i}.wav", 16000, 2, 1, 330 + 50 * i, 9 + i),
        }
        for i in range(2)
    ]
    rows = []
    for i in range(4):  # group a: two of them prompted with eval captions (KL pairs)
        pid = f"cap-e{i}" if i < 2 else "piano"
        prompt = f"caption of e{i}" if i < 2 else "a calm piano"
        path = tone(root / f"a{i}.wav", 44100, 2, 2, 300 + 40 * i, 20 + i)
        rows.append({"group": "a", "prompt_id": pid, "prompt": prompt, "path": path})
    for i in range(2):
        path = tone(root / f"b{i}.wav", 16000, 1.5, 1, 500 + 60 * i, 30 + i)
        rows.append({"group": "b", "prompt_id": "piano", "prompt": "a calm piano", "path": path})
    result = anchors.anchor_table(rows, refs, cfg, root / "cache", lambda r: r["group"])
    return {"root": root, "cfg": cfg, "rows": rows, "refs": refs, "result": result, "hf": hf}


def test_every_anchor_ran_on_its_real_architecture(setup):
    res = setup["result"]
    for name in anchors.ANCHORS:
        assert res[name]["skipped"] is False, res[name]
        assert res[name]["weights"] == setup["cfg"][name]["weights"]
    assert res["fd_openl3"]["settings"] == {
        "content_type": "music",
        "input_repr": "mel256",
        "embedding_size": 512,
        "hop_s": 0.5,
        "sample_rate": 44100,
        "channels": 2,
    }
    state = torch.load(setup["cfg"]["kl_passt"]["weights"], weights_only=True)
    assert "blocks.11.attn.qkv.weight" in state and "blocks.12.attn.qkv.weight" not in state
    assert state["head.1.weight"].shape == (527, 768)  # PaSST-S: 12 blocks, 527 AudioSet classes


def test_fd_openl3_matches_fadtk_on_the_same_frames(setup):
    fadtk = pytest.importorskip("fadtk", reason="fadtk is in envs/requirements.lock (no-deps part)")

    def frames(r):
        return cached(setup, "openl3", openl3, "fd_openl3", r["path"])

    group = [frames(r) for r in setup["rows"] if r["group"] == "a"]
    ref = [frames(r) for r in setup["refs"] if r["split"] == "train"]
    assert group[0].shape[1] == 1024 and len(group[0]) == 4  # torchopenl3 frames 2 s at hop 0.5 so
    stats_a, stats_r = gaussian_stats(np.concatenate(group)), gaussian_stats(np.concatenate(ref))
    row = next(
        r
        for r in setup["result"]["fd_openl3"]["rows"]
        if (r["group"], r["reference"]) == ("a", "train")
    )
    theirs = float(fadtk.calc_frechet_distance(*stats_a, *stats_r))
    assert row["fd"] == pytest.approx(frechet_from_stats(*stats_a, *stats_r), rel=1e-6)
    # fadtk takes its own matrix square root: on an FD of ~0.006 the two agree to ~1e-5
    assert row["fd"] == pytest.approx(theirs, rel=1e-4)
    assert (row["n_group"], row["n_reference"], row["frames_group"]) == (4, 3, 16)
    assert row["ci_low"] <= row["fd_inf"] <= row["ci_high"]


def test_fd_rows_carry_n_and_groups_meet_at_equal_n(setup):
    fd = setup["result"]["fd_openl3"]
    small = next(r for r in fd["rows"] if (r["group"], r["reference"]) == ("b", "eval"))
    assert small["n_group"] == 2 and "fd_inf" not in small and "at least 4 clips" in small["note"]
    equal = fd["equal_n"]["train"]
    assert equal["n"] == 2 and set(equal["groups"]) == {"a", "b"}
    assert equal["groups"]["a"]["subsets"] == 3 and equal["groups"]["b"]["subsets"] == 1


def test_kl_passt_matches_scipy_on_the_same_probabilities(setup):
    refs = {r["id"]: r for r in setup["refs"]}
    values = []
    for row in setup["rows"][:2]:
        p = cached(setup, "passt", passt, "kl_passt", row["path"])
        q = cached(setup, "passt", passt, "kl_passt", refs[row["prompt_id"][4:]]["path"])
        assert p.shape == (527,) and p.sum() == pytest.approx(1, abs=1e-5)
        values.append(float(np.sum(scipy.special.rel_entr(p, q + 1e-6))))
    kl = setup["result"]["kl_passt"]
    (row,) = kl["rows"]
    assert row["group"] == "a" and row["n"] == 2
    assert row["mean"] == pytest.approx(np.mean(values), rel=1e-4, abs=1e-6)
    assert kl["samples_without_reference_clip"] == 4


def test_clap_score_matches_numpy_cosine(setup):
    model = clap.load(setup["cfg"]["clap_score"]["weights"], "cpu", setup["hf"])
    by_group = {}
    for row in setup["rows"]:
        a = cached(setup, "clap", clap, "clap_score", row["path"])
        (t,) = clap.text_embeddings(model, [row["prompt"]])
        assert a.shape == (512,)
        by_group.setdefault(row["group"], []).append(a @ t / np.linalg.norm(a) / np.linalg.norm(t))
    rows = {r["group"]: r for r in setup["result"]["clap_score"]["rows"]}
    for group, values in by_group.items():
        assert rows[group]["n"] == len(values)
        assert rows[group]["mean"] == pytest.approx(np.mean(values), rel=1e-5, abs=1e-6)


def test_a_rerun_reads_the_cache_and_gives_the_same_numbers(setup, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("a cached clip was computed again")

    monkeypatch.setattr(openl3, "embed", never)
    monkeypatch.setattr(clap, "audio_embedding", never)
    cfg = {k: v for k, v in setup["cfg"].items() if k != "kl_passt"}  # the slowest to load
    again = anchors.anchor_table(
        setup["rows"], setup["refs"], cfg, setup["root"] / "cache", lambda r: r["group"]
    )
    for name in ("fd_openl3", "clap_score"):
        assert again[name]["rows"] == setup["result"][name]["rows"]


def test_absent_weights_skip_the_metric_and_say_why(tmp_path):
    cfg = {
        "fd_openl3": {"weights": str(tmp_path / "nowhere.pth.tar")},
        "clap_score": {
            "hf": {
                "repo": "lukewys/laion_clap",
                "file": clap.CHECKPOINT,
                "cache_dir": str(tmp_path),
            }
        },
    }
    res = anchors.anchor_table([], [], cfg, tmp_path / "cache", lambda r: "x")
    assert (
        res["fd_openl3"]["skipped"]
        and "evaluate.anchors.fd_openl3.weights" in res["fd_openl3"]["reason"]
    )
    assert "weights absent" in res["fd_openl3"]["reason"]
    assert res["clap_score"]["skipped"] and "not in" in res["clap_score"]["reason"]
    assert res["kl_passt"] == anchors.skipped("evaluate.anchors.kl_passt is not set")
    assert torch.is_grad_enabled()


@pytest.mark.parametrize(
    ("anchors_cfg", "captions", "named"),
    [
        ({"kl_passt": {}}, 1, "evaluate.anchors.kl_passt: no way to find its weights"),
        ({"clap_score": {"hf_cache": "/x"}}, 1, "evaluate.anchors.clap_score: no way"),
        ({"kl_passt": {"weights": "w.pt"}}, 0, "sample.captions_from_eval is 0"),
    ],
)
def test_an_anchor_that_cannot_be_computed_is_refused(anchors_cfg, captions, named):
    config = {"evaluate": {"anchors": anchors_cfg}, "sample": {"captions_from_eval": captions}}
    with pytest.raises(ValueError, match=named):
        anchors.check_config(config)


def test_snakemake_refuses_it_before_any_job(workflow_copy):
    config = yaml.safe_load((REPO / "config/test.yaml").read_text())
    config["evaluate"]["anchors"] = {"fd_openl3": {}}
    bad = workflow_copy / "bad.yaml"
    bad.write_text(yaml.safe_dump(config))
    result = run_snakemake(workflow_copy, "-n", "--cores", "1", "--configfile", str(bad))
    assert result.returncode != 0
    assert "evaluate.anchors.fd_openl3" in result.stdout + result.stderr


def test_report_table_is_empty_with_a_note_until_computed():
    from eisbach.anchors.view import anchors_view

    none_yet = {
        name: anchors.skipped("weights absent: w.pt does not exist") for name in anchors.ANCHORS
    }
    view = anchors_view({"embedding_distances": {"anchors": none_yet | {"paper_reported": {}}}})
    assert [r[0] for r in view["rows"]] == ["FD-openl3", "KL-PaSST", "CLAP score"]
    assert all(r[4] == "not computed: weights absent: w.pt does not exist" for r in view["rows"])
    assert all(r[-1] == "not reported" for r in view["rows"])
    fd = {
        "skipped": False,
        "rows": [
            {"group": "g", "reference": "eval", "n_group": 8, "n_reference": 16, "fd": 2.5}
            | {"fd_inf": 1.0, "ci_low": 0.5, "ci_high": 1.5}
        ],
    }
    paper = {"fd_openl3": {"value": 1.25, "source": "Table 1"}}
    view = anchors_view(
        {"embedding_distances": {"anchors": {"fd_openl3": fd, "paper_reported": paper}}}
    )
    assert view["rows"][0] == [
        "FD-openl3",
        "g",
        "eval",
        "8 vs 16 clips",
        "2.5",
        "1 [0.5, 1.5]",
        "1.25 (Table 1)",
    ]
    assert anchors_view({}) is None
