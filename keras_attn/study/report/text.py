"""The report's prose: the summary, the key questions and the limits.

Every sentence about an effect is generated from a computed interval and its
verdict (see `keras_attn.study.stats`), so the text cannot claim more than the
numbers: an effect whose interval includes 0 is reported as "within noise".
"""

from __future__ import annotations

import pandas as pd

from keras_attn.study import stats
from keras_attn.study.report.analysis import Study
from keras_attn.study.report.formatting import (
    DASH,
    FOCUS_NAMES,
    ci,
    diff_phrase,
    join_names,
    mean_std_ci,
    num,
    plural,
    signed,
    verdict_word,
)


def summary(s: Study) -> str:
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
            f"{mean_std_ci(*(row[f'best_val_accuracy_{f}'] for f in stats.CI_FIELDS))}."
        )
    if s.others:
        text += (
            f" Paired by seed against the baseline {s.baseline}, best val acc: "
            f"{s.verdict_summary('best_val_accuracy')}; late-epoch fluctuation: "
            f"{s.verdict_summary('fluctuation')}."
        )
    return text


def _variant_stability_sentence(s: Study, variant) -> str:
    parts = []
    fl = s.diffs.get("fluctuation")
    if fl is not None and variant in fl.index and fl.loc[variant, "n"] == 0:
        parts.append(f"no seed with a fluctuation for both it and {s.baseline}")
    elif fl is not None and variant in fl.index:
        r = fl.loc[variant]
        parts.append(
            f"fluctuation {num(r['variant_mean'], 4)} vs {num(r['baseline_mean'], 4)} for "
            f"{s.baseline}, difference {diff_phrase(r)} across {plural(int(r['n']), 'seed')} "
            f"({verdict_word('fluctuation', r['verdict'])})"
        )
    acc = s.diffs["best_val_accuracy"]
    if variant in acc.index and acc.loc[variant, "n"] == 0:
        parts.append(f"no seed on which both it and {s.baseline} completed")
    elif variant in acc.index:
        r = acc.loc[variant]
        seeds = plural(int(r["n"]), "seed")
        parts.append(
            f"best val acc {diff_phrase(r)} over {s.baseline} across {seeds} {DASH} {r['verdict']}"
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
            f"{join_names(groups['better'])}."
        )
    slower = [
        v
        for v in groups.get("better", [])
        if s.stability.loc[v, "best_val_accuracy_mean"]
        < s.stability.loc[s.baseline, "best_val_accuracy_mean"]
    ]
    if slower:
        # A curve that has not climbed far yet is flat too: say so beside the verdict.
        means = ", ".join(
            f"{v} {num(s.stability.loc[v, 'best_val_accuracy_mean'])}" for v in slower
        )
        text.append(
            f"But {join_names(slower)} also reached a lower mean best val accuracy "
            f"({means} against {num(s.stability.loc[s.baseline, 'best_val_accuracy_mean'])} "
            f"for {s.baseline}), so "
            "the steadier late curve may reflect slower learning rather than stabilisation."
        )
    if groups.get("worse"):
        text.append(f"Higher fluctuation than {s.baseline}: {join_names(groups['worse'])}.")
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
        maxes = ", ".join(f"{v} {num(s.stability.loc[v, 'grad_norm_max'])}" for v in s.variants)
        text.append(f"Max gradient norm (mean over seeds, descriptive, no interval): {maxes}.")
    return " ".join(text)


def question_stabilise(s: Study) -> str:
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
        f"In the {s.kind} study (baseline {s.baseline}, {plural(s.n_seeds, 'seed')}), "
        f"{len(groups.get('better', []))} of {len(s.others)} variants beat the baseline's best "
        f"val accuracy beyond noise and {len(groups.get('worse', []))} fell below it "
        f"(best val acc {s.verdict_summary('best_val_accuracy')}; fluctuation "
        f"{s.verdict_summary('fluctuation')})."
    )
    for measure, rows in s.focus.groupby("measure", sort=False):
        parts = [
            f"{r['variant']} {num(r['focus'])} vs {num(r['chance'])} ({r['verdict']})"
            for _, r in rows.iterrows()
        ]
        name = FOCUS_NAMES[measure]
        text += f" {name[0].upper()}{name[1:]} vs chance: {', '.join(parts)}."
    return text


def question_images_video(s: Study, other: Study | None) -> str:
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
            parts.append(f"{v} {num(mean)} {ci(low, high)}")
        if n >= 2 and low > 0:
            positive.append(v)
    text = f"Final train − val accuracy gap (95% CI): {', '.join(parts)}."
    if positive:
        text += f" Train accuracy exceeds val accuracy beyond noise for {join_names(positive)}."
    if s.others and "gap_accuracy" in s.diffs:
        text += f" Against {s.baseline}: {s.verdict_summary('gap_accuracy')}."
    return text


def _ci_width_sentence(s: Study) -> str:
    half = (s.stability["best_val_accuracy_high"] - s.stability["best_val_accuracy_low"]) / 2
    if half.notna().any():
        return (
            f"With {s.n_seeds} seeds the 95% interval of a variant's best val accuracy spans "
            f"±{num(half.mean())} on average, so smaller differences cannot be resolved."
        )
    return "With fewer than 2 completed seeds per variant no interval could be computed."


def _size_sentences(g) -> list[str]:
    """What the interaction with data size says, one sentence per variant."""
    if g is None or g.interactions.empty:
        return []
    rows = g.interactions[g.interactions["axis"].isin(("train_per_class", "clips_per_class"))]
    sentences = []
    for _, r in rows.iterrows():
        where = f" ({r['others']})" if r["others"] != "all runs" else ""
        trend = (
            "grows"
            if r["p_holm"] < 0.05 and r["slope"] > 0
            else "shrinks"
            if r["p_holm"] < 0.05
            else "shows no detectable trend"
        )
        sentences.append(
            f"Per doubling of the training set{where}, {r['variant']} − {g.baseline} test "
            f"accuracy changes by {signed(r['slope'], 4)} {ci(r['low'], r['high'], 4)} (Holm "
            f"p {num(r['p_holm'], 3)}, n {int(r['n'])}): the difference {trend}."
        )
    return sentences


def question_little_data(s: Study, g=None) -> str:
    head = "### (c) What are the limits of attention with little data?\n\n"
    failed = s.failed()
    failed_variants = sorted(failed["variant"].unique(), key=s.variants.index)
    chance = s.meta.get("chance")
    sizes = _size_sentences(g)
    text = [
        f"The {s.kind} study trains on {s.meta.get('data', 'unknown data')}"
        + (f" (chance {num(chance)})." if chance is not None else "."),
        *sizes,
        _gap_sentence(s),
        f"{len(failed)} of {len(s.runs)} runs diverged or failed"
        + (f" (variants: {join_names(failed_variants)})." if len(failed) else "."),
        _ci_width_sentence(s),
    ]
    if not sizes:
        text.append(
            "What this study cannot answer: it trains on one amount of data, so it cannot say "
            "how the effects change as data grows or shrinks (give --train-per-class a list)."
        )
    text.append('A verdict of "within noise" means no effect was shown, not that there is none.')
    return head + " ".join(text)


def _shared_settings_sentence(s: Study) -> str:
    """Untuned grids: shared settings, unless variants fix their own (`cbam:lr=0.02`)."""
    own = [str(v) for v in dict.fromkeys(s.runs["variant"]) if ":" in str(v)]
    if own:
        return (
            f"Variants that fix their own settings ({join_names(own)}) run at them, e.g. a "
            "learning rate chosen elsewhere; every other setting is shared and untuned here."
        )
    return "One shared set of settings for every variant: none was tuned individually."


def limits_section(s: Study, g=None) -> str:
    tuned = g is not None and g.tuning is not None
    rates = len((g.axes if tuned else {}).get("lr", []))
    items = [
        f'{s.n_seeds} seeds per variant: intervals are wide, and "within noise" is an absence '
        "of evidence, not evidence of no effect.",
        f"Each variant ran at its own learning rate, the best of {rates} on validation; every "
        "other setting is shared and untuned."
        if tuned
        else _shared_settings_sentence(s),
        "Diverged and failed runs are excluded from the means (they are counted above), which "
        "flatters a variant that fails often.",
        "Per-epoch focus is the final epoch's, on a few validation examples; the focus checks "
        "use each run's best-val model on a fixed validation subset.",
    ]
    if s.n_seeds < 5:
        items.insert(
            1,
            f"The test intervals resample {s.n_seeds} seeds: a bootstrap over so few seeds "
            "underestimates the seed-to-seed spread, so they are optimistic (narrower, "
            "smaller p) beside what more seeds would give.",
        )
    if "synthetic" in str(s.meta.get("data", "")).lower():
        items.insert(1, "Synthetic data: the results need not transfer to real images or signs.")
    if (s.meta.get("config") or {}).get("frozen_backbone_is_random"):
        items.insert(
            1,
            "The frozen video encoder has random (untrained) weights: the temporal heads see "
            "random features, not pretrained ones.",
        )
    return "\n".join(["## Limits of this study", ""] + [f"- {item}" for item in items])
