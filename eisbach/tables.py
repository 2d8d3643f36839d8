"""Tables of the figures stage: Table 2, the section 9 predictions and the controls, each as a
pandas DataFrame written to csv, md (``to_markdown``) and tex (``to_latex``), with its
provenance. The report renders the same frames, so a number reads the same everywhere."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from eisbach.atomic import write_json, write_text

# every claim's reading: the estimate, its CI, its p-value and the verdict computed from them
READING_COLUMNS = ["diff", "ci_low", "ci_high", "p_value", "verdict", "mde", "reason"]
TABLE2_COLUMNS = [
    "id",
    "unit",
    "seeds",
    "pairs",
    "barrier_mean",
    "baseline_mean",
    # beside every metric: the share of static clips (drones) per group, left out of the pairs
    "barrier_static_share",
    "baseline_static_share",
    "static_pairs",
    "min_effect",
    *READING_COLUMNS,
]
PREDICTION_COLUMNS = ["id", "claim", "metric", "seeds", "units", "min_effect", *READING_COLUMNS]
CONTROL_COLUMNS = [
    "control",
    "reference",
    "adapter",
    "seeds",
    "units",
    "control_loss",
    "reference_loss",
    "diff",
    "ci_low",
    "ci_high",
    "reading",
    "reason",
]


def parts_of(claim: dict) -> list[tuple[str, dict]]:
    """The readings a compound claim is made of (P3, P5, the levels claim), each with its own
    CI, which the tables show beside the claim: its dict fields with a verdict of their own."""
    return [(k, v) for k, v in claim.items() if isinstance(v, dict) and "verdict" in v]


def table2_rows(summary: dict) -> list[dict]:
    rows = []
    for claim in summary["claims"]:
        if claim["id"].startswith("table2."):
            rows.append(claim)
            rows += [sub | {"id": f"{claim['id']}.{part}"} for part, sub in parts_of(claim)]
    return rows


def prediction_rows(summary: dict) -> list[dict]:
    """One row per prediction, and one per part of a prediction made of several readings."""
    rows = []
    for claim in summary["claims"]:
        if claim["id"].startswith("table2."):
            continue
        rows.append(dict(claim))
        for part, sub in parts_of(claim):
            rows.append(
                sub | {"id": f"{claim['id']}.{part}", "claim": f"part: {part}", "metric": part}
            )
    return rows


def frame(rows: list[dict], columns: list[str]) -> pd.DataFrame:
    """The rows as a frame of exactly ``columns`` (absent fields are missing values)."""
    return pd.DataFrame([{c: r.get(c) for c in columns} for r in rows], columns=columns)


def table2_frame(summary: dict) -> pd.DataFrame:
    return frame(table2_rows(summary), TABLE2_COLUMNS)


def predictions_frame(summary: dict) -> pd.DataFrame:
    return frame(prediction_rows(summary), PREDICTION_COLUMNS)


def controls_frame(summary: dict) -> pd.DataFrame:
    return frame(summary.get("controls", []), CONTROL_COLUMNS)


def cell(value) -> str:
    """A value as the md and HTML tables show it: 4 significant digits, blank when missing."""
    if value is None:
        return ""
    if isinstance(value, float | np.floating):
        return "" if not np.isfinite(value) else f"{value:.4g}"
    return str(value)


def _display(df: pd.DataFrame, escape=str) -> pd.DataFrame:
    # DataFrame.map is pandas >= 2.1; the lock holds 2.0
    return df.applymap(lambda v: escape(cell(v)))


def to_markdown(df: pd.DataFrame) -> str:
    # a "|" or a newline inside a cell would end the cell or the row
    shown = _display(df, lambda s: s.replace("|", r"\|").replace("\n", " "))
    return shown.to_markdown(index=False, disable_numparse=True)


def to_latex(df: pd.DataFrame) -> str:
    align = "".join("r" if pd.api.types.is_numeric_dtype(df[c]) else "l" for c in df.columns)
    shown = _display(df, lambda s: s.replace("\n", " "))
    return shown.to_latex(index=False, escape=True, column_format=align)


def write_table(df: pd.DataFrame, out_dir: Path, name: str, record: dict) -> list[Path]:
    """<name>.csv (full precision), .md and .tex (4 significant digits), each stamped with the
    provenance, and <name>.provenance.json. Returns the paths written."""
    out_dir = Path(out_dir)
    stamp = json.dumps(record, sort_keys=True)
    paths = {ext: out_dir / f"{name}.{ext}" for ext in ("csv", "md", "tex", "provenance.json")}
    write_text(paths["csv"], df.to_csv(index=False))
    write_text(paths["md"], to_markdown(df) + f"\n\n<!-- provenance: {stamp} -->\n")
    write_text(paths["tex"], to_latex(df) + f"% provenance: {stamp}\n")
    write_json(paths["provenance.json"], record)
    return list(paths.values())
