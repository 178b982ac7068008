"""`Study`: the statistics one report needs, computed once from the grid's tables."""

from __future__ import annotations

import pandas as pd

from keras_attn.study import comparisons, stats
from keras_attn.study.report.formatting import join_names, verdict_word


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
        self.test = comparisons.comparison_table(runs, self.baseline)
        self.n_tests = len(self.test)  # the Holm family; a `Grid` widens it to the report's

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
        parts = [
            f"{verdict_word(metric, w)}: {join_names(groups[w])}" for w in order if w in groups
        ]
        return "; ".join(parts) if parts else "no variant to compare"
