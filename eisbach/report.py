"""Report stage: one static HTML page that opens from file:// (every link relative)."""

from __future__ import annotations

import argparse
import html
import json
import os
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq

from eisbach import provenance
from eisbach.atomic import write_text
from eisbach.figures import TABLE_COLUMNS, fmt, table2_rows

VERDICT_COLOURS = {"supported": "#1b7f3b", "contradicted": "#b3261e", "inconclusive": "#8a6d00"}
STYLE = """
body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:.9em}td,th{border:1px solid #ccc;padding:.3em .6em}
th{background:#f3f3f3}.v,.r{font-weight:bold}.grid{display:flex;flex-wrap:wrap;gap:1em}
.card{border:1px solid #ddd;padding:.5em;width:380px;font-size:.8em}.card img{width:100%}
.card audio{width:100%}.note{background:#fff8e1;border-left:4px solid #f0b400;padding:.5em 1em}
code{background:#f3f3f3;padding:0 .2em}
"""


def rel(path, report_dir: Path) -> str:
    return html.escape(os.path.relpath(Path(path).resolve(), report_dir.resolve()))


def esc(value) -> str:
    return html.escape(fmt(value))


def verdict_cell(v: str) -> str:
    return f'<td class="v" style="color:{VERDICT_COLOURS.get(v, "#222")}">{esc(v)}</td>'


def claims_section(summary: dict) -> str:
    rows = table2_rows(summary)
    head = "".join(f"<th>{c}</th>" for c in TABLE_COLUMNS)
    body = "".join(
        "<tr>"
        + "".join(
            verdict_cell(r.get(c)) if c == "verdict" else f"<td>{esc(r.get(c))}</td>"
            for c in TABLE_COLUMNS
        )
        + "</tr>"
        for r in rows
    )
    predictions = [c for c in summary["claims"] if not c["id"].startswith("table2.")]
    pred_rows = "".join(
        f"<tr><td>{esc(c['id'])}</td><td>{esc(c.get('claim'))}</td>{verdict_cell(c['verdict'])}"
        f"<td>{esc(c.get('diff'))}</td><td>[{esc(c.get('ci_low'))}, {esc(c.get('ci_high'))}]</td>"
        f"<td>{esc(c.get('reason'))}</td></tr>"
        for c in predictions
    )
    return (
        "<h2>Table 2: barrier against baseline</h2>"
        "<p>Barrier = scheme <code>eisbach</code> at the Table 2 &lambda; and adapter "
        "(<code>evaluate.table2_lam</code>, <code>table2_adapter</code>; the paper's 0.5 and "
        "DoRA); baseline = <code>none</code>. Each barrier sample pairs with the baseline sample "
        "of the same adapter, training seed, prompt and sampling seed (the same initial noise). "
        "Differences are barrier &minus; baseline, with a two-stage bootstrap CI over training "
        "seeds and then pairs; with one training seed the verdict is inconclusive. Every "
        "verdict is computed by <code>eisbach.evaluate</code>.</p>"
        f"<table><tr>{head}</tr>{body}</table>"
        "<h2>Section 9 predictions</h2>"
        "<table><tr><th>id</th><th>claim</th><th>verdict</th><th>diff</th><th>CI</th><th>note</th></tr>"
        f"{pred_rows}</table>"
    )


def spread_section(summary: dict) -> str:
    rows = []
    for rid, spread in sorted(summary["weight_spread"].items()):
        for b in spread["by_t"]:
            h, w = b["H"], b["w"]
            rows.append(
                f"<tr><td>{esc(rid)}</td><td>{b['t_lo']:.1f}&ndash;{b['t_hi']:.1f}</td><td>{b['n']}</td>"
                f"<td>{h['mean']:.3f} &plusmn; {h['sd']:.3f} [{h['min']:.3f}, {h['max']:.3f}]</td>"
                f"<td>{w['mean']:.3f} &plusmn; {w['sd']:.3f} [{w['min']:.3f}, {w['max']:.3f}]</td>"
                f"<td>{spread['mean_applied_weight']:.3f}</td></tr>"
            )
    return (
        "<h2>Spread of H and w during training</h2>"
        "<p>Does w vary across samples at all? Under SGD a w that barely varies would act as a "
        "smaller learning rate. This loop trains with AdamW, whose update m/(&radic;v+&epsilon;) "
        "normalises a uniform loss scale away (a constant c only turns &epsilon; into "
        "&epsilon;/c): a near-uniform w does almost nothing, and what is left is its variation "
        "across the samples of a batch and across steps. <code>constant</code> at the matched "
        "weight shows the first part (it trains nearly the run of <code>none</code>); "
        "<code>eisbach_batchmean</code> keeps only the variation across steps and "
        "<code>eisbach_shuffled</code> the values without their assignment.</p>"
        "<table><tr><th>run</th><th>t-bin</th><th>n</th><th>H mean &plusmn; sd [min, max]</th>"
        "<th>w mean &plusmn; sd [min, max]</th><th>mean applied weight</th></tr>"
        + "".join(rows)
        + "</table>"
    )


READING_COLOURS = {"eisbach lower": "#1b7f3b", "control lower": "#b3261e"}


def controls_section(summary: dict) -> str:
    rows = []
    for c in summary.get("controls", []):
        colour = READING_COLOURS.get(c["reading"], "#8a6d00")
        by_t = ", ".join(f"{t}: {fmt(d)}" for t, d in c["diff_by_t"].items())
        rows.append(
            f"<tr><td>{esc(c['control'])}</td><td>{esc(c['reference'])}</td>"
            f"<td>{esc(c['adapter'])}</td><td>{c['seeds']}</td><td>{c['units']}</td>"
            f"<td>{esc(c['control_loss'])}</td><td>{esc(c['reference_loss'])}</td>"
            f"<td>{esc(c.get('diff'))}</td><td>[{esc(c.get('ci_low'))}, {esc(c.get('ci_high'))}]</td>"
            f'<td class="r" style="color:{colour}">{esc(c["reading"])}</td>'
            f"<td>{esc(by_t)}</td><td>{esc(c.get('reason'))}</td></tr>"
        )
    if not rows:
        return "<h2>Controls</h2><p>The grid has no control paired with an eisbach run.</p>"
    return (
        "<h2>Controls: held-out denoising loss</h2>"
        "<p>Each control against the eisbach run of the same &lambda;, adapter and training seed, "
        "scored on the eval clips with identical timesteps and noise. diff = control &minus; "
        "eisbach, averaged per (seed, clip) over the t grid, with a paired two-stage bootstrap "
        "CI (training seeds, then clips within them). "
        "<code>constant-matched</code> scales the loss by eisbach's mean applied weight; under "
        "AdamW that is nearly <code>none</code> (see the spread section). With one training "
        "seed the reading is inconclusive. A diagnostic of the method, not a verdict on the "
        "paper's claims.</p>"
        "<table><tr><th>control</th><th>reference</th><th>adapter</th><th>seeds</th>"
        "<th>units</th><th>control loss</th><th>eisbach loss</th><th>diff</th><th>CI</th>"
        "<th>reading</th><th>diff by t</th><th>note</th></tr>" + "".join(rows) + "</table>"
    )


def data_section(manifest_path: Path) -> str:
    rows = pq.read_table(manifest_path).to_pylist()
    counts = Counter(r["status"] for r in rows)
    minutes = sum(r["duration"] or 0 for r in rows if r["status"] == "ok") / 60
    cells = "".join(f"<tr><td>{esc(s)}</td><td>{n}</td></tr>" for s, n in sorted(counts.items()))
    return (
        f"<h2>Data</h2><p>{len(rows)} clips in the manifest; {minutes:.1f} minutes of audio kept.</p>"
        f"<table><tr><th>status</th><th>clips</th></tr>{cells}</table>"
    )


def samples_section(per_sample: list[dict], figures_dir: Path, report_dir: Path) -> str:
    out = ["<h2>Samples</h2>"]
    for rid in sorted({r["run_id"] for r in per_sample}):
        cards = []
        for r in sorted((r for r in per_sample if r["run_id"] == rid), key=lambda r: r["path"]):
            png = figures_dir / "spectrograms" / rid / (Path(r["path"]).stem + ".png")
            cards.append(
                f'<div class="card"><b>{esc(r["prompt_id"])}</b> seed {r["seed"]}<br>'
                f"<i>{esc(r['prompt'])}</i><br>"
                f'<audio controls preload="none" src="{rel(r["path"], report_dir)}"></audio>'
                f'<img alt="spectrogram" src="{rel(png, report_dir)}"></div>'
            )
        out.append(f"<h3>{esc(rid)} ({esc(per_sample_group(per_sample, rid))})</h3>")
        out.append('<div class="grid">' + "".join(cards) + "</div>")
    return "".join(out)


def per_sample_group(per_sample: list[dict], rid: str) -> str:
    return next(r["group"] for r in per_sample if r["run_id"] == rid)


def provenance_section(records: dict[str, dict]) -> str:
    rows = "".join(
        f"<tr><td>{esc(name)}</td><td><code>{esc(p.get('config_hash'))}</code></td>"
        f"<td><code>{esc(p.get('git_commit'))}</code></td><td>{esc(p.get('created_utc'))}</td></tr>"
        for name, p in records.items()
    )
    packages = records[next(iter(records))].get("packages", {})
    pkg = ", ".join(f"{esc(k)} {esc(v)}" for k, v in packages.items())
    return (
        "<h2>Provenance</h2>"
        + mixed_commits_warning(records)
        + "<table><tr><th>artefact</th><th>config hash</th><th>git commit</th>"
        f"<th>created</th></tr>{rows}</table><p>Packages: {pkg}</p>"
    )


def mixed_commits_warning(records: dict[str, dict]) -> str:
    """Snakemake reruns a job when its inputs, parameters or shell command change, not when the
    eisbach code it runs does; so after a code change, old artefacts can sit beside new ones."""
    commits = sorted({p.get("git_commit") or "unknown" for p in records.values()})
    if len(commits) < 2:
        return ""
    return (
        f'<p class="note">These artefacts come from {len(commits)} different code versions '
        f"({esc(', '.join(commits))}): a job reruns when its inputs, parameters or command "
        "change, not when the code it runs does. To rebuild everything with the current code, "
        "run <code>snakemake --cores all --forceall</code>.</p>"
    )


def build(args) -> str:
    report_dir = args.out.parent
    summary = json.loads(args.summary.read_text())
    per_sample = pq.read_table(args.per_sample).to_pylist()
    figures_dir = args.figures_dir
    records = {"summary.json": summary["provenance"]}
    for d in args.runs:
        records[f"runs/{d.name}"] = json.loads((d / "run.json").read_text())["provenance"]
    for name in ("p1_weight_vs_t.png", "weight_spread.png", "metrics_by_group.png"):
        if not (figures_dir / name).exists():
            raise FileNotFoundError(f"{figures_dir / name} is missing; rerun the figures rule")
    figures = "".join(
        f'<figure><img style="max-width:100%" src="{rel(figures_dir / n, report_dir)}">'
        f"<figcaption>{c}</figcaption></figure>"
        for n, c in (
            ("p1_weight_vs_t.png", "P1: w and H against t, from the per-sample training logs."),
            ("weight_spread.png", "Spread of H, w and the applied weight per run."),
            ("metrics_by_group.png", "Table 2 metrics per sample, by group."),
        )
    )
    profile = html.escape(args.profile)
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>Eisbach report ({profile})</title>"
        f"<style>{STYLE}</style></head><body>"
        f"<h1>Eisbach log-barrier: reproduction report</h1><p>Profile: <b>{profile}</b>.</p>"
        + (
            '<p class="note">This is the offline demo: a tiny DiT pretrained on generated music, '
            "on CPU, for minutes. It shows that every stage runs and how each claim is judged; its "
            "verdicts say nothing about Stable Audio 3 on MusicCaps.</p>"
            if args.profile != "paper"
            else ""
        )
        + claims_section(summary)
        + f"<h2>Figures</h2>{figures}"
        + spread_section(summary)
        + controls_section(summary)
        + data_section(args.manifest)
        + samples_section(per_sample, figures_dir, report_dir)
        + provenance_section(records)
        + "</body></html>"
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--summary", type=Path, required=True)
    parser.add_argument("--per-sample", type=Path, required=True)
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--figures-dir", type=Path, required=True)
    parser.add_argument("--runs", type=Path, nargs="+", required=True)
    parser.add_argument("--profile", required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    page = build(args)
    write_text(args.out, page)
    write_text(
        args.out.parent / "provenance.json",
        json.dumps(provenance.provenance({"profile": args.profile}), indent=2),
    )
    print(f"report -> {args.out}")
