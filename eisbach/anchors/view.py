"""The report's table of anchor metrics: what this run computed, beside what the paper reports
where the paper profile records it (``evaluate.anchors.paper_reported``). A metric not computed
gets one row saying why; nothing in the table is typed in except the paper's own numbers."""

from __future__ import annotations

from eisbach.anchors import ANCHORS

LABELS = {"fd_openl3": "FD-openl3", "kl_passt": "KL-PaSST", "clap_score": "CLAP score"}
COLUMNS = ["metric", "group", "against", "n", "value [95% CI]", "FD-infinity [95% CI]", "paper"]


def _num(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def _with_ci(row: dict, key: str) -> str:
    if row.get(key) is None:
        return "-"
    if row.get("ci_low") is None:
        return _num(row[key])
    return f"{_num(row[key])} [{_num(row['ci_low'])}, {_num(row['ci_high'])}]"


def _paper(reported: dict, name: str) -> str:
    entry = reported.get(name)
    if not entry:
        return "not reported"
    return f"{_num(entry['value'])} ({entry.get('source', 'source not given')})"


def anchors_view(summary: dict) -> dict | None:
    """Columns and rows, or None for a summary written before anchors existed."""
    anchors = (summary.get("embedding_distances") or {}).get("anchors")
    if not isinstance(anchors, dict):
        return None
    reported = anchors.get("paper_reported") or {}
    rows = []
    for name in ANCHORS:
        result = anchors.get(name) or {"skipped": True, "reason": "not in this summary"}
        label, paper = LABELS[name], _paper(reported, name)
        if result.get("skipped") or not result.get("rows"):
            why = result.get("reason") or "no sample could be scored"
            rows.append([label, "-", "-", "-", f"not computed: {why}", "-", paper])
            continue
        for row in result["rows"]:
            if name == "fd_openl3":
                n = f"{row['n_group']} vs {row['n_reference']} clips"
                fd = _num(row["fd"])
                inf = _with_ci(row, "fd_inf") if "fd_inf" in row else row.get("note", "-")
                rows.append([label, row["group"], row["reference"], n, fd, inf, paper])
            else:
                against = "own reference clip" if name == "kl_passt" else "its prompt"
                value = _with_ci(row, "mean")
                rows.append([label, row["group"], against, str(row["n"]), value, "-", paper])
    return {
        "columns": COLUMNS,
        "rows": rows,
        "equal_n": (anchors.get("fd_openl3") or {}).get("equal_n"),
    }
