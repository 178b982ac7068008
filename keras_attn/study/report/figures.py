"""The report's figures, drawn from the logged columns; a figure without data is skipped.

Figures are drawn on `matplotlib.figure.Figure` objects, which render with Agg
when saved: no pyplot, so no global backend switch and no figure registry that
would keep every figure of a long study alive.
"""

from __future__ import annotations

import logging
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from keras_attn.files import atomic_path
from keras_attn.study import selection, stats
from keras_attn.study.report.formatting import FOCUS_NAMES

log = logging.getLogger(__name__)

HEATMAP_CLIPS = 16


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
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
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


def _by_condition(table: pd.DataFrame, axes: list[str]):
    """`(label, rows)` per condition of a grid table, in the grid's order."""
    from keras_attn.study.report.grid import condition_label

    if not axes:
        return [("all runs", table)]
    return [(condition_label(key), rows) for key, rows in selection.groups(table, axes)]


def plot_lr_curves(grid, path: Path) -> Path | None:
    """Best val accuracy vs learning rate per variant (mean and 95% CI), one panel per
    condition; the chosen rate is ringed."""
    if grid.tuning is None or grid.tuning["curve"]["mean"].isna().all():
        return None  # no completed run to draw
    axes = grid.condition_axes
    panels = _by_condition(grid.tuning["curve"], axes)
    chosen = grid.tuning["chosen"]
    colors = _colors(grid.main.variants)
    fig, ax_row = _panels(len(panels), width=4.5, height=3.5)
    for ax, (label, table) in zip(ax_row, panels, strict=True):
        for variant, rows in table.groupby("variant", sort=False):
            rows = rows.sort_values("lr")
            color = colors.get(variant, "k")
            ax.plot(rows["lr"], rows["mean"], "o-", color=color, label=variant)
            ax.fill_between(rows["lr"], rows["low"], rows["high"], color=color, alpha=0.15)
            pick = chosen[(chosen["variant"] == variant)]
            for a in axes:
                pick = pick[pick[a] == rows[a].iloc[0]]
            best = rows[rows["lr"].isin(pick["lr"])]
            ax.plot(best["lr"], best["mean"], "o", ms=12, mfc="none", color=color)
        ax.set_xscale("log")
        ax.set(title=label, xlabel="learning rate", ylabel="best val accuracy")
        ax.legend(fontsize="small")
    return _save(fig, path)


def plot_expected_validation(grid, path: Path) -> Path | None:
    """Expected best val accuracy of k random runs of the sweep, per variant and condition."""
    if grid.tuning is None or grid.tuning["expected"].empty:
        return None
    panels = _by_condition(grid.tuning["expected"], grid.condition_axes)
    colors = _colors(grid.main.variants)
    fig, ax_row = _panels(len(panels), width=4.5, height=3.5)
    for ax, (label, table) in zip(ax_row, panels, strict=True):
        for variant, rows in table.groupby("variant", sort=False):
            color = colors.get(variant, "k")
            ax.plot(rows["k"], rows["expected"], "o-", color=color, label=variant)
        ax.set(title=label, xlabel="runs drawn (k)", ylabel="expected best val accuracy")
        ax.legend(fontsize="small")
    return _save(fig, path)


def write_grid_figures(grid, fig_dir: Path) -> dict[str, Path]:
    """The figures of the lr sweep, when there is one."""
    fig_dir.mkdir(parents=True, exist_ok=True)
    made = {
        "lr_curves": plot_lr_curves(grid, fig_dir / "lr_curves.png"),
        "expected_validation": plot_expected_validation(grid, fig_dir / "expected_validation.png"),
    }
    return {name: p for name, p in made.items() if p is not None}


FIGURE_CAPTIONS = {
    "lr_curves": "Best val accuracy vs learning rate (mean and 95% CI over seeds), one panel per "
    "condition; ringed: each variant's chosen rate.",
    "expected_validation": "Expected best val accuracy of k runs drawn at random from the lr sweep "
    "(Dodge et al. 2019).",
    "learning_curves": "Validation accuracy and training loss, mean ± std over completed seeds; "
    "dashed: chance.",
    "gradients": "Global gradient norm (mean ± std over seeds; dotted: per-epoch max) and the std "
    "of batch losses within each epoch.",
    "focus": "Focus vs epoch, mean ± std over seeds; dashed: chance (the box's share).",
    "overlays": "Attention / Grad-CAM overlays of each variant's lowest-seed run.",
    "temporal_weights": "Temporal weights of each variant's lowest-seed run: mean weight per frame "
    "position (shading: share of clips whose sign covers that position) and the first clips.",
}


def figures_section(figures: dict[str, Path], out_dir: Path) -> str:
    lines = ["## Figures", ""]
    if not figures:
        return "\n".join(lines + ["No figure could be drawn from the logged columns."])
    for name, path in figures.items():
        rel = path.relative_to(out_dir).as_posix()
        lines += [f"![{name.replace('_', ' ')}]({rel})", "", f"*{FIGURE_CAPTIONS[name]}*", ""]
    return "\n".join(lines).rstrip()
