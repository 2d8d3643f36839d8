"""Figures stage: every claim as a figure rebuilt from the raw training logs, the per-sample and
per-prompt metrics and the sample WAVs (nothing is retrained or resampled), plus Table 2, the
section 9 table and the controls table (eisbach.tables).

Each figure is written as PNG and SVG with the stage's provenance inside (a PNG tEXt chunk, the
SVG's dc:description). CIs are 95 %: the t interval over training seeds that the claims use
(eisbach.stats.clustered_ci) where a value belongs to a run, and a bootstrap over logged samples
for the per-bin correlations of P5's figure (a picture, not P5's test). ``FIGURES`` names each figure with its caption, for the report.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
# SVG text stays text, so that a paper's editor can restyle the labels (and tests can read them)
matplotlib.rcParams["svg.fonttype"] = "none"
# a fixed salt for the SVG's clip-path and marker ids (a random one by default), so that one
# figure is the same bytes on every run
matplotlib.rcParams["svg.hashsalt"] = "eisbach"
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import soundfile as sf  # noqa: E402

from eisbach import provenance, tables  # noqa: E402
from eisbach.atomic import atomic_path  # noqa: E402
from eisbach.integrity import verify_file  # noqa: E402
from eisbach.metrics import METRICS  # noqa: E402
from eisbach.predictions import HIGH_T, LOW_T, P2_BAND, P2_COLLAPSE  # noqa: E402
from eisbach.stats import clustered_ci  # noqa: E402

N_BOOT = 1000
ALPHA = 0.05
SEED = 0
T_BINS = np.linspace(0.0, 1.0, 11)
P5_BINS = np.linspace(0.0, 1.0, 6)
GROUP_COLOURS = {
    "barrier": "tab:red",
    "baseline": "tab:blue",
    "base": "tab:gray",
    "control": "tab:green",
}
MARKERS = "osD^vP*Xh<>"
LINESTYLES = ["-", "--", "-.", ":"]

# stem -> caption; the report shows them in this order
FIGURES = {
    "p1_weight_vs_t": "P1: the barrier weight w (Eq.4) against the noise level t, binned, mean "
    "and 95 % CI (training seeds, then logged samples) per arm. w is logged for every run; only "
    "eisbach runs apply it.",
    "p2_lambda_sweep": "P2: the Vendi diversity and each Table 2 metric against lambda "
    "(lambda 0 = the none baseline), mean and 95 % CI over training seeds; the shaded band is "
    "the paper's best-lambda range 0.3-0.7, the dotted line its collapse threshold 0.8.",
    "p3_consistency_vs_diversity": "P3: cross-seed structural consistency against Vendi "
    "diversity per (run, prompt); a thin line joins each barrier point to its baseline twin "
    "(same training seed and prompt); crosses are arm means with 95 % CIs.",
    "p4_pca_coverage": "P4: PCA trajectory coverage per sample by adapter, with and without "
    "the barrier (left), and DoRA minus LoRA under the barrier paired by training seed, prompt "
    "and sampling seed (right), mean and 95 % CI.",
    "p5_corr_h_loss": "P5: the correlation of H with the raw per-sample loss in each t-bin, "
    "with a 95 % bootstrap CI over the logged samples of the bin, per arm.",
    "entropy_vs_logsnr": "H and w against the log signal-to-noise ratio of the backend's "
    "objective, binned means with 95 % CIs, and the rate of change of H per unit log-SNR; "
    "the dashed line marks where H changes fastest.",
    "ssm_grid": "Self-similarity matrices (the metric's chroma and timbre SSM) of one sample "
    "per prompt (rows) and arm (columns): training seed and sampling seed the lowest of each.",
    "training_curves": "Training curves per run: raw loss and mean w per step (running mean "
    "over 5 steps), and the applied weight.",
    "weight_spread": "Spread of H, w and the applied weight per run: whether the weight "
    "varies across samples at all.",
    "metrics_by_group": "The Table 2 metrics per generated sample, by group (base, baseline, "
    "barrier).",
}


# --- helpers --------------------------------------------------------------------------------


def save_figure(fig, stem: Path, record: dict) -> list[Path]:
    """<stem>.png and <stem>.svg, each with the provenance inside; returns both paths."""
    stamp = json.dumps(record, sort_keys=True)
    paths = []
    for ext, metadata in (
        ("png", {"Software": "eisbach", "Comment": stamp}),
        # dc:date is the record's source date (SOURCE_DATE_EPOCH or the commit), not the clock
        (
            "svg",
            {"Creator": "eisbach", "Description": stamp, "Date": record.get("source_date_utc")},
        ),
    ):
        path = stem.with_suffix(f".{ext}")
        with atomic_path(path, suffix=f".tmp.{ext}") as tmp:
            fig.savefig(tmp, format=ext, dpi=110, bbox_inches="tight", metadata=metadata)
        paths.append(path)
    plt.close(fig)
    return paths


def arm_of_run(run: dict | None) -> str:
    """A run's arm: scheme, its parameters and the adapter, training seeds pooled."""
    if run is None or run.get("kind") == "base":
        return "base"
    return arm_label(run["scheme"]["name"], run["scheme"].get("lam"), run["adapter"]["type"])


def arm_label(scheme: str, lam, adapter) -> str:
    if scheme == "base":
        return "base"
    lam_part = "" if lam is None or (isinstance(lam, float) and np.isnan(lam)) else f" λ{lam:g}"
    return f"{scheme}{lam_part} · {adapter}"


def arm_of_row(row) -> str:
    return arm_label(row["scheme"], row.get("lam"), row.get("adapter"))


def group_of_run(run: dict | None) -> str:
    from eisbach.evaluate import group_of

    return group_of(run)


def ci_by_seed(df: pd.DataFrame, value: str, seed_col: str = "train_seed"):
    """(mean of seed means, lo, hi) of ``value`` clustered by training seed, or None."""
    groups = [g[value].to_numpy(float) for _, g in df.groupby(seed_col, dropna=False)]
    return clustered_ci(groups, ALPHA)


def finite(values: pd.Series) -> pd.Series:
    """Which values are finite numbers (an empty frame's columns have no numeric dtype)."""
    return np.isfinite(pd.to_numeric(values, errors="coerce").astype(float))


def empty_panel(ax, why: str) -> None:
    ax.text(0.5, 0.5, why, ha="center", va="center", wrap=True, fontsize=9, transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def empty_figure(fig, axes, why: str, stem: Path, record: dict) -> list[Path]:
    """A figure whose every panel says why it has no data: the rule's outputs always exist."""
    for ax in np.ravel(axes):
        empty_panel(ax, why)
    return save_figure(fig, stem, record)


def arm_styles(arms: list[str], groups: dict[str, str]) -> dict[str, dict]:
    """A distinct colour, marker and dash per arm (in ``arms`` order). Later arms are drawn on
    top with thinner lines, so a line that coincides with another still shows around it."""
    others = [c for i, c in enumerate(plt.get_cmap("tab10").colors) if i not in (0, 3, 7)]
    reserved = {"base": GROUP_COLOURS["base"]}
    styles, used = {}, set()
    for i, arm in enumerate(arms):
        group = groups.get(arm, "control")
        # the first baseline and the first barrier arm keep the group colours
        if group in ("baseline", "barrier") and group not in used:
            colour = GROUP_COLOURS[group]
            used.add(group)
        else:
            colour = reserved.get(group) or others[(i - len(used)) % len(others)]
        styles[arm] = {
            "color": colour,
            "marker": MARKERS[i % len(MARKERS)],
            "linestyle": LINESTYLES[i % len(LINESTYLES)],
            "linewidth": max(1.0, 3.2 - 0.5 * i),
            "zorder": 3 + i,
        }
    return styles


def ordered_arms(arms, groups: dict[str, str]) -> list[str]:
    rank = {"base": 0, "baseline": 1, "barrier": 2, "control": 3}
    return sorted(set(arms), key=lambda a: (rank.get(groups.get(a, "control"), 4), a))


def binned_ci(df: pd.DataFrame, x: str, y: str, bins: np.ndarray):
    """Per bin of ``x``: centre, mean, lo, hi of ``y`` clustered by training seed (bins with
    fewer than 2 values left out)."""
    which = np.digitize(df[x].to_numpy(float), bins[1:-1])
    out = []
    for i in range(len(bins) - 1):
        part = df[which == i]
        if len(part) < 2:
            continue
        ci = ci_by_seed(part, y)
        if ci is not None:
            out.append(((bins[i] + bins[i + 1]) / 2, *ci))
    return np.array(out).reshape(-1, 4)


def errorbar_line(ax, table: np.ndarray, style: dict, label: str, dodge: float = 0.0) -> None:
    if not len(table):
        return
    x, mean, lo, hi = table.T
    ax.errorbar(
        x + dodge,
        mean,
        yerr=[mean - lo, hi - mean],
        capsize=3,
        markersize=5,
        label=label,
        **style,
    )


# --- the data -------------------------------------------------------------------------------


def load_logs(run_dirs: list[Path]) -> tuple[dict[str, dict], pd.DataFrame]:
    """run.json per run, and every run's training log in one frame with its arm and seed."""
    runs, frames = {}, []
    for d in run_dirs:
        run = json.loads((d / "run.json").read_text())
        runs[d.name] = run
        log = pq.read_table(d / "train_log.parquet").to_pandas()
        if log.empty:
            continue
        log["run_id"] = d.name
        log["arm"] = arm_of_run(run)
        log["group"] = group_of_run(run)
        log["train_seed"] = run.get("seed", 0)
        frames.append(log)
    logs = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return runs, logs


def arm_groups(logs: pd.DataFrame, per_sample: pd.DataFrame) -> dict[str, str]:
    groups = {}
    for df in (logs, per_sample):
        if not df.empty:
            groups |= dict(zip(df["arm"], df["group"], strict=True))
    return groups


# --- the figures ----------------------------------------------------------------------------


def p1_figure(logs: pd.DataFrame, groups, stem: Path, record: dict) -> list[Path]:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    if logs.empty:
        return empty_figure(fig, axes, "no training log: the grid has no fine-tune", stem, record)
    arms = ordered_arms(logs["arm"], groups)
    styles = arm_styles(arms, groups)
    width = T_BINS[1] - T_BINS[0]
    for k, arm in enumerate(arms):
        part = logs[logs["arm"] == arm]
        dodge = (k - (len(arms) - 1) / 2) * width * 0.08
        label = arm + (" (w logged, not applied)" if groups.get(arm) == "baseline" else "")
        for ax, key in zip(axes, ("w", "H"), strict=True):
            errorbar_line(ax, binned_ci(part, "t", key, T_BINS), styles[arm], label, dodge)
    for ax in axes:
        ax.axvspan(0, LOW_T, color="tab:green", alpha=0.06, zorder=0)
        ax.axvspan(HIGH_T, 1, color="tab:purple", alpha=0.06, zorder=0)
        ax.grid(alpha=0.3)
        ax.set_xlim(0, 1)
    axes[0].set(xlabel="t (1 = pure noise)", ylabel="w (Eq.4)", title="P1: w against noise level")
    axes[1].set(xlabel="t (1 = pure noise)", ylabel="H (Eq.3)", title="Normalised entropy H")
    axes[0].legend(fontsize=7, loc="best")
    fig.text(
        0.5,
        -0.02,
        f"P1 compares t < {LOW_T} (green) with t > {HIGH_T} (purple) on the barrier runs.",
        ha="center",
        fontsize=8,
    )
    return save_figure(fig, stem, record)


def p2_figure(per_sample: pd.DataFrame, per_prompt: pd.DataFrame, stem, record) -> list[Path]:
    names = ["vendi", *(n for n, s in METRICS.items() if s.table2)]
    ncols = 3
    nrows = -(-len(names) // ncols)
    fig, grid = plt.subplots(nrows, ncols, figsize=(12, 3.4 * nrows), squeeze=False)
    axes = grid.ravel()[: len(names)]
    for ax in grid.ravel()[len(names) :]:
        ax.axis("off")

    def sweep(df):
        df = df[
            df["group"].isin(["baseline", "barrier"]) & (df["scheme"].isin(["none", "eisbach"]))
        ]
        return df.assign(lam_x=np.where(df["group"] == "baseline", 0.0, df["lam"].astype(float)))

    sources = {"vendi": sweep(per_prompt)} | {n: sweep(per_sample) for n in names[1:]}
    drawn = False
    for ax, name in zip(axes, names, strict=True):
        df = sources[name]
        for j, (adapter, part) in enumerate(df.groupby("adapter")):
            rows = []
            for lam, at in part.groupby("lam_x"):
                ci = ci_by_seed(at, name)
                if ci is not None:
                    rows.append((lam, *ci))
            if not rows:
                continue
            drawn = True
            table = np.array(rows)
            ax.errorbar(
                table[:, 0] + 0.01 * j,
                table[:, 1],
                yerr=[table[:, 1] - table[:, 2], table[:, 3] - table[:, 1]],
                marker=MARKERS[j],
                linestyle=LINESTYLES[j],
                capsize=3,
                label=str(adapter),
            )
        ax.axvspan(*P2_BAND, color="tab:gray", alpha=0.15, label="paper's band 0.3-0.7")
        ax.axvline(P2_COLLAPSE, color="k", linestyle=":", linewidth=1, label="collapse > 0.8")
        unit = METRICS[name].unit if name in METRICS else "Vendi score"
        ax.set(xlabel="λ", title=name, ylabel=unit, xlim=(-0.05, 1.0))
        ax.grid(alpha=0.3)
    if not drawn:
        empty_panel(axes[0], "no sampled none/eisbach run")
    axes[0].legend(fontsize=7)
    fig.suptitle("P2: diversity and structure against λ", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, stem, record)


def p3_figure(per_prompt: pd.DataFrame, groups, stem: Path, record: dict) -> list[Path]:
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    df = per_prompt[per_prompt["group"].isin(["baseline", "barrier", "base"])]
    df = df[finite(df["vendi"]) & finite(df["consistency"])]
    if df.empty:
        empty_panel(ax, "no prompt sampled with two or more seeds")
        return save_figure(fig, stem, record)
    arms = ordered_arms(df["arm"], groups)
    styles = arm_styles(arms, groups)
    twins = df[df["group"] == "baseline"].set_index(["adapter", "train_seed", "prompt_id"])
    for _, row in df[df["group"] == "barrier"].iterrows():
        key = (row["adapter"], row["train_seed"], row["prompt_id"])
        if key in twins.index:
            twin = twins.loc[key]
            ax.plot(
                [twin["vendi"], row["vendi"]],
                [twin["consistency"], row["consistency"]],
                color="0.7",
                linewidth=0.6,
                zorder=1,
            )
    for arm in arms:
        part = df[df["arm"] == arm]
        s = styles[arm]
        ax.scatter(part["vendi"], part["consistency"], color=s["color"], marker=s["marker"],
                   alpha=0.45, s=22, zorder=2)  # fmt: skip
        # the base model has no training seed: its prompts are its clusters
        seed_col = "train_seed" if groups.get(arm) != "base" else "prompt_id"
        cx, cy = ci_by_seed(part, "vendi", seed_col), ci_by_seed(part, "consistency", seed_col)
        if cx is None or cy is None:
            continue
        ax.errorbar(
            cx[0],
            cy[0],
            xerr=[[cx[0] - cx[1]], [cx[2] - cx[0]]],
            yerr=[[cy[0] - cy[1]], [cy[2] - cy[0]]],
            color=s["color"],
            marker=s["marker"],
            markersize=9,
            markeredgecolor="k",
            capsize=4,
            linewidth=1.8,
            zorder=s["zorder"],
            label=f"{arm} (n={len(part)})",
        )
    ax.set(
        xlabel="Vendi score across sampling seeds (detail diversity)",
        ylabel="cross-seed SSM correlation (structural consistency)",
        title="P3: consistency against diversity",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save_figure(fig, stem, record)


def p4_figure(per_sample: pd.DataFrame, groups, stem: Path, record: dict) -> list[Path]:
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), width_ratios=[2, 1])
    df = per_sample[per_sample["group"].isin(["baseline", "barrier"])]
    df = df[finite(df["pca_coverage"])]
    arms = sorted(
        set(df["arm"]), key=lambda a: (a.split(" · ")[-1], groups.get(a) != "baseline", a)
    )
    rng = np.random.default_rng(SEED)
    for i, arm in enumerate(arms):
        part = df[df["arm"] == arm]
        colour = GROUP_COLOURS[groups.get(arm, "control")]
        left.scatter(i + rng.uniform(-0.15, 0.15, len(part)), part["pca_coverage"], s=12,
                     alpha=0.4, color=colour)  # fmt: skip
        ci = ci_by_seed(part, "pca_coverage")
        if ci is not None:
            left.errorbar(i + 0.3, ci[0], yerr=[[ci[0] - ci[1]], [ci[2] - ci[0]]], color="k",
                          marker="_", markersize=14, capsize=4)  # fmt: skip
    left.set_xticks(range(len(arms)), arms, rotation=20, ha="right", fontsize=8)
    left.set(ylabel="PCA coverage (π√(λ1 λ2))", title="P4: PCA coverage by adapter")
    left.grid(alpha=0.3, axis="y")
    if not arms:
        empty_panel(left, "no sampled baseline or barrier run")

    barrier = df[df["group"] == "barrier"]
    key = ["lam", "train_seed", "prompt_id", "seed"]
    paired = barrier[barrier["adapter"] == "dora"].merge(
        barrier[barrier["adapter"] == "lora"], on=key, suffixes=("_dora", "_lora")
    )
    if paired.empty:
        adapters = sorted(set(barrier["adapter"]))
        empty_panel(right, f"needs sampled LoRA and DoRA barrier runs; this grid has {adapters}")
    else:
        paired["diff"] = paired["pca_coverage_dora"] - paired["pca_coverage_lora"]
        for i, (_, part) in enumerate(paired.groupby("lam")):
            right.scatter(i + rng.uniform(-0.15, 0.15, len(part)), part["diff"], s=12, alpha=0.5,
                          color=GROUP_COLOURS["barrier"])  # fmt: skip
            ci = ci_by_seed(part, "diff")
            if ci is not None:
                right.errorbar(i + 0.3, ci[0], yerr=[[ci[0] - ci[1]], [ci[2] - ci[0]]],
                               color="k", marker="_", markersize=14, capsize=4)  # fmt: skip
        right.set_xticks(range(paired["lam"].nunique()),
                         [f"eisbach λ{v:g}" for v in sorted(paired["lam"].unique())])  # fmt: skip
        right.axhline(0, color="k", linewidth=0.8)
        right.set(ylabel="DoRA − LoRA coverage (paired)", title="P4 predicts > 0")
        right.grid(alpha=0.3, axis="y")
    return save_figure(fig, stem, record)


def correlation_ci(h: np.ndarray, loss: np.ndarray, n_boot: int = N_BOOT):
    """Pearson r of (h, loss) with a percentile bootstrap CI over the pairs, or None."""
    n = len(h)
    if n < 4 or h.std() == 0 or loss.std() == 0:
        return None
    idx = np.random.default_rng(SEED).integers(0, n, size=(n_boot, n))
    a, b = h[idx], loss[idx]
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (a * b).sum(axis=1) / np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    r = r[np.isfinite(r)]
    lo, hi = np.quantile(r, [ALPHA / 2, 1 - ALPHA / 2])
    return float(np.corrcoef(h, loss)[0, 1]), float(lo), float(hi)


def p5_figure(logs: pd.DataFrame, groups, stem: Path, record: dict) -> list[Path]:
    fig, ax = plt.subplots(figsize=(7, 4.2))
    if logs.empty:
        empty_panel(ax, "no training log: the grid has no fine-tune")
        return save_figure(fig, stem, record)
    arms = ordered_arms(logs["arm"], groups)
    styles = arm_styles(arms, groups)
    which = np.digitize(logs["t"].to_numpy(float), P5_BINS[1:-1])
    width = P5_BINS[1] - P5_BINS[0]
    for k, arm in enumerate(arms):
        rows = []
        for i in range(len(P5_BINS) - 1):
            part = logs[(which == i) & (logs["arm"] == arm).to_numpy()]
            ci = correlation_ci(part["H"].to_numpy(float), part["raw_loss"].to_numpy(float))
            if ci is not None:
                rows.append(((P5_BINS[i] + P5_BINS[i + 1]) / 2, *ci))
        dodge = (k - (len(arms) - 1) / 2) * width * 0.06
        errorbar_line(ax, np.array(rows).reshape(-1, 4), styles[arm], arm, dodge)
    ax.axhline(0, color="k", linewidth=0.8)
    ax.set(
        xlabel="t (1 = pure noise)",
        ylabel="corr(H, raw loss)",
        title="P5: corr(H, loss) per t-bin",
        xlim=(0, 1),
        ylim=(-1.05, 1.05),
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save_figure(fig, stem, record)


def log_snr(objective: str, t: np.ndarray) -> np.ndarray:
    import torch

    from eisbach.objectives import log_snr as torch_log_snr

    return torch_log_snr(objective, torch.from_numpy(np.asarray(t, np.float64))).numpy()


def entropy_transition(centres: np.ndarray, mean_h: np.ndarray):
    """(log-SNR, dH/dlogSNR) of the steepest change of the binned mean H, or None."""
    if len(centres) < 2:
        return None
    slope = np.diff(mean_h) / np.diff(centres)
    i = int(np.argmax(np.abs(slope)))
    return float((centres[i] + centres[i + 1]) / 2), float(slope[i])


def logsnr_figure(logs: pd.DataFrame, objective: str, stem: Path, record: dict) -> list[Path]:
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    barrier = logs[logs["group"] == "barrier"] if not logs.empty else logs
    if barrier.empty:
        return empty_figure(fig, axes, "no eisbach run with λ > 0", stem, record)
    df = barrier.assign(log_snr=log_snr(objective, barrier["t"].to_numpy()))
    lo, hi = np.quantile(df["log_snr"], [0.01, 0.99])
    bins = np.linspace(lo, hi, 13)
    tables_ = {}
    for ax, key in zip(axes[:2], ("H", "w"), strict=True):
        ax.scatter(df["log_snr"], df[key], s=4, alpha=0.15, color=GROUP_COLOURS["barrier"])
        tables_[key] = binned_ci(df, "log_snr", key, bins)
        errorbar_line(ax, tables_[key], {"color": "k", "marker": "o"}, "bin mean, 95 % CI")
        ax.set(xlabel=f"log-SNR ({objective}; high = clean)", ylabel=key)
        ax.grid(alpha=0.3)
    axes[0].set_title("H against log-SNR (eisbach runs)")
    axes[1].set_title("w against log-SNR")
    h = tables_["H"]
    if len(h) >= 2:
        centres = (h[1:, 0] + h[:-1, 0]) / 2
        axes[2].plot(centres, np.diff(h[:, 1]) / np.diff(h[:, 0]), "-o", color="k")
        found = entropy_transition(h[:, 0], h[:, 1])
        for ax in axes:
            ax.axvline(found[0], color="tab:purple", linestyle="--", linewidth=1)
        axes[2].set_title(f"dH/d log-SNR: steepest at {found[0]:.2f}")
    else:
        empty_panel(axes[2], "fewer than two log-SNR bins")
    axes[2].axhline(0, color="k", linewidth=0.6)
    axes[2].set(xlabel="log-SNR", ylabel="dH / d log-SNR")
    axes[2].grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    return save_figure(fig, stem, record)


def ssm_of(path: str, sha256: str | None, cache) -> np.ndarray | None:
    """The metric's fixed-size SSM of one clip, from the evaluate stage's cache when there."""
    from eisbach.metrics import analyse

    found = cache.get(sha256) if cache is not None and sha256 else None
    if found is None:
        audio, rate = sf.read(path, dtype="float32", always_2d=True)
        found = analyse(audio.mean(axis=1), rate)
    return found.ssm


def ssm_figure(per_sample: pd.DataFrame, groups, cache, stem: Path, record) -> list[Path]:
    prompts = sorted(per_sample["prompt_id"].unique()) if not per_sample.empty else []
    arms = ordered_arms(per_sample["arm"], groups) if not per_sample.empty else []
    fig, axes = plt.subplots(
        max(1, len(prompts)),
        max(1, len(arms)),
        figsize=(1.9 * max(1, len(arms)) + 0.5, 1.9 * max(1, len(prompts)) + 0.6),
        squeeze=False,
    )
    image = None
    for i, prompt in enumerate(prompts):
        for j, arm in enumerate(arms):
            ax = axes[i, j]
            part = per_sample[(per_sample["prompt_id"] == prompt) & (per_sample["arm"] == arm)]
            part = part.sort_values(["train_seed", "seed"], na_position="first")
            ssm = (
                None if part.empty else ssm_of(part.iloc[0]["path"], part.iloc[0]["sha256"], cache)
            )
            if ssm is None:
                empty_panel(ax, "silent" if not part.empty else "not sampled")
            else:
                image = ax.imshow(ssm, origin="lower", cmap="viridis", vmin=0, vmax=1)
                ax.set_xticks([])
                ax.set_yticks([])
            if i == 0:
                ax.set_title(arm, fontsize=7)
            if j == 0:
                ax.set_ylabel(prompt, fontsize=7)
    if image is None:
        empty_panel(axes[0, 0], "no sample")
    else:
        fig.colorbar(image, ax=axes, shrink=0.6, label="similarity")
    fig.suptitle("Self-similarity: prompt × arm", fontsize=10)
    return save_figure(fig, stem, record)


def training_curves_figure(logs: pd.DataFrame, groups, stem: Path, record) -> list[Path]:
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    if logs.empty:
        return empty_figure(fig, axes, "no training log", stem, record)
    arms = ordered_arms(logs["arm"], groups)
    styles = arm_styles(arms, groups)
    for rid, part in logs.groupby("run_id"):
        per_step = part.groupby("step")[["raw_loss", "w", "applied_weight"]].mean()
        smooth = per_step.rolling(5, min_periods=1).mean()
        s = styles[part["arm"].iloc[0]]
        seed = int(part["train_seed"].iloc[0])
        kw = {
            "color": s["color"],
            "linestyle": LINESTYLES[seed % len(LINESTYLES)],
            "zorder": s["zorder"],
            "linewidth": s["linewidth"],
        }
        for ax, key in zip(axes, ("raw_loss", "w", "applied_weight"), strict=True):
            ax.plot(smooth.index, smooth[key], label=rid, **kw)
    for ax, key in zip(axes, ("raw loss", "mean w", "mean applied weight s"), strict=True):
        ax.set(xlabel="step", ylabel=key, title=key)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=6)
    return save_figure(fig, stem, record)


def spread_figure(logs: pd.DataFrame, stem: Path, record: dict) -> list[Path]:
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    if logs.empty:
        return empty_figure(fig, axes, "no training log", stem, record)
    for rid, part in logs.groupby("run_id"):
        for ax, key in zip(axes, ("H", "w", "applied_weight"), strict=True):
            ax.hist(part[key], bins=40, histtype="step", label=rid)
    for ax, key in zip(axes, ("H", "w", "applied weight s"), strict=True):
        ax.set(xlabel=key, ylabel="logged samples", title=f"Spread of {key}")
    axes[-1].legend(fontsize=6)
    return save_figure(fig, stem, record)


def metrics_figure(per_sample: pd.DataFrame, stem: Path, record: dict) -> list[Path]:
    names = [n for n, s in METRICS.items() if s.table2]
    order = [g for g in ("base", "baseline", "barrier", "control") if g in set(per_sample["group"])]
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.4), squeeze=False)
    if per_sample.empty:
        return empty_figure(fig, axes, "no sample", stem, record)
    for ax, name in zip(axes[0], names, strict=True):
        data = [per_sample.loc[per_sample["group"] == g, name].dropna().to_numpy() for g in order]
        ax.boxplot(data, tick_labels=order)
        ax.set_title(name, fontsize=9)
        ax.set_ylabel(METRICS[name].unit)
        ax.tick_params(axis="x", labelsize=7)
    return save_figure(fig, stem, record)


def spectrogram(audio_path: str, path: Path, record: dict) -> None:
    audio, rate = sf.read(audio_path, dtype="float32", always_2d=True)
    fig, ax = plt.subplots(figsize=(4.2, 1.8))
    ax.specgram(audio.mean(axis=1), NFFT=1024, Fs=rate, noverlap=512, cmap="magma")
    ax.set(xlabel="s", ylabel="Hz")
    ax.tick_params(labelsize=6)
    ax.xaxis.label.set_size(7)
    ax.yaxis.label.set_size(7)
    metadata = {"Software": "eisbach", "Comment": json.dumps(record, sort_keys=True)}
    with atomic_path(path, suffix=".tmp.png") as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", metadata=metadata)
    plt.close(fig)


def spectrogram_path(figures_dir: Path, row) -> Path:
    return Path(figures_dir) / "spectrograms" / row["run_id"] / (Path(row["path"]).stem + ".png")


# Beside the run folders; no run id has a leading underscore (eisbach.grid).
REFERENCE_FOLDER = "_training_music"


def reference_clips(summary: dict) -> dict[str, dict]:
    """The clips of ``summary["prompt_references"]`` by id, each once though several prompts
    may ask for it."""
    return {c["id"]: c for clips in summary.get("prompt_references", {}).values() for c in clips}


def reference_spectrogram_path(figures_dir: Path, clip: dict) -> Path:
    """Where a clip of ``summary["prompt_references"]`` (the music a prompt asks for) has its
    spectrogram."""
    return Path(figures_dir) / "spectrograms" / REFERENCE_FOLDER / f"{clip['id']}.png"


def with_arms(df: pd.DataFrame) -> pd.DataFrame:
    if df.empty:
        return df.assign(arm=[])
    return df.assign(arm=[arm_of_row(r) for r in df.to_dict("records")])


def build_figures(
    figures_dir: Path,
    per_sample: pd.DataFrame,
    per_prompt: pd.DataFrame,
    run_dirs: list[Path],
    objective: str,
    record: dict,
    cache=None,
) -> dict[str, list[Path]]:
    """Every figure of ``FIGURES`` under figures_dir; stem -> the files written."""
    _, logs = load_logs(run_dirs)
    per_sample, per_prompt = with_arms(per_sample), with_arms(per_prompt)
    groups = arm_groups(logs, per_sample)
    out = Path(figures_dir)
    makers: dict[str, Callable[[Path], list[Path]]] = {
        "p1_weight_vs_t": lambda p: p1_figure(logs, groups, p, record),
        "p2_lambda_sweep": lambda p: p2_figure(per_sample, per_prompt, p, record),
        "p3_consistency_vs_diversity": lambda p: p3_figure(per_prompt, groups, p, record),
        "p4_pca_coverage": lambda p: p4_figure(per_sample, groups, p, record),
        "p5_corr_h_loss": lambda p: p5_figure(logs, groups, p, record),
        "entropy_vs_logsnr": lambda p: logsnr_figure(logs, objective, p, record),
        "ssm_grid": lambda p: ssm_figure(per_sample, groups, cache, p, record),
        "training_curves": lambda p: training_curves_figure(logs, groups, p, record),
        "weight_spread": lambda p: spread_figure(logs, p, record),
        "metrics_by_group": lambda p: metrics_figure(per_sample, p, record),
    }
    assert makers.keys() == FIGURES.keys()
    return {stem: make(out / stem) for stem, make in makers.items()}


def main(argv=None) -> None:
    from eisbach.score_cache import ScoreCache

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--summary", type=Path, required=True)
    parser.add_argument("--per-sample", type=Path, required=True)
    parser.add_argument("--per-prompt", type=Path, required=True)
    parser.add_argument("--latents-manifest", type=Path, required=True,
                        help="the latent store's manifest: the backend's objective")  # fmt: skip
    parser.add_argument("--runs", type=Path, nargs="+", required=True)
    parser.add_argument("--figures-dir", type=Path, required=True)
    parser.add_argument("--tables-dir", type=Path, required=True)
    parser.add_argument("--analysis-cache", type=Path,
                        help="the evaluate stage's analyses, to reuse their SSMs")  # fmt: skip
    args = parser.parse_args(argv)

    summary = json.loads(args.summary.read_text())
    record = provenance.provenance({"summary": summary["provenance"]["config_hash"]})
    objective = json.loads(args.latents_manifest.read_text())["objective"]
    per_sample = pq.read_table(args.per_sample).to_pandas()
    per_prompt = pq.read_table(args.per_prompt).to_pandas()

    tables.write_table(tables.table2_frame(summary), args.tables_dir, "table2", record)
    tables.write_table(tables.predictions_frame(summary), args.tables_dir, "predictions", record)
    tables.write_table(tables.controls_frame(summary), args.tables_dir, "controls", record)
    cache = ScoreCache(args.analysis_cache) if args.analysis_cache else None
    references = reference_clips(summary)
    # every clip drawn here is the one evaluate scored: a WAV changed since reads as an error
    for row in per_sample.to_dict("records"):
        verify_file(row["path"], row["sha256"], record=args.per_sample, rule="sample_run")
    for clip in references.values():
        verify_file(clip["path"], clip["sha256"], record=args.summary, rule="data_shard")
    written = build_figures(
        args.figures_dir, per_sample, per_prompt, args.runs, objective, record, cache
    )
    for row in per_sample.to_dict("records"):
        spectrogram(row["path"], spectrogram_path(args.figures_dir, row), record)
    for clip in references.values():
        spectrogram(clip["path"], reference_spectrogram_path(args.figures_dir, clip), record)
    print(
        f"figures: {sum(map(len, written.values()))} files, "
        f"{len(per_sample) + len(references)} spectrograms"
    )
    print(f"tables: table2, predictions, controls -> {args.tables_dir}")
