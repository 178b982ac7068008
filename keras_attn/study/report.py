"""The study report: `report.md` and its figures, written from the grid's tables.

Every sentence about an effect is generated from a computed interval and its
verdict (see `keras_attn.study.stats`), so the text cannot claim more than the
numbers: an effect whose interval includes 0 is reported as "within noise".

Figures are drawn on `matplotlib.figure.Figure` objects, which render with Agg
when saved: no pyplot, so no global backend switch and no figure registry that
would keep every figure of a long study alive.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from keras_attn.study import stats
from keras_attn.training.files import atomic_write_text

log = logging.getLogger(__name__)

MINUS = "\u2212"
DASH = "\u2014"
HEATMAP_CLIPS = 16
# How the verdict of each paired metric reads in a sentence.
VERDICT_WORDS = {
    "fluctuation": {"better": "more stable", "worse": "less stable"},
    "gap_accuracy": {"better": "smaller gap", "worse": "larger gap"},
}
METRIC_NAMES = {
    "best_val_accuracy": "best val acc",
    "final_val_accuracy": "final val acc",
    "fluctuation": "fluctuation",
    "gap_accuracy": "train−val accuracy gap",
}
FOCUS_NAMES = {
    "focus_attention": "attention-map mass in the box",
    "focus_gradcam": "Grad-CAM mass in the box",
    "focus_temporal": "temporal weight on in-sign frames",
}


# --------------------------------------------------------------------------- formatting


def _f(x, digits: int = 3) -> str:
    """A number with a true minus sign; a dash for NaN/None."""
    if x is None or (isinstance(x, float) and math.isnan(x)) or pd.isna(x):
        return DASH
    return f"{float(x):.{digits}f}".replace("-", MINUS)


def _signed(x, digits: int = 3) -> str:
    text = _f(x, digits)
    return text if text == DASH or text.startswith(MINUS) else "+" + text


def _bound(x, digits: int) -> str:
    # A bound that rounds to 0 but is not 0 decides a verdict: keep its sign visible.
    if not pd.isna(x) and 0 < abs(x) < 0.5 * 10**-digits:
        return f"{float(x):.1e}".replace("-", MINUS)
    return _f(x, digits)


def _ci(low, high, digits: int = 3) -> str:
    return f"[{_bound(low, digits)}, {_bound(high, digits)}]"


def _mean_std_ci(mean, std, low, high, n) -> str:
    """ "0.812 ± 0.013 [0.79, 0.83]"; one seed has no spread, so only "(n=1)"."""
    if not n:
        return DASH
    if n == 1:
        return f"{_f(mean)} (n=1)"
    return f"{_f(mean)} ± {_f(std)} {_ci(low, high, 2)}"


def _diff_phrase(row: pd.Series) -> str:
    """ "+0.021 [−0.004, 0.046]": a paired difference with its interval."""
    if row["n"] < 2:
        return f"{_signed(row['mean_diff'])} (n={int(row['n'])})"
    return f"{_signed(row['mean_diff'])} {_ci(row['low'], row['high'])}"


def _word(metric: str, verdict: str) -> str:
    return VERDICT_WORDS.get(metric, {}).get(verdict, verdict)


def _duration(seconds: float) -> str:
    if pd.isna(seconds):
        return DASH
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def _cell(value) -> str:
    # A pipe or a newline inside a cell would break the markdown table.
    return str(value).replace("|", "\\|").replace("\n", " ")


def md_table(header: list[str], rows: list[list]) -> str:
    """A GitHub-flavoured markdown table (pandas' to_markdown needs tabulate)."""
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |"]
    lines.append("|" + "|".join("---" for _ in header) + "|")
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _join(names) -> str:
    names = list(names)
    return ", ".join(str(n) for n in names) if names else "none"


# --------------------------------------------------------------------------- figures


def _colors(variants) -> dict:
    # One colour per variant, the same in every figure.
    return {v: f"C{i % 10}" for i, v in enumerate(variants)}


def _has(curves: pd.DataFrame, column: str) -> bool:
    return column in curves and bool(curves[column].notna().any())


def _band(ax, curve: pd.DataFrame, column: str, color: str, label=None, style="-") -> None:
    """Mean over seeds per epoch with a ±std band (no band where one seed)."""
    agg = curve.groupby("epoch")[column].agg(["mean", "std"]).dropna(subset=["mean"])
    if agg.empty:
        return
    x = agg.index.to_numpy(float)
    ax.plot(x, agg["mean"], style, color=color, label=label)
    ax.fill_between(x, agg["mean"] - agg["std"], agg["mean"] + agg["std"], color=color, alpha=0.2)


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=100)
    return path


def _panels(n: int, width: float = 6.0, height: float = 4.0):
    fig = Figure(figsize=(width * n, height), layout="constrained")
    return fig, fig.subplots(1, n, squeeze=False)[0]


def plot_learning_curves(curves, variants, chance, path: Path) -> Path | None:
    """Val accuracy (and training loss when logged) per variant: mean ± std over seeds."""
    if not _has(curves, "val_accuracy"):
        return None
    columns = ["val_accuracy"] + (["loss"] if _has(curves, "loss") else [])
    fig, axes = _panels(len(columns))
    colors = _colors(variants)
    for ax, column in zip(axes, columns, strict=True):
        for v in variants:
            _band(ax, curves[curves["variant"] == v], column, colors[v], label=v)
        ax.set_xlabel("epoch")
        ax.set_ylabel(column.replace("_", " "))
    if chance is not None and not pd.isna(chance):
        axes[0].axhline(chance, color="k", linestyle="--", linewidth=1, label="chance")
    axes[0].legend(fontsize="small")
    axes[0].set_title("validation accuracy (mean ± std over seeds)")
    if len(axes) > 1:
        axes[1].set_title("training loss")
    return _save(fig, path)


def _log_if_positive(ax, curves: pd.DataFrame, columns) -> None:
    # Gradient norms span orders of magnitude when a run nears divergence.
    values = pd.concat([curves[c] for c in columns if c in curves]).dropna()
    if len(values) and (values > 0).all():
        ax.set_yscale("log")


def plot_gradients(curves, variants, path: Path) -> Path | None:
    """Gradient norm (mean with band, max dotted) and per-epoch batch-loss std per variant."""
    grad = [c for c in ("grad_norm_mean", "grad_norm_max") if _has(curves, c)]
    loss_std = _has(curves, "batch_loss_std")
    if not grad and not loss_std:
        return None
    fig, axes = _panels(int(bool(grad)) + int(loss_std))
    colors = _colors(variants)
    for v in variants:
        curve = curves[curves["variant"] == v]
        if grad:
            if "grad_norm_mean" in grad:
                _band(axes[0], curve, "grad_norm_mean", colors[v], label=v)
            if "grad_norm_max" in grad:
                mean_max = curve.groupby("epoch")["grad_norm_max"].mean()
                axes[0].plot(mean_max.index, mean_max, ":", color=colors[v])
        if loss_std:
            _band(axes[-1], curve, "batch_loss_std", colors[v], label=v)
    if grad:
        _log_if_positive(axes[0], curves, grad)
        axes[0].set_title("gradient norm: mean ± std (solid), max (dotted)")
        axes[0].set_ylabel("global L2 norm")
    if loss_std:
        axes[-1].set_title("std of batch losses within the epoch")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.legend(fontsize="small")
    return _save(fig, path)


def plot_focus(curves, variants, path: Path) -> Path | None:
    """Each focus measure vs epoch per variant, with its chance level dashed."""
    measures = [m for m in stats.FOCUS_CHANCE if _has(curves, m)]
    if not measures:
        return None
    fig, axes = _panels(len(measures))
    colors = _colors(variants)
    for ax, measure in zip(axes, measures, strict=True):
        for v in variants:
            curve = curves[curves["variant"] == v]
            if _has(curve, measure):
                _band(ax, curve, measure, colors[v], label=v)
        chance = stats.FOCUS_CHANCE[measure]
        if _has(curves, chance):
            level = curves.groupby("epoch")[chance].mean()
            ax.plot(level.index, level, "k--", linewidth=1, label="chance")
        ax.set_title(FOCUS_NAMES[measure])
        ax.set_xlabel("epoch")
        ax.set_ylim(0, 1)
        ax.legend(fontsize="small")
    return _save(fig, path)


def _first_seed_file(runs: pd.DataFrame, variant, name: str):
    """(seed, path) of the lowest-seed run of `variant` that has `run_dir/name`, or None.

    Lowest seed first so every variant shows the same seed when it can; a later
    seed stands in when that run died before writing the file.
    """
    if "run_dir" not in runs:
        return None
    mine = runs[runs["variant"] == variant].sort_values("seed")
    for _, run in mine.iterrows():
        if isinstance(run["run_dir"], str) and run["run_dir"]:
            path = Path(run["run_dir"]) / name
            if path.is_file():
                return run["seed"], path
    return None


def plot_overlays(runs, variants, path: Path) -> Path | None:
    """Each variant's `focus.png` strip (lowest seed), stacked with the variant as title."""
    images = []
    for v in variants:
        found = _first_seed_file(runs, v, "focus.png")
        if found is None:
            continue
        try:
            images.append((f"{v} (seed {found[0]})", mpimg.imread(found[1])))
        except (OSError, ValueError) as err:
            log.warning("skipping unreadable %s: %s", found[1], err)
    if not images:
        return None
    width = 10.0
    heights = [width * img.shape[0] / img.shape[1] + 0.4 for _, img in images]
    fig = Figure(figsize=(width, sum(heights)), layout="constrained")
    axes = fig.subplots(len(images), 1, squeeze=False, height_ratios=heights)[:, 0]
    for ax, (title, img) in zip(axes, images, strict=True):
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None)
        ax.set_title(title)
        ax.axis("off")
    return _save(fig, path)


def _load_temporal(path: Path):
    """(weights, in_sign, mask) from a temporal_weights.npz; None if unreadable."""
    try:
        with np.load(path) as data:
            weights = np.asarray(data["weights"], dtype=float)
            mask = np.asarray(data["mask"], bool) if "mask" in data else np.ones_like(weights, bool)
            in_sign = np.asarray(data["in_sign"], bool) if "in_sign" in data else ~mask
    except (OSError, KeyError, ValueError) as err:
        log.warning("skipping unreadable %s: %s", path, err)
        return None
    if weights.ndim != 2 or weights.shape != mask.shape or weights.shape != in_sign.shape:
        log.warning("skipping %s: weights, in_sign and mask must share one (N, T) shape", path)
        return None
    return weights, in_sign, mask


def _temporal_row(ax_mean, ax_heat, weights, in_sign, mask, title: str) -> None:
    """Mean weight per frame with in-sign rate shaded; heatmap of the first clips."""
    positions = np.arange(weights.shape[1])
    # Padded frames (mask False) are not frames: average over the real ones only.
    count = mask.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(mask, weights, 0).sum(axis=0) / count
        rate = (mask & in_sign).sum(axis=0) / count
    for t, r in zip(positions, rate, strict=True):
        if not np.isnan(r):
            ax_mean.axvspan(t - 0.5, t + 0.5, color="C2", alpha=0.4 * r, linewidth=0)
    ax_mean.plot(positions, mean, "o-", color="C0", label="mean weight")
    # Uniform over each clip's real frames, which padding makes fewer than T.
    uniform = float(np.mean(1 / np.maximum(mask.sum(axis=1), 1)))
    ax_mean.axhline(uniform, color="k", linestyle="--", linewidth=1, label="uniform")
    ax_mean.set_title(f"{title}: mean weight (green: share of clips in sign)")
    ax_mean.set_xlabel("frame position")
    ax_mean.legend(fontsize="small")
    clips = slice(0, HEATMAP_CLIPS)
    image = ax_heat.imshow(np.ma.masked_where(~mask[clips], weights[clips]), aspect="auto")
    rows, cols = np.nonzero(in_sign[clips] & mask[clips])
    ax_heat.scatter(cols, rows, s=6, c="w", marker="o", label="in sign")
    ax_heat.set_title(f"{title}: first clips (dots: in sign)")
    ax_heat.set_xlabel("frame position")
    ax_heat.set_ylabel("clip")
    ax_heat.figure.colorbar(image, ax=ax_heat)


def plot_temporal_weights(runs, variants, path: Path) -> Path | None:
    """Per variant (lowest seed): temporal weights against where the sign is."""
    loaded = []
    for v in variants:
        found = _first_seed_file(runs, v, "temporal_weights.npz")
        arrays = _load_temporal(found[1]) if found else None
        if arrays is not None:
            loaded.append((f"{v} (seed {found[0]})", arrays))
    if not loaded:
        return None
    fig = Figure(figsize=(12, 3.5 * len(loaded)), layout="constrained")
    axes = fig.subplots(len(loaded), 2, squeeze=False)
    for (ax_mean, ax_heat), (title, arrays) in zip(axes, loaded, strict=True):
        _temporal_row(ax_mean, ax_heat, *arrays, title)
    return _save(fig, path)


def write_figures(curves, runs, meta, variants, fig_dir: Path) -> dict[str, Path]:
    """All figures that the logged columns allow, by name; the others are skipped."""
    fig_dir.mkdir(parents=True, exist_ok=True)
    done = stats.completed_curves(curves, runs)
    made = {
        "learning_curves": plot_learning_curves(
            done, variants, meta.get("chance"), fig_dir / "learning_curves.png"
        ),
        "gradients": plot_gradients(done, variants, fig_dir / "gradients.png"),
        "focus": plot_focus(done, variants, fig_dir / "focus.png"),
        "overlays": plot_overlays(runs, variants, fig_dir / "overlays.png"),
        "temporal_weights": plot_temporal_weights(runs, variants, fig_dir / "temporal_weights.png"),
    }
    return {name: p for name, p in made.items() if p is not None}


FIGURE_CAPTIONS = {
    "learning_curves": "Validation accuracy and training loss, mean ± std over completed seeds; "
    "dashed: chance.",
    "gradients": "Global gradient norm (mean ± std over seeds; dotted: per-epoch max) and the std "
    "of batch losses within each epoch.",
    "focus": "Focus vs epoch, mean ± std over seeds; dashed: chance (the box's share).",
    "overlays": "Attention / Grad-CAM overlays of each variant's lowest-seed run.",
    "temporal_weights": "Temporal weights of each variant's lowest-seed run: mean weight per frame "
    "position (shading: share of clips whose sign covers that position) and the first clips.",
}


# --------------------------------------------------------------------------- analysis


class Study:
    """Everything the report says about one study, computed once."""

    def __init__(self, curves: pd.DataFrame, runs: pd.DataFrame, meta: dict):
        self.curves, self.runs, self.meta = curves, runs, meta
        self.kind = meta.get("kind", "?")
        self.baseline = meta.get("baseline")
        self.variants = stats.variant_order(runs, curves, self.baseline)
        self.others = [v for v in self.variants if v != self.baseline]
        self.stability = stats.per_variant_stability(curves, runs, self.baseline)
        self.seeds = stats.per_seed_metrics(curves, runs)
        self.n_seeds = runs["seed"].nunique() if len(runs) else 0
        # Higher accuracy is better; lower fluctuation and a smaller gap are better.
        self.diffs = {}
        for m in ("best_val_accuracy", "final_val_accuracy"):
            self.diffs[m] = stats.paired_differences(self.seeds, self.baseline, m, True)
        for m in ("fluctuation", "gap_accuracy"):
            if m in self.seeds:
                self.diffs[m] = stats.paired_differences(self.seeds, self.baseline, m, False)
        self.focus = stats.focus_above_chance(curves, runs)

    def failed(self) -> pd.DataFrame:
        return self.runs[self.runs["status"].isin(stats.FAILED)]

    def verdicts(self, metric: str) -> dict[str, list]:
        """Variant names grouped by their verdict on `metric`."""
        table = self.diffs.get(metric)
        groups: dict[str, list] = {}
        if table is not None:
            for variant, row in table.iterrows():
                groups.setdefault(row["verdict"], []).append(variant)
        return groups

    def verdict_summary(self, metric: str) -> str:
        groups = self.verdicts(metric)
        order = ("better", "worse", "within noise", "too few seeds")
        parts = [f"{_word(metric, w)}: {_join(groups[w])}" for w in order if w in groups]
        return "; ".join(parts) if parts else "no variant to compare"


# --------------------------------------------------------------------------- sections


def _summary(s: Study) -> str:
    st = s.stability
    n_done = int(st["n_completed"].sum()) if len(st) else 0
    n_failed = int(st["n_failed"].sum()) if len(st) else 0
    text = (
        f"The {s.kind} study trained {len(s.variants)} variants × {s.n_seeds} seeds "
        f"({len(s.runs)} runs: {n_done} completed, {n_failed} diverged or failed) under "
        f"identical settings on {s.meta.get('data', 'unknown data')}."
    )
    best = st["best_val_accuracy_mean"].dropna()
    if len(best):
        top = best.idxmax()
        row = st.loc[top]
        text += (
            f" Highest mean best val accuracy: {top}, "
            f"{_mean_std_ci(*(row[f'best_val_accuracy_{f}'] for f in stats.CI_FIELDS))}."
        )
    if s.others:
        text += (
            f" Paired by seed against the baseline {s.baseline}, best val acc: "
            f"{s.verdict_summary('best_val_accuracy')}; late-epoch fluctuation: "
            f"{s.verdict_summary('fluctuation')}."
        )
    return text


def _failure_text(failure) -> str:
    # An empty CSV cell reads back as NaN, which must not print as "nan".
    return "" if failure is None or pd.isna(failure) else str(failure)[:160]


def _setup(s: Study) -> str:
    meta = s.meta
    config = meta.get("config") or {}
    versions = meta.get("versions") or {}
    counts = s.runs["status"].value_counts()
    wall = s.runs["wall_seconds"].sum(min_count=1) if "wall_seconds" in s.runs else math.nan
    lines = [
        "## Setup",
        "",
        f"- Data: {meta.get('data', DASH)}",
        f"- Variants: {_join(s.variants)} (baseline: {s.baseline}); seeds: "
        f"{_join(sorted(s.runs['seed'].unique()))}",
        f"- Runs: {len(s.runs)} ("
        + ", ".join(f"{int(n)} {status}" for status, n in counts.items())
        + f"); diverged or failed: {len(s.failed())}",
        f"- Total wall time: {_duration(wall)}",
        "",
        "Command:",
        "",
        "```",
        str(meta.get("command", DASH)),
        "```",
        "",
        "Shared settings:",
        "",
        md_table(["setting", "value"], [[k, config[k]] for k in sorted(config)]),
        "",
        "Software:",
        "",
        md_table(["package", "version"], [[k, versions[k]] for k in sorted(versions)]),
    ]
    failed = s.runs[s.runs["status"] != stats.COMPLETED]
    if len(failed):
        lines += ["", "Runs that did not complete (counted, excluded from the statistics):", ""]
        rows = [
            [r["variant"], r["seed"], r["status"], _failure_text(r.get("failure"))]
            for _, r in failed.iterrows()
        ]
        lines.append(md_table(["variant", "seed", "status", "failure"], rows))
    return "\n".join(lines)


def _stability_table(s: Study) -> str:
    st = s.stability
    optional = [
        ("grad_norm_max", "max grad norm"),
        ("batch_loss_std", "batch loss std"),
        ("gap_accuracy", "train−val acc gap (final)"),
    ]
    optional = [(c, name) for c, name in optional if c in st and st[c].notna().any()]
    header = ["variant", "completed", "failed", "best val acc", "final val acc"]
    header += ["fluctuation", "epochs to 90%", "seed spread"] + [name for _, name in optional]
    rows = []
    for variant, r in st.iterrows():
        row = [variant, f"{int(r['n_completed'])}/{int(r['n_runs'])}", int(r["n_failed"])]
        for metric in ("best_val_accuracy", "final_val_accuracy"):
            row.append(_mean_std_ci(*(r[f"{metric}_{f}"] for f in stats.CI_FIELDS)))
        row += [_f(r["fluctuation"], 4), _f(r["epochs_to_90"], 1), _f(r["seed_spread"], 4)]
        row += [_f(r[c], 3) for c, _ in optional]
        rows.append(row)
    return "\n".join(
        [
            "## Stability",
            "",
            "Completed runs only; mean ± std [95% t-interval] over seeds. Fluctuation: std of the "
            "epoch-to-epoch changes of val accuracy over the last third of the epochs (lower is "
            "steadier). Epochs to 90%: first epoch reaching 90% of the run's best val accuracy. "
            "Seed spread: across-seed std of val accuracy, averaged over epochs.",
            "",
            md_table(header, rows),
        ]
    )


def _paired_tables(s: Study) -> str:
    lines = [
        "## Paired differences against the baseline",
        "",
        f"Variant − {s.baseline}, paired by seed over the seeds where both completed; 95% "
        't-interval. A verdict other than "within noise" needs an interval that excludes 0.',
    ]
    for metric in ("best_val_accuracy", "final_val_accuracy", "fluctuation"):
        table = s.diffs.get(metric)
        if table is None or table.empty:
            continue
        header = ["variant", "variant mean", f"{s.baseline} mean", "difference", "95% CI", "n"]
        rows = [
            [v, _f(r["variant_mean"], 4), _f(r["baseline_mean"], 4), _signed(r["mean_diff"], 4)]
            + [_ci(r["low"], r["high"], 4), int(r["n"]), _word(metric, r["verdict"])]
            for v, r in table.iterrows()
        ]
        lines += ["", f"### {METRIC_NAMES[metric]}", "", md_table(header + ["verdict"], rows)]
    if len(lines) == 3:
        lines += ["", f"No variant besides the baseline {s.baseline} has completed runs."]
    return "\n".join(lines)


def _figures(figures: dict[str, Path], out_dir: Path) -> str:
    lines = ["## Figures", ""]
    if not figures:
        return "\n".join(lines + ["No figure could be drawn from the logged columns."])
    for name, path in figures.items():
        rel = path.relative_to(out_dir).as_posix()
        lines += [f"![{name.replace('_', ' ')}]({rel})", "", f"*{FIGURE_CAPTIONS[name]}*", ""]
    return "\n".join(lines).rstrip()


def _focus_table(s: Study) -> str:
    lines = ["## Focus", ""]
    if s.focus.empty:
        return "\n".join(lines + ["No focus measure was logged in this study."])
    header = ["variant", "measure", "focus (final)", "chance", "focus − chance", "95% CI", "n"]
    rows = [
        [r["variant"], FOCUS_NAMES[r["measure"]], _f(r["focus"]), _f(r["chance"])]
        + [_signed(r["mean_diff"]), _ci(r["low"], r["high"]), int(r["n"]), r["verdict"]]
        for _, r in s.focus.iterrows()
    ]
    lines.append("Final-epoch focus of completed runs, paired with its chance level per seed.")
    return "\n".join(lines + ["", md_table(header + ["verdict"], rows)])


# --------------------------------------------------------------------------- key questions


def _variant_stability_sentence(s: Study, variant) -> str:
    parts = []
    fl = s.diffs.get("fluctuation")
    if fl is not None and variant in fl.index and fl.loc[variant, "n"] == 0:
        parts.append(f"no seed with a fluctuation for both it and {s.baseline}")
    elif fl is not None and variant in fl.index:
        r = fl.loc[variant]
        parts.append(
            f"fluctuation {_f(r['variant_mean'], 4)} vs {_f(r['baseline_mean'], 4)} for "
            f"{s.baseline}, difference {_diff_phrase(r)} across {_plural(int(r['n']), 'seed')} "
            f"({_word('fluctuation', r['verdict'])})"
        )
    acc = s.diffs["best_val_accuracy"]
    if variant in acc.index and acc.loc[variant, "n"] == 0:
        parts.append(f"no seed on which both it and {s.baseline} completed")
    elif variant in acc.index:
        r = acc.loc[variant]
        seeds = _plural(int(r["n"]), "seed")
        parts.append(
            f"best val acc {_diff_phrase(r)} over {s.baseline} across {seeds} {DASH} {r['verdict']}"
        )
    st = s.stability.loc[variant]
    parts.append(f"{int(st['n_failed'])} of {int(st['n_runs'])} runs diverged or failed")
    return f"{variant}: " + "; ".join(parts) + "."


def _stabilise_conclusion(s: Study) -> str:
    groups = s.verdicts("fluctuation")
    text = []
    if groups.get("better"):
        text.append(
            f"Lower late-epoch fluctuation than {s.baseline}, with an interval that excludes 0: "
            f"{_join(groups['better'])}."
        )
    slower = [
        v
        for v in groups.get("better", [])
        if s.stability.loc[v, "best_val_accuracy_mean"]
        < s.stability.loc[s.baseline, "best_val_accuracy_mean"]
    ]
    if slower:
        # A curve that has not climbed far yet is flat too: say so beside the verdict.
        means = ", ".join(f"{v} {_f(s.stability.loc[v, 'best_val_accuracy_mean'])}" for v in slower)
        text.append(
            f"But {_join(slower)} also reached a lower mean best val accuracy ({means} against "
            f"{_f(s.stability.loc[s.baseline, 'best_val_accuracy_mean'])} for {s.baseline}), so "
            "the steadier late curve may reflect slower learning rather than stabilisation."
        )
    if groups.get("worse"):
        text.append(f"Higher fluctuation than {s.baseline}: {_join(groups['worse'])}.")
    if not groups.get("better") and not groups.get("worse") and not groups.get("within noise"):
        text.append(
            f"Too few paired seeds (fewer than 2 per variant) to say whether attention changes "
            f"the fluctuation relative to {s.baseline}."
        )
    elif not groups.get("better") and not groups.get("worse"):
        text.append(
            f"No variant's fluctuation differs from {s.baseline} beyond seed noise, so this study "
            "does not show that attention stabilises training (nor that it destabilises it)."
        )
    base = s.stability.loc[s.baseline] if s.baseline in s.stability.index else None
    if base is not None and not pd.isna(base["grad_norm_max"]):
        maxes = ", ".join(f"{v} {_f(s.stability.loc[v, 'grad_norm_max'])}" for v in s.variants)
        text.append(f"Max gradient norm (mean over seeds, descriptive, no interval): {maxes}.")
    return " ".join(text)


def _question_stabilise(s: Study) -> str:
    head = "### (a) Does attention stabilise training?\n\n"
    if not s.others or s.baseline not in s.variants:
        return head + (
            f"Not answerable: the {s.kind} study needs runs of the baseline {s.baseline} and of "
            "at least one attention variant."
        )
    sentences = [_variant_stability_sentence(s, v) for v in s.others]
    return head + " ".join(sentences) + " " + _stabilise_conclusion(s)


def _study_digest(s: Study) -> str:
    """One sentence per study for the images-vs-video comparison."""
    groups = s.verdicts("best_val_accuracy")
    text = (
        f"In the {s.kind} study (baseline {s.baseline}, {_plural(s.n_seeds, 'seed')}), "
        f"{len(groups.get('better', []))} of {len(s.others)} variants beat the baseline's best "
        f"val accuracy beyond noise and {len(groups.get('worse', []))} fell below it "
        f"(best val acc {s.verdict_summary('best_val_accuracy')}; fluctuation "
        f"{s.verdict_summary('fluctuation')})."
    )
    for measure, rows in s.focus.groupby("measure", sort=False):
        parts = [
            f"{r['variant']} {_f(r['focus'])} vs {_f(r['chance'])} ({r['verdict']})"
            for _, r in rows.iterrows()
        ]
        name = FOCUS_NAMES[measure]
        text += f" {name[0].upper()}{name[1:]} vs chance: {', '.join(parts)}."
    return text


def _question_images_video(s: Study, other: Study | None) -> str:
    head = "### (b) How does attention differ between images and video?\n\n"
    if other is None:
        missing = "video" if s.kind == "image" else "image"
        return head + (
            f"Only the {s.kind} study was run, so this report cannot compare images and video. "
            f"{_study_digest(s)} Run `python -m keras_attn.study {missing}` and write the report "
            "with both studies to answer this question."
        )
    image, video = (s, other) if s.kind == "image" else (other, s)
    return head + (
        f"{_study_digest(image)} {_study_digest(video)} The two studies differ in data, "
        "backbone and variants (spatial attention on images, temporal heads on frozen frame "
        "features for video), so only the pattern of verdicts is comparable, not effect sizes."
    )


def _gap_sentence(s: Study) -> str:
    gaps = s.seeds[s.seeds["status"] == stats.COMPLETED]
    if "gap_accuracy" not in gaps or gaps["gap_accuracy"].isna().all():
        return "The generalisation gap (train − val accuracy) was not logged."
    parts, positive = [], []
    for v in s.variants:
        mean, std, low, high, n = stats.mean_ci(gaps.loc[gaps["variant"] == v, "gap_accuracy"])
        if n:
            parts.append(f"{v} {_f(mean)} {_ci(low, high)}")
        if n >= 2 and low > 0:
            positive.append(v)
    text = f"Final train − val accuracy gap (95% CI): {', '.join(parts)}."
    if positive:
        text += f" Train accuracy exceeds val accuracy beyond noise for {_join(positive)}."
    if s.others and "gap_accuracy" in s.diffs:
        text += f" Against {s.baseline}: {s.verdict_summary('gap_accuracy')}."
    return text


def _ci_width_sentence(s: Study) -> str:
    half = (s.stability["best_val_accuracy_high"] - s.stability["best_val_accuracy_low"]) / 2
    if half.notna().any():
        return (
            f"With {s.n_seeds} seeds the 95% interval of a variant's best val accuracy spans "
            f"±{_f(half.mean())} on average, so smaller differences cannot be resolved."
        )
    return "With fewer than 2 completed seeds per variant no interval could be computed."


def _question_little_data(s: Study) -> str:
    head = "### (c) What are the limits of attention with little data?\n\n"
    failed = s.failed()
    failed_variants = sorted(failed["variant"].unique(), key=s.variants.index)
    chance = s.meta.get("chance")
    text = [
        f"The {s.kind} study trains on {s.meta.get('data', 'unknown data')}"
        + (f" (chance {_f(chance)})." if chance is not None else "."),
        _gap_sentence(s),
        f"{len(failed)} of {len(s.runs)} runs diverged or failed"
        + (f" (variants: {_join(failed_variants)})." if len(failed) else "."),
        _ci_width_sentence(s),
        "What this study cannot answer: it trains on one amount of data, so it cannot say how "
        "the effects change as data grows or shrinks; it uses one set of shared settings, so a "
        'variant that needs other settings may be underrated; and a verdict of "within noise" '
        "means no effect was shown, not that there is none.",
    ]
    return head + " ".join(text)


def _limits(s: Study) -> str:
    items = [
        f'{s.n_seeds} seeds per variant: intervals are wide, and "within noise" is an absence '
        "of evidence, not evidence of no effect.",
        "One shared set of settings for every variant: none was tuned individually.",
        "Diverged and failed runs are excluded from the means (they are counted above), which "
        "flatters a variant that fails often.",
        "Focus is measured at the final epoch only, on the validation examples.",
    ]
    if "synthetic" in str(s.meta.get("data", "")).lower():
        items.insert(1, "Synthetic data: the results need not transfer to real images or signs.")
    if (s.meta.get("config") or {}).get("frozen_backbone_is_random"):
        items.insert(
            1,
            "The frozen video encoder has random (untrained) weights: the temporal heads see "
            "random features, not pretrained ones.",
        )
    return "\n".join(["## Limits of this study", ""] + [f"- {item}" for item in items])


# --------------------------------------------------------------------------- entry point


def render_report(s: Study, figures: dict[str, Path], out_dir: Path, other=None) -> str:
    """The markdown text of the report."""
    sections = [
        f"# keras-attn study: {s.kind}",
        _summary(s),
        _setup(s),
        _stability_table(s),
        _paired_tables(s),
        _figures(figures, out_dir),
        _focus_table(s),
        "## Key questions",
        _question_stabilise(s),
        _question_images_video(s, other),
        _question_little_data(s),
        _limits(s),
    ]
    return "\n\n".join(sections) + "\n"


def write_report(curves, runs, meta: dict, out_dir, other=None) -> Path:
    """Write `out_dir/report.md` and `out_dir/figures/*.png`; return the report's path.

    `other` is `(curves, runs, meta)` of the other kind's study, for the
    images-vs-video question; without it the report says how to run that study.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    study = Study(curves, runs, meta)
    other_study = Study(*other) if other is not None else None
    figures = write_figures(curves, runs, meta, study.variants, out_dir / "figures")
    path = out_dir / "report.md"
    atomic_write_text(path, render_report(study, figures, out_dir, other_study))
    return path
