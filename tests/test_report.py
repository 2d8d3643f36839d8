"""The report warns when its artefacts were made by different versions of the code."""

from eisbach.report import mixed_commits_warning, provenance_section


def record(commit):
    return {"config_hash": "abc", "git_commit": commit, "packages": {"torch": "2.9.1"}}


def test_one_commit_no_warning():
    records = {"summary.json": record("1d97cd9"), "runs/a": record("1d97cd9")}
    assert mixed_commits_warning(records) == ""
    assert "different code versions" not in provenance_section(records)


def test_mixed_commits_are_named():
    records = {"summary.json": record("4bd6823"), "runs/a": record("1d97cd9+dirty")}
    warning = mixed_commits_warning(records)
    assert "2 different code versions" in warning
    assert "1d97cd9+dirty" in warning and "4bd6823" in warning and "--forceall" in warning
    assert warning in provenance_section(records)
