"""Test-set comparisons a reviewer accepts: paired by seed, both noise sources, corrected.

A comparison of variant A with baseline B uses every seed's test predictions: `correct`
arrays of shape (seeds, test examples), row s of A and of B from the runs with seed s
(same training subsample, data order and shared initial weights), columns the same fixed
test images. The difference in accuracy is resampled two ways at once (a two-level
bootstrap): seeds with replacement (training noise) and test examples with replacement,
the same examples for A and B (test-set sampling). Its percentiles give the interval,
its spread the standard error behind the minimum detectable effect, and the share of
resamples on the other side of zero the two-sided p-value that Holm's method then
adjusts over every comparison a report makes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from keras_attn.study import stats

RESAMPLES = 4000
CHUNK = 250  # resamples per matrix product: (CHUNK, N) weights stay a few MB


@dataclass(frozen=True)
class Comparison:
    """A − B in accuracy: `diff`, its 95% `low`..`high`, `se`, two-sided `p`, P(A > B)
    over seeds (ties count half), the minimum detectable effect at 80% power (`mde`) and
    the number of paired seeds `n`."""

    diff: float
    low: float
    high: float
    se: float
    p: float
    p_a_beats_b: float
    mde: float
    n: int


def compare(
    a_correct, b_correct, resamples: int = RESAMPLES, confidence: float = 0.95, seed: int = 0
) -> Comparison:
    """Variant A minus baseline B, from bool `(seeds, N)` arrays of correct test answers."""
    a = np.asarray(a_correct, dtype=np.float64)
    b = np.asarray(b_correct, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2 or a.size == 0:
        raise ValueError(
            f"need two (seeds, examples) arrays of one shape, got {a.shape}, {b.shape}"
        )
    seeds, examples = a.shape
    d = a - b  # (S, N): +1 where only A is right, -1 where only B is
    per_seed = d.mean(axis=1)
    rng = np.random.default_rng(seed)
    draws = []
    for start in range(0, resamples, CHUNK):
        size = min(CHUNK, resamples - start)
        seed_counts = rng.multinomial(seeds, np.full(seeds, 1 / seeds), size=size)  # (k, S)
        example_counts = rng.multinomial(examples, np.full(examples, 1 / examples), size=size)
        # sum_s sum_n c_s w_n d[s, n] / (S N) for each resample: one product per chunk.
        weighted = (seed_counts @ d) * example_counts
        draws.append(weighted.sum(axis=1) / (seeds * examples))
    draws = np.concatenate(draws)
    tail = (1 - confidence) / 2
    low, high = np.quantile(draws, [tail, 1 - tail])
    diff = float(per_seed.mean())
    se = float(draws.std(ddof=1))
    if se == 0.0:  # every resample gives the same difference: zero, or one certain value
        p = 1.0 if diff == 0 else 0.0
    else:
        p = min(1.0, 2 * min(np.mean(draws <= 0), np.mean(draws >= 0)))
    wins = float(np.mean(np.sign(per_seed) * 0.5 + 0.5))
    return Comparison(
        diff=diff,
        low=float(low),
        high=float(high),
        se=se,
        p=float(p),
        p_a_beats_b=wins,
        mde=minimum_detectable_effect(se, seeds),
        n=seeds,
    )


def minimum_detectable_effect(
    se: float, seeds: int, alpha: float = 0.05, power: float = 0.8
) -> float:
    """The smallest true difference found with `power` at two-sided `alpha`, given the
    standard error of the estimate: `(t_{1-alpha/2} + t_{power}) * se` with `seeds - 1`
    degrees of freedom (normal quantiles, 2.80 * se, when there is one seed)."""
    if not math.isfinite(se):
        return math.nan
    dist = scipy_stats.t(seeds - 1) if seeds > 1 else scipy_stats.norm()
    return float((dist.ppf(1 - alpha / 2) + dist.ppf(power)) * se)


def holm(pvalues) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values, in the order given (NaN stays NaN, uncounted)."""
    p = np.asarray(pvalues, dtype=float)
    adjusted = np.full_like(p, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    order = valid[np.argsort(p[valid], kind="stable")]
    m = len(order)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[index]))
        adjusted[index] = running
    return adjusted


@dataclass(frozen=True)
class Trend:
    """Slope of the paired difference per unit of `x` (e.g. log2 data size), 95% interval."""

    slope: float
    low: float
    high: float
    p: float
    n: int


def interaction(x, differences, confidence: float = 0.95) -> Trend:
    """Does A − B change with `x`? Least squares of per-seed paired differences on `x`."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(differences, dtype=float)
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    n = len(x)
    if n < 3 or np.ptp(x) == 0:
        return Trend(math.nan, math.nan, math.nan, math.nan, n)
    fit = scipy_stats.linregress(x, y)
    half = float(scipy_stats.t.ppf((1 + confidence) / 2, n - 2)) * fit.stderr
    return Trend(float(fit.slope), fit.slope - half, fit.slope + half, float(fit.pvalue), n)


# Axes whose values double (50, 100, 200 per class; 30, 60, 120 epochs): a trend per doubling.
LOG2_AXES = ("train_per_class", "clips_per_class", "epochs")


def paired_trend(
    runs: pd.DataFrame,
    axis: str,
    variant,
    baseline,
    metric: str = "test_accuracy",
    order: Sequence | None = None,
) -> Trend:
    """The `interaction` of `variant` − `baseline` in `metric`, paired by seed and value
    of `axis`, on `axis` (log2 for LOG2_AXES); `runs` holds one row per run.

    A categorical axis of two values (`backbone resnet_small,small_cnn`) is coded 0 and 1
    in `order` (the grid's order; sorted when not given; a numeric axis ignores it), so
    the slope is the change of the difference from the first value to the second."""
    table = runs.pivot_table(index=["seed", axis], columns="variant", values=metric)
    if variant not in table or baseline not in table:
        return interaction([], [])
    pairs = (table[variant] - table[baseline]).dropna()
    values = pairs.index.get_level_values(axis)
    if not is_numeric_axis(values):
        levels = list(order) if order is not None else sorted(set(values))
        if len(levels) != 2:
            return interaction([], [])
        return interaction([levels.index(v) for v in values], pairs.to_numpy())
    x = values.to_numpy(float)
    return interaction(np.log2(x) if axis in LOG2_AXES else x, pairs.to_numpy())


def is_numeric_axis(values) -> bool:
    return all(isinstance(v, int | float | np.integer | np.floating) for v in values)


def seed_variance_ratio(
    runs: pd.DataFrame, axes, variant, baseline, metric: str = "best_val_accuracy"
) -> tuple[float, float, float]:
    """`stats.variance_ratio` of `variant` against `baseline` in `metric` over seeds,
    pooled within each combination of `axes` (every run alike when empty); `runs` holds
    one row per completed run."""
    axes = list(axes)

    def side(name):
        mine = runs[runs["variant"] == name]
        groups = mine[axes].astype(str).agg("|".join, axis=1) if axes else None
        return mine[metric], groups

    (a, a_groups), (b, b_groups) = side(variant), side(baseline)
    return stats.variance_ratio(a, b, a_groups=a_groups, b_groups=b_groups)


def test_predictions(run_dir) -> dict | None:
    """A run's `test_predictions.npz` as arrays, or None when the run wrote none."""
    path = Path(run_dir) / "test_predictions.npz"
    if not path.exists():
        return None
    with np.load(path) as saved:
        return {name: saved[name] for name in saved.files}


def comparison_table(runs: pd.DataFrame, baseline, resamples: int = RESAMPLES) -> pd.DataFrame:
    """Every variant against `baseline` on test accuracy at the best-val epoch.

    Pairs the seeds where both runs completed with test predictions; Holm's correction
    runs over the rows of this table. Columns: `variant_test`, `baseline_test` (mean
    test accuracy over the paired seeds) and the `Comparison` fields, plus `p_holm`.
    """
    if "run_dir" not in runs:
        return pd.DataFrame()
    done = runs[runs["status"] == "completed"]
    answers = {}
    for _, run in done.iterrows():
        saved = test_predictions(run["run_dir"])
        if saved is not None:
            answers[(run["variant"], run["seed"])] = saved["predicted"] == saved["label"]
    rows = {}
    for variant in dict.fromkeys(done["variant"]):
        if variant == baseline:
            continue
        seeds = sorted(s for v, s in answers if v == variant and (baseline, s) in answers)
        if not seeds:
            continue
        a = np.stack([answers[(variant, s)] for s in seeds])
        b = np.stack([answers[(baseline, s)] for s in seeds])
        result = compare(a, b, resamples=resamples)
        rows[variant] = dict(
            variant_test=float(a.mean()), baseline_test=float(b.mean()), **asdict(result)
        )
    table = pd.DataFrame.from_dict(rows, orient="index")
    if not table.empty:
        table["p_holm"] = holm(table["p"])
    table.index.name = "variant"
    return table
