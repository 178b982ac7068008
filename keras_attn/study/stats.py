"""Statistics of a study grid: per-variant stability and paired differences against a baseline.

Two tables come in (see `keras_attn.study.report`): `curves`, one row per
(variant, seed, epoch), and `runs`, one row per (variant, seed) with its status.
Only completed runs enter the statistics; diverged and failed runs are counted
in `n_failed` so they are never dropped silently.

Intervals are t-intervals over seeds; with the few seeds a study affords they
are wide, which is the point: a verdict is only "better" or "worse" when its
interval excludes zero.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

COMPLETED = "completed"
FAILED = ("diverged", "failed")
FOCUS_COLUMNS = (
    "focus_attention",
    "focus_gradcam",
    "focus_chance",
    "focus_temporal",
    "focus_temporal_chance",
)
# Which chance level each focus measure is compared with.
FOCUS_CHANCE = {
    "focus_attention": "focus_chance",
    "focus_gradcam": "focus_chance",
    "focus_temporal": "focus_temporal_chance",
}
CI_FIELDS = ("mean", "std", "low", "high", "n")


def mean_ci(values, confidence: float = 0.95) -> tuple[float, float, float, float, int]:
    """`(mean, std, low, high, n)` of `values` with a t-interval; NaNs are ignored.

    `std` uses ddof=1. With one value std and the interval are NaN (one seed says
    nothing about seed noise); with none everything but n=0 is NaN.
    """
    x = np.asarray(values, dtype=float).ravel()
    x = x[~np.isnan(x)]
    n = int(x.size)
    if n == 0:
        return math.nan, math.nan, math.nan, math.nan, 0
    mean = float(x.mean())
    if n == 1:
        return mean, math.nan, math.nan, math.nan, 1
    std = float(x.std(ddof=1))
    half = float(scipy_stats.t.ppf((1 + confidence) / 2, n - 1)) * std / math.sqrt(n)
    return mean, std, mean - half, mean + half, n


def variant_order(runs: pd.DataFrame, curves: pd.DataFrame | None = None, baseline=None) -> list:
    """Variants in order of first appearance (runs, then curves), the baseline first."""
    seen = list(dict.fromkeys(runs["variant"])) if len(runs) else []
    if curves is not None and len(curves):
        seen += [v for v in dict.fromkeys(curves["variant"]) if v not in seen]
    if baseline in seen:
        seen = [baseline] + [v for v in seen if v != baseline]
    return seen


def fluctuation(val_accuracy) -> float:
    """Std (ddof=1) of the epoch-to-epoch changes of val accuracy over the last third.

    The window is the last ceil(n/3) epochs and each contributes its change from
    the epoch before, so 6 epochs give 2 changes. A steady climb gives ~0: this
    measures jitter, not progress. Fewer than 2 changes give NaN.
    """
    x = np.asarray(val_accuracy, dtype=float)
    x = x[~np.isnan(x)]
    diffs = np.diff(x)[-math.ceil(x.size / 3) :] if x.size else np.array([])
    if diffs.size < 2:
        return math.nan
    return float(diffs.std(ddof=1))


def fluctuation_after_best(val_accuracy) -> float:
    """Std (ddof=1) of the epoch-to-epoch changes of val accuracy from the best epoch on.

    Once a run has peaked it is on its plateau, so this is jitter that cannot be
    mistaken for still learning; fewer than 2 changes after the best give NaN (a run
    that peaks at its last epoch has no plateau to measure).
    """
    x = np.asarray(val_accuracy, dtype=float)
    x = x[~np.isnan(x)]
    if x.size == 0:
        return math.nan
    diffs = np.diff(x[int(np.argmax(x)) :])
    return float(diffs.std(ddof=1)) if diffs.size >= 2 else math.nan


SPIKE_FACTOR = 5.0


def gradient_spikes(grad_norm_max) -> float:
    """Epochs whose largest gradient norm exceeds `SPIKE_FACTOR` × the run's median of it
    (NaN when the run logged none)."""
    g = np.asarray(grad_norm_max, dtype=float)
    g = g[np.isfinite(g)]
    if g.size == 0:
        return math.nan
    return float(np.sum(g > SPIKE_FACTOR * np.median(g)))


def variance_ratio(
    a, b, confidence: float = 0.95, a_groups=None, b_groups=None
) -> tuple[float, float, float]:
    """var(a) / var(b) over seeds with its F interval `(ratio, low, high)` (NaN with
    fewer than 2 values on a side or a zero variance in b).

    With `a_groups` / `b_groups` (one label per value, e.g. the training size of each
    run) each variance is pooled within its groups: squared deviations from each
    group's own mean over sum(n_group - 1), so that conditions with different means
    add seeds to one test of reproducibility instead of inflating it."""
    var_a, df_a = _pooled_variance(a, a_groups)
    var_b, df_b = _pooled_variance(b, b_groups)
    if df_a < 1 or df_b < 1 or var_b == 0:
        return math.nan, math.nan, math.nan
    ratio = var_a / var_b
    tail = (1 - confidence) / 2
    f = scipy_stats.f(df_a, df_b)
    return ratio, ratio / float(f.ppf(1 - tail)), ratio / float(f.ppf(tail))


def _pooled_variance(values, groups=None) -> tuple[float, int]:
    """`(variance, degrees of freedom)` of `values` pooled within `groups` (one group
    when None); NaN values are left out."""
    frame = pd.DataFrame({"v": np.asarray(values, dtype=float)})
    frame["g"] = 0 if groups is None else np.asarray(groups)
    frame = frame.dropna(subset=["v"])
    sizes = frame.groupby("g")["v"].transform("size")
    frame = frame[sizes >= 2]
    df = len(frame) - frame["g"].nunique()
    if df < 1:
        return math.nan, 0
    deviations = frame["v"] - frame.groupby("g")["v"].transform("mean")
    return float((deviations**2).sum() / df), int(df)


UNDER_TRAINED = 0.8  # a best epoch in the last 20% of the epochs allowed


def under_trained(best_epoch, epochs) -> bool:
    """Whether a run peaked in the last 20% of its epochs: it may still have been learning."""
    if pd.isna(best_epoch) or pd.isna(epochs) or not epochs:
        return False
    return float(best_epoch) > UNDER_TRAINED * float(epochs)


def epochs_to_fraction(epochs, val_accuracy, fraction: float = 0.9) -> float:
    """First epoch whose val accuracy reaches `fraction` of the run's best; NaN without data."""
    e = np.asarray(epochs, dtype=float)
    x = np.asarray(val_accuracy, dtype=float)
    keep = ~np.isnan(x)
    e, x = e[keep], x[keep]
    if x.size == 0:
        return math.nan
    return float(e[np.argmax(x >= fraction * x.max())])


def _last_valid(series: pd.Series) -> float:
    """The last non-NaN value: measures like focus may be logged on some epochs only."""
    valid = series.dropna()
    return float(valid.iloc[-1]) if len(valid) else math.nan


def _column_stat(curve: pd.DataFrame, column: str, how: str) -> float:
    if column not in curve:
        return math.nan
    values = curve[column].astype(float)
    if how == "max":
        return float(values.max()) if values.notna().any() else math.nan
    if how == "mean":
        return float(values.mean()) if values.notna().any() else math.nan
    return _last_valid(values)


def _seed_row(run: pd.Series, curve: pd.DataFrame) -> dict:
    """The per-seed measures of one run from its curve (sorted by epoch)."""
    val = curve["val_accuracy"] if "val_accuracy" in curve else pd.Series(dtype=float)
    row = {
        "best_val_accuracy": run.get("best_val_accuracy", math.nan),
        "final_val_accuracy": run.get("final_val_accuracy", math.nan),
        "fluctuation": fluctuation(val),
        "fluctuation_plateau": fluctuation_after_best(val),
        "grad_spikes": gradient_spikes(curve["grad_norm_max"])
        if "grad_norm_max" in curve
        else math.nan,
        "under_trained": float(under_trained(run.get("best_epoch"), run.get("epochs"))),
        "epochs_to_90": epochs_to_fraction(curve["epoch"], val) if len(curve) else math.nan,
        "grad_norm_max": _column_stat(curve, "grad_norm_max", "max"),
        "batch_loss_std": _column_stat(curve, "batch_loss_std", "mean"),
        "gap_accuracy": _column_stat(curve, "gap_accuracy", "last"),
    }
    # The runs table is authoritative; the curve fills in what it lacks.
    if pd.isna(row["best_val_accuracy"]):
        row["best_val_accuracy"] = _column_stat(curve, "val_accuracy", "max")
    if pd.isna(row["final_val_accuracy"]):
        row["final_val_accuracy"] = _column_stat(curve, "val_accuracy", "last")
    for column in FOCUS_COLUMNS:
        if column in curve:
            row[column] = _column_stat(curve, column, "last")
    return row


def per_seed_metrics(curves: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """One row per run: variant, seed, status and the per-seed measures.

    Measures are computed for completed runs only and are NaN for the others,
    which keep their row so that they can be counted.
    """
    if curves.empty:  # no run finished an epoch
        curves = pd.DataFrame(columns=["variant", "seed", "epoch"])
    groups = {key: g.sort_values("epoch") for key, g in curves.groupby(["variant", "seed"])}
    rows = []
    for _, run in runs.iterrows():
        row = {"variant": run["variant"], "seed": run["seed"], "status": run["status"]}
        if run["status"] == COMPLETED:
            curve = groups.get((run["variant"], run["seed"]), curves.iloc[0:0])
            row.update(_seed_row(run, curve))
        rows.append(row)
    table = pd.DataFrame(rows)
    for column in ("best_val_accuracy", "final_val_accuracy", "fluctuation", "epochs_to_90"):
        if column not in table:
            table[column] = math.nan
    return table


def _seed_spread(curves: pd.DataFrame) -> float:
    """Mean over epochs of the across-seed std of val accuracy (epochs with one seed skipped)."""
    if "val_accuracy" not in curves or curves.empty:
        return math.nan
    per_epoch = curves.groupby("epoch")["val_accuracy"].std(ddof=1)
    return float(per_epoch.mean()) if per_epoch.notna().any() else math.nan


def completed_curves(curves: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """The rows of `curves` that belong to completed runs."""
    done = runs.loc[runs["status"] == COMPLETED, ["variant", "seed"]]
    if curves.empty:
        return pd.DataFrame(columns=["variant", "seed", "epoch"])
    return curves.merge(done, on=["variant", "seed"], how="inner")


def _mean(values: pd.Series) -> float:
    return float(values.mean()) if values.notna().any() else math.nan


def per_variant_stability(
    curves: pd.DataFrame, runs: pd.DataFrame, baseline=None, confidence: float = 0.95
) -> pd.DataFrame:
    """One row per variant (baseline first): accuracy with CIs and the stability measures.

    Columns: `best_val_accuracy_{mean,std,low,high,n}`, the same for
    `final_val_accuracy`, `fluctuation`, `epochs_to_90`, `seed_spread`,
    `grad_norm_max`, `batch_loss_std`, `gap_accuracy`, one column per focus
    measure present, `n_runs`, `n_completed` and `n_failed` (diverged or failed).
    """
    seeds = per_seed_metrics(curves, runs)
    done_curves = completed_curves(curves, runs)
    focus = [c for c in FOCUS_COLUMNS if c in seeds]
    rows = {}
    for variant in variant_order(runs, curves, baseline):
        mine = seeds[seeds["variant"] == variant]
        done = mine[mine["status"] == COMPLETED]
        row = {}
        for metric in ("best_val_accuracy", "final_val_accuracy"):
            stats = mean_ci(done[metric], confidence)
            row.update({f"{metric}_{f}": v for f, v in zip(CI_FIELDS, stats, strict=True)})
        for metric in (
            "fluctuation",
            "fluctuation_plateau",
            "grad_spikes",
            "under_trained",
            "epochs_to_90",
            "grad_norm_max",
            "batch_loss_std",
        ):
            row[metric] = _mean(done[metric]) if metric in done else math.nan
        row["gap_accuracy"] = _mean(done["gap_accuracy"]) if "gap_accuracy" in done else math.nan
        row["seed_spread"] = _seed_spread(done_curves[done_curves["variant"] == variant])
        row.update({c: _mean(done[c]) for c in focus})
        row["n_runs"] = len(mine)
        row["n_completed"] = len(done)
        row["n_failed"] = int(mine["status"].isin(FAILED).sum())
        rows[variant] = row
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "variant"
    return table


def verdict(low: float, high: float, n: int, higher_is_better: bool = True) -> str:
    """ "better"/"worse" only when the interval excludes 0; else "within noise" or too few seeds."""
    if n < 2 or math.isnan(low) or math.isnan(high):
        return "too few seeds"
    if low > 0:
        return "better" if higher_is_better else "worse"
    if high < 0:
        return "worse" if higher_is_better else "better"
    return "within noise"


def paired_differences(
    runs: pd.DataFrame,
    baseline,
    metric: str,
    higher_is_better: bool = True,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Variant minus baseline on `metric`, paired by seed, for every non-baseline variant.

    Pairing by seed removes what the seed shares across variants (data order,
    initial weights where shapes match). Only seeds where both runs completed and
    have the metric enter. Columns: `mean_diff`, `std`, `low`, `high`, `n`,
    `variant_mean`, `baseline_mean` (over the paired seeds) and `verdict`.
    `runs` may be the runs table or `per_seed_metrics` (for per-seed measures).
    """
    done = runs[(runs["status"] == COMPLETED) & runs[metric].notna()]
    base = done[done["variant"] == baseline].set_index("seed")[metric]
    rows = {}
    for variant in variant_order(runs, baseline=baseline):
        if variant == baseline:
            continue
        mine = done[done["variant"] == variant].set_index("seed")[metric]
        seeds = mine.index.intersection(base.index)
        diff = mine.loc[seeds].to_numpy(float) - base.loc[seeds].to_numpy(float)
        mean, std, low, high, n = mean_ci(diff, confidence)
        rows[variant] = {
            "mean_diff": mean,
            "std": std,
            "low": low,
            "high": high,
            "n": n,
            "variant_mean": _mean(mine.loc[seeds]),
            "baseline_mean": _mean(base.loc[seeds]),
            "verdict": verdict(low, high, n, higher_is_better),
        }
    columns = ["mean_diff", "std", "low", "high", "n", "variant_mean", "baseline_mean", "verdict"]
    table = pd.DataFrame.from_dict(rows, orient="index", columns=columns)
    table.index.name = "variant"
    return table


def paired_fluctuation(
    curves: pd.DataFrame, runs: pd.DataFrame, baseline, confidence: float = 0.95
) -> pd.DataFrame:
    """`paired_differences` on per-seed fluctuation; "better" means lower, i.e. more stable."""
    seeds = per_seed_metrics(curves, runs)
    return paired_differences(seeds, baseline, "fluctuation", False, confidence)


def focus_above_chance(
    curves: pd.DataFrame, runs: pd.DataFrame, confidence: float = 0.95
) -> pd.DataFrame:
    """Final-epoch focus minus its chance level, per variant and focus measure, with a t-CI.

    Rows are (variant, measure); `verdict` is "above chance", "below chance",
    "within noise" or "too few seeds". Measures a variant never logged are left out.
    """
    seeds = per_seed_metrics(curves, runs)
    seeds = seeds[seeds["status"] == COMPLETED]
    words = {"better": "above chance", "worse": "below chance"}
    rows = []
    for variant in variant_order(runs, curves):
        mine = seeds[seeds["variant"] == variant]
        for measure, chance in FOCUS_CHANCE.items():
            if measure not in mine or chance not in mine or mine[measure].isna().all():
                continue
            mean, std, low, high, n = mean_ci(mine[measure] - mine[chance], confidence)
            word = verdict(low, high, n)
            rows.append(
                {
                    "variant": variant,
                    "measure": measure,
                    "focus": _mean(mine[measure]),
                    "chance": _mean(mine[chance]),
                    "mean_diff": mean,
                    "low": low,
                    "high": high,
                    "n": n,
                    "verdict": words.get(word, word),
                }
            )
    columns = ["variant", "measure", "focus", "chance", "mean_diff", "low", "high", "n", "verdict"]
    return pd.DataFrame(rows, columns=columns)
