"""`Grid`: a study's grid analysed as a whole, over its conditions and its lr sweep.

A condition is one value of every axis but the tuned learning rate. Each condition's runs
at their variant's chosen rate form one `Study` (the per-condition tables); every test
comparison of every condition and every interaction slope then share one Holm
correction, so the report's p-values hold for the whole family of tests it makes.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from keras_attn.study import comparisons, selection
from keras_attn.study.comparisons import LOG2_AXES
from keras_attn.study.grid import RUN_COLUMNS
from keras_attn.study.report.analysis import Study
from keras_attn.study.report.formatting import num


def condition_label(condition: dict) -> str:
    return ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in condition.items()) or "all runs"


def _x_name(axis: str, values) -> str:
    name = axis.replace("_", " ")
    if not comparisons.is_numeric_axis(values):
        return f"{name}: {values[0]} → {values[1]}"
    return f"log2({name})" if axis in LOG2_AXES else name


class Grid:
    """Every condition's `Study`, the lr sweep and the interactions, computed once."""

    def __init__(self, curves: pd.DataFrame, runs: pd.DataFrame, meta: dict):
        self.meta = meta
        self.axes = dict(meta.get("axes") or {})
        self.tuned = list(meta.get("tuned") or [])
        self.condition_axes = selection.conditions(self.axes, self.tuned)
        self.baseline = meta.get("baseline")
        self.runs = selection.select(runs, self.axes, self.tuned)
        self.conditions: list[tuple[dict, Study]] = []
        chosen = self.runs[self.runs["selected"]]
        for condition, group in selection.groups(chosen, self.condition_axes):
            if group.empty:
                continue
            self.conditions.append((condition, self._study(curves, group, condition)))
        if not self.conditions:  # nothing chosen (every run failed): report them all
            self.conditions.append(({}, self._study(curves, self.runs, {})))
        self.tuning = self._tuning()
        self.interactions = self._interactions()
        self.n_tests = self._correct()

    @property
    def main(self) -> Study:
        """The condition the summary, figures and key questions read: the last one (the
        largest values, when the axes are given in increasing order)."""
        return self.conditions[-1][1]

    @property
    def multi(self) -> bool:
        return len(self.conditions) > 1

    def _study(self, curves: pd.DataFrame, runs: pd.DataFrame, condition: dict) -> Study:
        keys = ["variant", "seed", *self.axes]
        mine = curves
        if len(curves) and all(k in curves for k in keys):
            mine = curves.merge(runs[keys], on=keys, how="inner")
        meta = dict(self.meta, condition=condition_label(condition))
        # An axis that is also the run's own record (`epochs`) stays: the stability
        # endpoints read it.
        axes = [a for a in self.axes if a not in RUN_COLUMNS]
        return Study(mine, runs.drop(columns=[*axes, "selected"], errors="ignore"), meta)

    def _tuning(self) -> dict | None:
        if selection.TUNED not in self.tuned or selection.TUNED not in self.runs:
            return None
        curve = selection.lr_curve(self.runs, self.condition_axes)
        chance = float(self.meta.get("chance") or 0.0)
        return dict(
            curve=curve,
            chosen=selection.chosen_rates(curve, self.condition_axes),
            divergence=selection.divergence_rate(self.runs, self.condition_axes),
            expected=selection.expected_validation(self.runs, self.condition_axes, chance),
        )

    def _interactions(self) -> pd.DataFrame:
        """Per numeric axis with 2+ values (or other axis with exactly 2), variant and value
        of the other axes: the slope of the per-seed paired test-accuracy difference
        (variant − baseline) on the axis; on a two-valued categorical axis, the change of
        the difference from its first value to its second."""
        rows = []
        chosen = self.runs[self.runs["selected"] & (self.runs["status"] == "completed")]
        for axis in self.condition_axes:
            values = self.axes[axis]
            numeric = comparisons.is_numeric_axis(values)
            if len(values) < 2 or (not numeric and len(values) != 2):
                continue
            others = [a for a in self.condition_axes if a != axis]
            for key, group in selection.groups(chosen, others):
                if self.baseline not in set(group["variant"]):
                    continue
                for variant in sorted(set(group["variant"]) - {self.baseline}):
                    trend = comparisons.paired_trend(
                        group, axis, variant, self.baseline, order=values
                    )
                    rows.append(
                        dict(axis=axis, x=_x_name(axis, values), variant=variant)
                        | dict(others=condition_label(key))
                        | trend.__dict__
                    )
        return pd.DataFrame(rows)

    def _correct(self) -> int:
        """Holm over every test comparison and interaction; writes `p_holm` back."""
        pieces = [s.test["p"].to_numpy() for _, s in self.conditions if not s.test.empty]
        if not self.interactions.empty:
            pieces.append(self.interactions["p"].to_numpy())
        if not pieces:
            return 0
        adjusted = comparisons.holm(np.concatenate(pieces))
        start = 0
        for _, s in self.conditions:
            if not s.test.empty:
                s.test["p_holm"] = adjusted[start : start + len(s.test)]
                start += len(s.test)
        if not self.interactions.empty:
            self.interactions["p_holm"] = adjusted[start:]
        n = int(np.sum(~np.isnan(adjusted)))
        for _, s in self.conditions:
            s.n_tests = n
        return n


def holm_verdict(p_holm: float, diff: float, mde: float, higher="higher", lower="lower") -> str:
    """The words a Holm-adjusted test earns, with what it could have detected."""
    if not math.isnan(p_holm) and p_holm < 0.05:
        return higher if diff > 0 else lower
    if math.isnan(mde):
        return "no detectable difference"
    return f"no detectable difference (could have detected ≥ {num(mde, 3)})"
