"""The report's sections that read the whole grid: the lr sweep, the stability endpoints,
the interactions with data size or clutter, and the end-of-run focus checks."""

from __future__ import annotations

import math

import pandas as pd

from keras_attn.study import comparisons, selection, stats
from keras_attn.study.report.analysis import Study
from keras_attn.study.report.formatting import DASH, ci, num, signed
from keras_attn.study.report.grid import Grid, condition_label, holm_verdict
from keras_attn.study.report.tables import md_table


def _condition_rows(table: pd.DataFrame, axes: list[str]):
    for _, row in table.iterrows():
        yield condition_label({a: row[a] for a in axes}), row


def tuning_section(g: Grid) -> str:
    """The accuracy-vs-lr curve, each variant's chosen rate and its lr sensitivity."""
    if g.tuning is None:
        return ""
    t, axes = g.tuning, g.condition_axes
    lines = [
        "## Learning rate, tuned per variant",
        "",
        "Every variant ran at every rate of `--tune-lr` with every seed. Its chosen rate has the "
        "highest mean best val accuracy (validation only; test plays no part); every later "
        "table uses only the runs at the chosen rates. LR sensitivity: the width, in decades, "
        f"of the rates whose mean stays within {selection.WITHIN:.2f} of the best (wider is "
        "more forgiving). A chosen rate at the grid's edge may not be the best one: the sweep "
        "should extend past it. Diverged: runs with a non-finite loss, over every rate.",
        "",
    ]
    rows = []
    for label, r in _condition_rows(t["curve"], axes):
        rows.append(
            [label, r["variant"], f"{r[selection.TUNED]:g}", num(r["mean"], 4)]
            + [ci(max(r["low"], 0.0), min(r["high"], 1.0), 3)]
            + [f"{int(r['n'])}/{int(r['n_runs'])}", int(r["n_failed"])]
        )
    header = ["condition", "variant", "lr", "best val acc", "95% CI (cut to [0, 1])"]
    header += ["completed", "diverged"]
    lines += ["### Accuracy vs learning rate", "", md_table(header, rows), ""]
    divergence = t["divergence"].set_index([*axes, "variant"]) if len(t["divergence"]) else None
    rows = []
    for label, r in _condition_rows(t["chosen"], axes):
        key = tuple(r[a] for a in [*axes, "variant"])
        key = key[0] if len(key) == 1 else key
        d = divergence.loc[key] if divergence is not None else None
        rows.append(
            [label, r["variant"], "—" if math.isnan(r["lr"]) else f"{r['lr']:g}"]
            + ["yes: widen the sweep" if r["edge"] else "no"]
            + [num(r["best_mean"], 4), num(r["sensitivity"], 2)]
            + ["—" if d is None else f"{int(d['n_failed'])}/{int(d['n_runs'])}"]
        )
    header = ["condition", "variant", "chosen lr", "at the grid's edge", "best val acc"]
    header += ["lr sensitivity (decades)"]
    lines += ["### Chosen rates", "", md_table(header + ["diverged"], rows), ""]
    ev = t["expected"]
    if len(ev):
        ks = sorted(ev["k"].unique())
        shown = [k for k in ks if k in (1, 2, 4, 8, 16, 32) or k == ks[-1]]
        rows = []
        for key, group in selection.groups(ev, [*axes, "variant"]):
            variant = key.pop("variant")
            by_k = group.set_index("k")["expected"]
            rows.append([condition_label(key), variant, *(num(by_k.get(k), 4) for k in shown)])
        lines += [
            "### Expected validation performance",
            "",
            "The expected best val accuracy of k runs drawn at random from the sweep (a rate "
            "and a seed each; a diverged run counts at chance), Dodge et al. 2019: a variant "
            "whose curve rises faster needs less tuning.",
            "",
            md_table(["condition", "variant", *(f"k={k}" for k in shown)], rows),
        ]
    return "\n".join(lines).rstrip()


def endpoints_section(s: Study) -> str:
    """Stability endpoints that do not confound jitter with learning."""
    st, seeds = s.stability, s.seeds
    base = seeds[(seeds["variant"] == s.baseline) & (seeds["status"] == stats.COMPLETED)]
    rows = []
    for variant, r in st.iterrows():
        mine = seeds[(seeds["variant"] == variant) & (seeds["status"] == stats.COMPLETED)]
        ratio = (math.nan,) * 3
        if variant != s.baseline:
            ratio = stats.variance_ratio(mine["best_val_accuracy"], base["best_val_accuracy"])
        flagged = int(mine["under_trained"].sum()) if "under_trained" in mine else 0
        shown_ratio = f"{num(ratio[0], 2)} {ci(ratio[1], ratio[2], 2)}"
        late = f"{flagged}/{len(mine)}"
        if flagged * 2 > len(mine):
            late += " possibly under-trained"
        rows.append(
            [variant, num(r.get("fluctuation_plateau"), 4), num(r.get("grad_spikes"), 1)]
            + [DASH if variant == s.baseline else shown_ratio, late]
        )
    header = ["variant", "fluctuation after the best epoch", "gradient spikes per run"]
    header += [f"seed variance ratio vs {s.baseline} [95% CI]", "best epoch in the last 20%"]
    return "\n".join(
        [
            "## Stability endpoints",
            "",
            "Fluctuation after the best epoch: std of the epoch-to-epoch changes of val accuracy "
            "from the run's best epoch on (the plateau; a run still climbing has none). Gradient "
            f"spikes: epochs whose largest gradient norm exceeds {stats.SPIKE_FACTOR:g}× the run's "
            "median. Seed variance ratio: variance of best val accuracy over seeds against the "
            "baseline's, with its F interval (1 = as reproducible). A variant is flagged as "
            "possibly under-trained when most of its runs peak in the last 20% of the epochs "
            "allowed.",
            "",
            md_table(header, rows),
        ]
    )


FINAL_MEASURES = (
    ("pointing", "pointing game", "pointing_chance"),
    ("auroc", "AUROC of target pixels", None),
    ("sanity", "rank corr. with randomised weights", None),
    ("erase_top_drop", "accuracy drop, top region erased", "erase_random_drop"),
)
# A t-interval over few seeds can leave a measure's range; it is shown cut to it.
RANGES = {"pointing": (0, 1), "auroc": (0, 1), "sanity": (-1, 1), "erase_top_drop": (-1, 1)}


def final_focus_section(s: Study) -> str:
    """Pointing game, AUROC, the randomisation check and the erase test, per variant."""
    runs = s.runs[s.runs["status"] == stats.COMPLETED]
    if "final_focus_images" not in runs or runs["final_focus_images"].isna().all():
        return ""
    count = int(runs["final_focus_images"].max())
    rows = []
    for variant in s.variants:
        mine = runs[runs["variant"] == variant]
        for source in ("attention", "gradcam"):
            for key, name, chance_key in FINAL_MEASURES:
                column = f"final_{key}_{source}"
                if column not in mine or mine[column].isna().all():
                    continue
                mean, _, low, high, n = stats.mean_ci(mine[column].astype(float))
                low, high = max(low, RANGES[key][0]), min(high, RANGES[key][1])
                if chance_key:
                    chance = stats.mean_ci(mine[f"final_{chance_key}"].astype(float))[0]
                else:
                    chance = 0.5 if key == "auroc" else math.nan
                rows.append(
                    [variant, source, name, num(mean, 3), ci(low, high, 3), num(chance, 3), n]
                )
    return "\n".join(
        [
            f"## Focus checks of the best-val models ({count} fixed val images)",
            "",
            "Measured once per run on its best-val model, on the same validation images for every"
            " run; mean [95% t-interval, cut to the measure's range] over seeds. Pointing game: "
            "the map's maximum falls inside the target box (chance: the box's share of the map). "
            "AUROC: the map as a detector of target pixels (chance 0.5). Randomised weights: rank"
            " correlation of the map with the same model's map at re-initialised weights (Adebayo"
            " et al. 2018: near 1 means the map does not depend on what was learned). Erase test:"
            " accuracy lost when the region the map ranks highest (the box's area) is replaced by"
            " background; its baseline erases a random region of the same area.",
            "",
            md_table(["variant", "map", "measure", "value", "95% CI", "baseline", "n"], rows),
        ]
    )


def interaction_section(g: Grid) -> str:
    """Does attention − baseline change with data size or clutter?"""
    if g.interactions.empty:
        return ""
    rows = []
    for _, r in g.interactions.iterrows():
        rows.append(
            [r["variant"], r["x"], r["others"], signed(r["slope"], 4), ci(r["low"], r["high"], 4)]
            + [num(r["p"], 3), num(r["p_holm"], 3), int(r["n"])]
            + [holm_verdict(r["p_holm"], r["slope"], math.nan, "grows", "shrinks")]
        )
    header = ["variant", "change per", "at", "slope", "95% CI", "p", "p (Holm)", "n", "verdict"]
    return "\n".join(
        [
            f"## Interaction: does the difference from {g.baseline} change along an axis?",
            "",
            f"Least squares of each seed's paired test-accuracy difference (variant − "
            f"{g.baseline}, runs at their chosen rates) on the axis value (an axis of two "
            f"named values is coded 0 and 1: the slope is the change from the first to the "
            f"second); p (Holm) corrects over all {g.n_tests} tests of this report.",
            "",
            md_table(header, rows),
        ]
    )


SPREAD_METRICS = (("best_val_accuracy", "best val acc"), ("test_accuracy", "test acc"))


def seed_variance_section(g: Grid) -> str:
    """Is a variant as reproducible across seeds as the baseline, over all conditions?"""
    chosen = g.runs[g.runs["selected"] & (g.runs["status"] == stats.COMPLETED)]
    if not g.multi or g.baseline not in set(chosen["variant"]):
        return ""
    rows = []
    for variant in sorted(set(chosen["variant"]) - {g.baseline}):
        row = [variant]
        for metric, _ in SPREAD_METRICS:
            ratio = comparisons.seed_variance_ratio(
                chosen, g.condition_axes, variant, g.baseline, metric
            )
            row.append(f"{num(ratio[0], 2)} {ci(ratio[1], ratio[2], 2)}")
        rows.append(row)
    header = [
        "variant",
        *(f"{label}: variance ratio vs {g.baseline} [95% CI]" for _, label in SPREAD_METRICS),
    ]
    return "\n".join(
        [
            "## Seed variance over all conditions",
            "",
            "How much a variant's result depends on the seed, against the baseline: the "
            "variance over seeds within each condition (its spread around that condition's "
            "own mean), pooled over the conditions, as a ratio with its F interval (1 = as "
            "reproducible; above 1 = less). Runs at their chosen rates; the F interval assumes "
            "roughly normal seed-to-seed scatter and is not Holm-corrected.",
            "",
            md_table(header, rows),
        ]
    )
