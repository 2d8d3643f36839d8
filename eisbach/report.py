"""Report stage: one static HTML page rendered from a jinja2 template (autoescaped), in a folder
that holds everything it links to, so that it opens from file:// and travels whole inside
``snakemake --report``'s zip.

    <report dir>/index.html
    <report dir>/provenance.json
    <report dir>/assets/figures/<figure>.png|svg
    <report dir>/assets/tables/<table>.csv|md|tex
    <report dir>/assets/samples/<run_id>/<sample>.wav|png   (player and spectrogram)

Assets are hard links to the stage outputs where the file system allows it, else copies. Each
sample and training clip is checked against the sha256 recorded for it (per_sample.parquet, the
summary's prompt references) before it is linked, and provenance.json lists the sha256 of every
asset the page links to.
"""

from __future__ import annotations

import argparse
import json
import os
from collections import Counter
from pathlib import Path

import jinja2
import markupsafe
import pyarrow.parquet as pq

from eisbach import provenance, tables
from eisbach.anchors.view import anchors_view
from eisbach.atomic import link_or_copy, write_json, write_text
from eisbach.figures import (
    FIGURES,
    REFERENCE_FOLDER,
    arm_of_row,
    reference_clips,
    reference_spectrogram_path,
    spectrogram_path,
)
from eisbach.integrity import verify_file
from eisbach.metrics import METRICS
from eisbach.stats import READINGS

GROUP_ORDER = {"base": 0, "baseline": 1, "barrier": 2, "control": 3}
TABLE_NAMES = ("table2", "predictions", "controls")
# What each backend's run can speak to, whatever its verdicts read.
BACKEND_SCOPE = {
    "tiny": (
        "a tiny DiT pretrained for minutes on generated music, on CPU: it shows that every "
        "stage runs and how each claim is judged, and says nothing about Stable Audio 3 or "
        "MusicCaps"
    ),
    "stable-audio-tools": (
        "a stable-audio-tools model, not the paper's Stable Audio 3 Medium: the claims are "
        "tested on another backbone"
    ),
    "stable-audio-3": (
        "Stable Audio 3, the paper's backbone: the verdicts speak to the paper's claims for "
        "this run's data, seeds and settings"
    ),
}


def rel(path: Path, report_dir: Path) -> str:
    return Path(os.path.relpath(path, report_dir)).as_posix()


def verdict_counts(claims: list[dict]) -> dict[str, int]:
    counts = Counter(c["verdict"] for c in claims)
    return {v: counts.get(v, 0) for v in READINGS}


def judgeable(claim: dict) -> bool:
    """Whether this run can judge a claim: a CI that spans two or more training seeds, for a
    conjunction (P3, the levels claim) in every part."""
    parts = tables.parts_of(claim)
    if parts and "ci_low" not in claim:  # a conjunction: judged where every part is
        return all(judgeable({"id": name} | part) for name, part in parts)
    if "ci_low" not in claim or "one training seed" in (claim.get("reason") or ""):
        return False
    return claim.get("seeds") is None or claim["seeds"] >= 2


def run_summary(summary: dict, runs: dict[str, dict], per_sample: list[dict], manifest, profile):
    """The one-screen summary: what this run can and cannot show, from its own artefacts."""
    adapters = [r for r in runs.values() if r.get("kind") != "base"]
    backends = sorted({r["config"]["backend"]["name"] for r in runs.values() if "config" in r})
    claims = summary["claims"]
    can = [c for c in claims if judgeable(c)]
    cannot = [c for c in claims if not judgeable(c)]
    spread = [s["mean_applied_weight"] for rid, s in summary["weight_spread"].items()
              if runs.get(rid, {}).get("scheme", {}).get("name") == "eisbach"]  # fmt: skip
    return {
        "profile": profile,
        "backends": backends,
        "scope": [BACKEND_SCOPE.get(b, f"backend {b}") for b in backends],
        "clips_ok": sum(1 for r in manifest if r["status"] == "ok"),
        "clips": len(manifest),
        "fine_tunes": len(adapters),
        "train_seeds": sorted({r["seed"] for r in adapters}),
        "arms": sorted({arm_of_row(r) for r in per_sample}),
        "samples": len(per_sample),
        "counts": verdict_counts(claims),
        "can": can,
        "cannot": cannot,
        "applied_weight": (min(spread), max(spread)) if spread else None,
    }


def sample_groups(per_sample: list[dict]) -> list[dict]:
    """Per prompt, per sampling seed: the samples of every arm side by side, base first, then
    baselines and barriers of the same training seed next to each other."""
    prompts: dict[str, dict] = {}
    for row in per_sample:
        entry = prompts.setdefault(row["prompt_id"], {"prompt": row["prompt"], "seeds": {}})
        entry["seeds"].setdefault(row["seed"], []).append(row)

    def order(r):
        seed = r["train_seed"] if r["train_seed"] is not None else -1
        return (seed, GROUP_ORDER.get(r["group"], 9), arm_of_row(r))

    return [
        {
            "prompt_id": pid,
            "prompt": entry["prompt"],
            "seeds": [
                {"seed": seed, "cards": sorted(cards, key=order)}
                for seed, cards in sorted(entry["seeds"].items())
            ],
        }
        for pid, entry in sorted(prompts.items())
    ]


def likeness_view(summary: dict) -> dict | None:
    """The "do the samples sound like the training music?" table: per group of clips, the
    median [quartiles] of each metric evaluate read them by, and the share of static clips."""
    rows = summary.get("likeness")
    if not rows:
        return None
    order = list(METRICS)
    names = sorted(
        (k for k in rows[0] if k in METRICS), key=lambda n: (n != "onset_peakiness", order.index(n))
    )

    def cell(value):
        if value is None:
            return ""
        if isinstance(value, dict):
            return f"{value['median']:.3g} [{value['q1']:.3g}, {value['q3']:.3g}]"
        return f"{100 * value:.0f} %"

    columns = ["group", "clips"] + [
        f"{n} ({METRICS[n].unit})" if n != "static_clip" else "static clips" for n in names
    ]
    return {
        "columns": columns,
        "rows": [[r["group"], str(r["clips"])] + [cell(r[n]) for n in names] for r in rows],
    }


def mixed_commits(records: dict[str, dict]) -> list[str]:
    """The code versions behind the artefacts when there is more than one. Snakemake reruns a
    job when its inputs, parameters or command change, not when the eisbach code it runs does,
    so after a code change old artefacts can sit beside new ones."""
    commits = sorted({p.get("git_commit") or "unknown" for p in records.values()})
    return commits if len(commits) > 1 else []


def table_view(df) -> dict:
    return {"columns": list(df.columns), "rows": [[tables.cell(v) for v in r] for r in df.values]}


def breakable(name: str) -> markupsafe.Markup:
    """A column name that may wrap after its underscores, so that a wide table still fits."""
    return markupsafe.Markup("_<wbr>").join(markupsafe.escape(name).split("_"))


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("eisbach", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["breakable"] = breakable
    return env


def copy_assets(
    args, per_sample: list[dict], references: dict[str, dict], report_dir: Path
) -> dict:
    """Every file the page links to, under report_dir/assets; name -> relative link."""
    assets = report_dir / "assets"
    links: dict = {"figures": {}, "tables": {}, "samples": {}}
    for stem in FIGURES:
        for ext in ("png", "svg"):
            src = args.figures_dir / f"{stem}.{ext}"
            if not src.exists():
                raise FileNotFoundError(f"{src} is missing; rerun the figures rule")
            link_or_copy(src, assets / "figures" / src.name)
        links["figures"][stem] = {ext: f"assets/figures/{stem}.{ext}" for ext in ("png", "svg")}
    for name in TABLE_NAMES:
        links["tables"][name] = {}
        for ext in ("csv", "md", "tex"):
            link_or_copy(args.tables_dir / f"{name}.{ext}", assets / "tables" / f"{name}.{ext}")
            links["tables"][name][ext] = f"assets/tables/{name}.{ext}"

    def player(wav: Path, png: Path, folder: Path, sha256, record, rule: str) -> dict:
        # what evaluate scored, or the page plays another clip than its numbers describe
        verify_file(wav, sha256, record=record, rule=rule)
        link_or_copy(wav, folder / wav.name)
        link_or_copy(png, folder / png.name)
        return {"audio": rel(folder / wav.name, report_dir),
                "spectrogram": rel(folder / png.name, report_dir)}  # fmt: skip

    links["references"] = {
        clip["id"]: player(
            Path(clip["path"]),
            reference_spectrogram_path(args.figures_dir, clip),
            assets / "samples" / REFERENCE_FOLDER,
            clip.get("sha256"),
            args.summary,
            "data_shard",
        )
        for clip in references.values()
    }
    for row in per_sample:
        links["samples"][row["path"]] = player(
            Path(row["path"]),
            spectrogram_path(args.figures_dir, row),
            assets / "samples" / row["run_id"],
            row.get("sha256"),
            args.per_sample,
            "sample_run",
        )
    return links


def asset_hashes(report_dir: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under report_dir/assets."""
    assets = Path(report_dir) / "assets"
    return {
        rel(path, report_dir): provenance.file_sha256(path)
        for path in sorted(assets.rglob("*"))
        if path.is_file()
    }


def render(context: dict) -> str:
    return environment().get_template("report.html.j2").render(**context)


def build(args) -> str:
    report_dir = args.out.parent
    summary = json.loads(args.summary.read_text())
    per_sample = pq.read_table(args.per_sample).to_pylist()
    manifest = pq.read_table(args.manifest).to_pylist()
    runs = {d.name: json.loads((d / "run.json").read_text()) for d in args.runs}
    records = {"summary.json": summary["provenance"]}
    records |= {f"runs/{rid}": run["provenance"] for rid, run in runs.items()}
    links = copy_assets(args, per_sample, reference_clips(summary), report_dir)
    for row in per_sample:
        row["arm"] = arm_of_row(row)
    packages = summary["provenance"].get("packages", {})
    status = Counter(r["status"] for r in manifest)
    context = {
        "overview": run_summary(summary, runs, per_sample, manifest, args.profile),
        "table2": table_view(tables.table2_frame(summary)),
        "predictions": table_view(tables.predictions_frame(summary)),
        "controls": table_view(tables.controls_frame(summary)),
        "weight_spread": sorted(summary["weight_spread"].items()),
        "figures": [{"stem": s, "caption": c, **links["figures"][s]} for s, c in FIGURES.items()],
        "tables": links["tables"],
        "data": {
            "clips": len(manifest),
            "minutes": sum(r["duration"] or 0 for r in manifest if r["status"] == "ok") / 60,
            "status": sorted(status.items()),
        },
        "prompts": sample_groups(per_sample),
        "prompt_references": summary.get("prompt_references", {}),
        "likeness": likeness_view(summary),
        "anchors": anchors_view(summary),
        "sample_links": links["samples"],
        "reference_links": links["references"],
        "records": records,
        "mixed_commits": mixed_commits(records),
        "packages": packages,
    }
    return render(context)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--summary", type=Path, required=True)
    parser.add_argument("--per-sample", type=Path, required=True)
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--figures-dir", type=Path, required=True)
    parser.add_argument("--tables-dir", type=Path, required=True)
    parser.add_argument("--runs", type=Path, nargs="+", required=True)
    parser.add_argument("--profile", required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    page = build(args)
    write_text(args.out, page)
    record = provenance.provenance({"profile": args.profile})
    write_json(
        args.out.parent / "provenance.json", record | {"assets": asset_hashes(args.out.parent)}
    )
    print(f"report -> {args.out}")
