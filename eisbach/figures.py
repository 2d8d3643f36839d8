"""Figures stage: Table 2 with its verdicts, the controls table, the P1 figure (w against t), the spread of H and w,
and a spectrogram of every sample for the report."""

from __future__ import annotations

import argparse
import csv
import io
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import soundfile as sf  # noqa: E402

from eisbach import provenance  # noqa: E402
from eisbach.atomic import atomic_path, write_json, write_text  # noqa: E402
from eisbach.evaluate import group_of  # noqa: E402

TABLE_COLUMNS = [
    "id",
    "unit",
    "seeds",
    "pairs",
    "barrier_mean",
    "baseline_mean",
    "diff",
    "ci_low",
    "ci_high",
    "verdict",
    "reason",
]
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
GROUP_COLOURS = {
    "barrier": "tab:red",
    "baseline": "tab:blue",
    "base": "tab:gray",
    "control": "tab:green",
}


def save_figure(fig, path: Path, record: dict) -> None:
    """PNG with the stage's provenance in a tEXt chunk."""
    metadata = {"Software": "eisbach", "Comment": json.dumps(record, sort_keys=True)}
    with atomic_path(path, suffix=".tmp.png") as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", metadata=metadata)
    plt.close(fig)


def fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def table2_rows(summary: dict) -> list[dict]:
    return [c for c in summary["claims"] if c["id"].startswith("table2.")]


def write_table(rows: list[dict], columns: list[str], out_dir: Path, name: str, record) -> None:
    """<name>.csv, .md and .tex (each stamped with the provenance) and <name>.provenance.json."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    stamp = json.dumps(record, sort_keys=True)
    write_text(out_dir / f"{name}.csv", buffer.getvalue())
    write_json(out_dir / f"{name}.provenance.json", record)

    md = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    md += ["| " + " | ".join(fmt(r.get(c)) for c in columns) + " |" for r in rows]
    write_text(out_dir / f"{name}.md", "\n".join(md) + f"\n\n<!-- provenance: {stamp} -->\n")

    def tex_escape(s: str) -> str:
        return s.replace("_", r"\_").replace("%", r"\%")

    tex = [
        r"\begin{tabular}{l" + "r" * (len(columns) - 2) + "l}",
        r"\toprule",
        " & ".join(tex_escape(c) for c in columns) + r" \\",
        r"\midrule",
    ]
    tex += [" & ".join(tex_escape(fmt(r.get(c))) for c in columns) + r" \\" for r in rows]
    tex += [r"\bottomrule", r"\end{tabular}", f"% provenance: {stamp}"]
    write_text(out_dir / f"{name}.tex", "\n".join(tex) + "\n")


def p1_figure(logs: dict[str, list[dict]], runs: dict[str, dict], path: Path, record: dict) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    bins = np.linspace(0, 1, 11)
    for group in ("barrier", "baseline", "control"):
        rows = [r for rid, log in logs.items() if group_of(runs[rid]) == group for r in log]
        if not rows:
            continue
        t = np.array([r["t"] for r in rows])
        for ax, key in zip(axes, ("w", "H"), strict=True):
            v = np.array([r[key] for r in rows])
            ax.scatter(t, v, s=4, alpha=0.25, color=GROUP_COLOURS[group])
            which = np.digitize(t, bins) - 1
            means = [v[which == i].mean() if np.any(which == i) else np.nan for i in range(10)]
            centres = (bins[:-1] + bins[1:]) / 2
            ax.plot(centres, means, "-o", color=GROUP_COLOURS[group], label=f"{group} (bin mean)")
    axes[0].set(
        xlabel="t (1 = pure noise)",
        ylabel="w (Eq.4)",
        title="P1: barrier weight against noise level",
    )
    axes[1].set(xlabel="t (1 = pure noise)", ylabel="H (Eq.3)", title="Normalised temporal entropy")
    for ax in axes:
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    save_figure(fig, path, record)


def spread_figure(logs: dict[str, list[dict]], path: Path, record: dict) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    for rid, log in sorted(logs.items()):
        for ax, key in zip(axes, ("H", "w", "applied_weight"), strict=True):
            ax.hist([r[key] for r in log], bins=40, histtype="step", label=rid)
    for ax, key in zip(axes, ("H", "w", "applied weight s"), strict=True):
        ax.set(xlabel=key, ylabel="logged samples", title=f"Spread of {key}")
    axes[-1].legend(fontsize=6)
    save_figure(fig, path, record)


def metrics_figure(per_sample: list[dict], summary: dict, path: Path, record: dict) -> None:
    names = list(dict.fromkeys(c["metric"] for c in table2_rows(summary)))
    groups = [
        g
        for g in ("base", "baseline", "barrier", "control")
        if any(r["group"] == g for r in per_sample)
    ]
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.4))
    for ax, name in zip(np.atleast_1d(axes), names, strict=True):
        data = [
            [r[name] for r in per_sample if r["group"] == g and np.isfinite(r[name])]
            for g in groups
        ]
        ax.boxplot(data, labels=groups)
        ax.set_title(name, fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
    save_figure(fig, path, record)


def spectrogram(audio_path: str, path: Path, record: dict) -> None:
    audio, rate = sf.read(audio_path, dtype="float32", always_2d=True)
    fig, ax = plt.subplots(figsize=(4.2, 1.8))
    ax.specgram(audio.mean(axis=1), NFFT=1024, Fs=rate, noverlap=512, cmap="magma")
    ax.set(xlabel="s", ylabel="Hz")
    ax.tick_params(labelsize=6)
    ax.xaxis.label.set_size(7)
    ax.yaxis.label.set_size(7)
    save_figure(fig, path, record)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--summary", type=Path, required=True)
    parser.add_argument("--per-sample", type=Path, required=True)
    parser.add_argument("--runs", type=Path, nargs="+", required=True)
    parser.add_argument("--figures-dir", type=Path, required=True)
    parser.add_argument("--tables-dir", type=Path, required=True)
    args = parser.parse_args(argv)

    summary = json.loads(args.summary.read_text())
    record = provenance.provenance({"summary": summary["provenance"]["config_hash"]})
    per_sample = pq.read_table(args.per_sample).to_pylist()
    runs = {d.name: json.loads((d / "run.json").read_text()) for d in args.runs}
    logs = {d.name: pq.read_table(d / "train_log.parquet").to_pylist() for d in args.runs}

    write_table(table2_rows(summary), TABLE_COLUMNS, args.tables_dir, "table2", record)
    write_table(summary["controls"], CONTROL_COLUMNS, args.tables_dir, "controls", record)
    p1_figure(logs, runs, args.figures_dir / "p1_weight_vs_t.png", record)
    spread_figure(logs, args.figures_dir / "weight_spread.png", record)
    metrics_figure(per_sample, summary, args.figures_dir / "metrics_by_group.png", record)
    for row in per_sample:
        out = args.figures_dir / "spectrograms" / row["run_id"] / (Path(row["path"]).stem + ".png")
        spectrogram(row["path"], out, record)
    print(f"figures: {len(per_sample)} spectrograms, table2 and controls -> {args.tables_dir}")
