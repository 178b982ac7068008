"""Each variant at its own learning rate: the choice on validation, and what the sweep shows.

With `--tune-lr` the learning rate is one more axis of the grid. For every condition (one
value of each other axis) and variant, the rate with the highest mean best val accuracy
over its seeds is chosen, and only the runs at that rate enter the comparisons; test
accuracy plays no part in the choice. The sweep itself gives three stability endpoints:
the accuracy-vs-lr curve, the lr sensitivity (how wide a range of rates stays within one
point of the best) and the divergence rate over every rate tried; and the expected
validation performance of k random configurations (Dodge et al., "Show your work",
EMNLP 2019).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from keras_attn.errors import UserError
from keras_attn.study.stats import COMPLETED, FAILED, mean_ci

TUNED = "lr"
WITHIN = 0.01  # "within one point of the best": the lr sensitivity's tolerance
# Means this close are a tie: Keras logs accuracies as float32, so seeds scoring the same
# number of val images at two rates can average to means that differ in the 8th digit.
TIE = 1e-6


def rates(text: str) -> list[float]:
    """`"1e-3,3e-3"` -> `[0.001, 0.003]`, sorted; a bad list is a one-line error."""
    problem = check_rates(text)
    if problem:
        raise UserError(f"--tune-lr {problem}")
    return sorted(float(part) for part in text.split(","))


def check_rates(text: str) -> str | None:
    try:
        values = [float(part) for part in str(text).split(",")]
    except ValueError:
        return f"must be learning rates separated by commas (got {text!r})"
    if any(not math.isfinite(v) or v <= 0 for v in values):
        return f"must be positive learning rates (got {text!r})"
    if len(values) < 2 or len(set(values)) != len(values):
        return f"needs at least two different learning rates (got {text!r})"
    return None


def conditions(axes: dict, tuned: list) -> list[str]:
    """The axes that define a condition: every axis but the tuned one."""
    return [a for a in axes if a not in tuned]


def groups(table: pd.DataFrame, keys: list[str]) -> list[tuple[dict, pd.DataFrame]]:
    """`(values, rows)` per distinct value of `keys` in `table`, in the table's order;
    `values` maps each key to its value (`[({}, table)]` when there are no keys)."""
    if not keys:
        return [({}, table)]
    return [
        (dict(zip(keys, key if isinstance(key, tuple) else (key,), strict=True)), rows)
        for key, rows in table.groupby(keys, sort=False, dropna=False)
    ]


def lr_curve(runs: pd.DataFrame, condition_axes: list[str]) -> pd.DataFrame:
    """One row per condition, variant and rate: mean best val accuracy with its 95% CI
    over completed seeds (`mean, low, high, n`) and `n_runs`, `n_failed`."""
    rows = []
    for key, group in groups(runs, [*condition_axes, "variant", TUNED]):
        done = group.loc[group["status"] == COMPLETED, "best_val_accuracy"].astype(float)
        mean, _, low, high, n = mean_ci(done)
        rows.append(
            key
            | dict(mean=mean, low=low, high=high, n=n, n_runs=len(group))
            | dict(n_failed=int(group["status"].isin(FAILED).sum()))
        )
    return pd.DataFrame(rows)


def chosen_rates(curve: pd.DataFrame, condition_axes: list[str]) -> pd.DataFrame:
    """Per condition and variant: the chosen `lr` (highest mean; a tie goes to the
    smaller rate), its `best_mean`, and `sensitivity`: the width in decades of the
    rates whose mean is within one point of the best (0: only the chosen one); `edge`
    says the chosen rate is the smallest or largest tried (the best may lie outside)."""
    rows = []
    for row, group in groups(curve, [*condition_axes, "variant"]):
        scored = group.dropna(subset=["mean"]).sort_values(TUNED)
        if scored.empty:
            rows.append(row | dict(lr=math.nan, best_mean=math.nan, sensitivity=math.nan))
            rows[-1]["edge"] = False
            continue
        # The smallest rate among those tied with the highest mean (scored is sorted).
        best = scored[scored["mean"] >= scored["mean"].max() - TIE].iloc[0]
        near = scored.loc[scored["mean"] >= best["mean"] - WITHIN, TUNED].astype(float)
        width = math.log10(near.max() / near.min())
        rates = group[TUNED].astype(float)
        edge = float(best[TUNED]) in (rates.min(), rates.max())
        rows.append(
            row | dict(lr=float(best[TUNED]), best_mean=best["mean"], sensitivity=width, edge=edge)
        )
    return pd.DataFrame(rows)


def select(runs: pd.DataFrame, axes: dict, tuned: list) -> pd.DataFrame:
    """`runs` with a bool `selected` column: the runs at their variant's chosen rate
    (every run when nothing is tuned)."""
    runs = runs.copy()
    if TUNED not in tuned or TUNED not in runs:
        runs["selected"] = True
        return runs
    keys = conditions(axes, tuned)
    chosen = chosen_rates(lr_curve(runs, keys), keys)
    merged = runs.merge(chosen[[*keys, "variant", TUNED]].assign(selected=True), how="left")
    runs["selected"] = merged["selected"].fillna(False).astype(bool).to_numpy()
    return runs


def divergence_rate(runs: pd.DataFrame, condition_axes: list[str]) -> pd.DataFrame:
    """Per condition and variant, over every rate tried: `n_failed` of `n_runs`, `rate`."""
    rows = []
    for key, group in groups(runs, [*condition_axes, "variant"]):
        failed = int(group["status"].isin(FAILED).sum())
        rows.append(
            key | dict(n_failed=failed, n_runs=len(group), rate=failed / max(len(group), 1))
        )
    return pd.DataFrame(rows)


def expected_max(values, k: int) -> float:
    """The expected best of `k` draws (with replacement) from `values`: with v sorted
    ascending, sum_i v_i [(i/n)^k - ((i-1)/n)^k] (Dodge et al. 2019, eq. 1)."""
    v = np.sort(np.asarray(values, dtype=float))
    n = len(v)
    if n == 0:
        return math.nan
    i = np.arange(1, n + 1)
    return float(np.sum(v * ((i / n) ** k - ((i - 1) / n) ** k)))


def expected_validation(
    runs: pd.DataFrame, condition_axes: list[str], chance: float
) -> pd.DataFrame:
    """Per condition and variant, the expected best val accuracy of k random runs of the
    sweep (a rate and a seed each), k = 1..n; a failed run counts at chance."""
    rows = []
    for key, group in groups(runs, [*condition_axes, "variant"]):
        scores = (
            group["best_val_accuracy"].astype(float).where(group["status"] == COMPLETED, chance)
        )
        scores = scores.fillna(chance)
        for k in range(1, len(scores) + 1):
            rows.append(key | dict(k=k, expected=expected_max(scores, k)))
    return pd.DataFrame(rows)
