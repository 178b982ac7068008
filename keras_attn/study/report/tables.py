"""The report's tabular sections: setup, stability, paired differences and focus."""

from __future__ import annotations

import math

import pandas as pd

from keras_attn.study import stats
from keras_attn.study.report.analysis import Study
from keras_attn.study.report.formatting import (
    DASH,
    FOCUS_NAMES,
    METRIC_NAMES,
    ci,
    duration,
    join_names,
    mean_std_ci,
    num,
    signed,
    verdict_word,
)
from keras_attn.study.report.grid import holm_verdict


def _cell(value) -> str:
    # A pipe or a newline inside a cell would break the markdown table.
    return str(value).replace("|", "\\|").replace("\n", " ")


def md_table(header: list[str], rows: list[list]) -> str:
    """A GitHub-flavoured markdown table (pandas' to_markdown needs tabulate)."""
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |"]
    lines.append("|" + "|".join("---" for _ in header) + "|")
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _failure_text(failure) -> str:
    # An empty CSV cell reads back as NaN, which must not print as "nan".
    return "" if failure is None or pd.isna(failure) else str(failure)[:160]


def _policies(runs: pd.DataFrame) -> str:
    """ "float32, no XLA, 1 thread (16 runs)": each compute setup the runs used, with its
    count. Thread counts matter: one- and two-thread runs of one config differ."""
    if "precision" not in runs or runs["precision"].isna().all():
        return DASH
    xla = runs["xla"].map({True: "XLA", False: "no XLA"}).fillna("XLA unknown")
    setup = runs["precision"].fillna("unknown") + ", " + xla
    threads = runs.get("intra_op_threads")
    if threads is not None and threads.notna().any():  # recorded since 2026-12-03
        setup += threads.map(
            lambda n: f", {int(n)} thread{'s' if n != 1 else ''}", na_action="ignore"
        ).fillna(", threads unrecorded")
    counts = setup.value_counts()
    return "; ".join(f"{policy} ({n} runs)" for policy, n in counts.items())


def setup_section(s: Study, runs: pd.DataFrame | None = None) -> str:
    """`runs`: every run of the grid (default: the study's own)."""
    meta = s.meta
    runs = s.runs if runs is None else runs
    config = meta.get("config") or {}
    versions = meta.get("versions") or {}
    counts = runs["status"].value_counts()
    wall = runs["wall_seconds"].sum(min_count=1) if "wall_seconds" in runs else math.nan
    axes = meta.get("axes") or {}
    failed = runs[runs["status"].isin(stats.FAILED)]
    lines = [
        "## Setup",
        "",
        f"- Data: {meta.get('data', DASH)}",
        f"- Variants: {join_names(s.variants)} (baseline: {s.baseline}); seeds: "
        f"{join_names(sorted(runs['seed'].unique()))}",
        *(f"- Axis {k.replace('_', ' ')}: {join_names(v)}" for k, v in axes.items()),
        f"- Runs: {len(runs)} ("
        + ", ".join(f"{int(n)} {status}" for status, n in counts.items())
        + f"); diverged or failed: {len(failed)}",
        *([f"- Seeds: {meta['seed_rule']}"] if meta.get("seed_rule") else []),
        f"- Precision policy: {_policies(runs)}",
        f"- Training time, summed over runs: {duration(wall)} (loading data, scoring test "
        "and the final focus checks come on top)",
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
    failed = runs[runs["status"] != stats.COMPLETED]
    if len(failed):
        lines += ["", "Runs that did not complete (counted, excluded from the statistics):", ""]
        rows = [
            [r["variant"], *(r[a] for a in axes), r["seed"], r["status"]]
            + [_failure_text(r.get("failure"))]
            for _, r in failed.iterrows()
        ]
        header = ["variant", *(a.replace("_", " ") for a in axes), "seed", "status", "failure"]
        lines.append(md_table(header, rows))
    return "\n".join(lines)


def stability_section(s: Study) -> str:
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
            row.append(mean_std_ci(*(r[f"{metric}_{f}"] for f in stats.CI_FIELDS)))
        row += [num(r["fluctuation"], 4), num(r["epochs_to_90"], 1), num(r["seed_spread"], 4)]
        row += [num(r[c], 3) for c, _ in optional]
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


def paired_section(s: Study) -> str:
    lines = [
        "## Paired differences against the baseline",
        "",
        f"Variant − {s.baseline}, paired by seed over the seeds where both completed; 95% "
        't-interval. A verdict other than "within noise" needs an interval that excludes 0. '
        "These are validation-side descriptions, each interval on its own (not corrected for "
        "multiple comparisons); the corrected tests are the test table and the interactions.",
    ]
    for metric in ("best_val_accuracy", "final_val_accuracy", "fluctuation"):
        table = s.diffs.get(metric)
        if table is None or table.empty:
            continue
        header = ["variant", "variant mean", f"{s.baseline} mean", "difference", "95% CI", "n"]
        rows = [
            [v, num(r["variant_mean"], 4), num(r["baseline_mean"], 4), signed(r["mean_diff"], 4)]
            + [ci(r["low"], r["high"], 4), int(r["n"]), verdict_word(metric, r["verdict"])]
            for v, r in table.iterrows()
        ]
        lines += ["", f"### {METRIC_NAMES[metric]}", "", md_table(header + ["verdict"], rows)]
    if len(lines) == 3:
        lines += ["", f"No variant besides the baseline {s.baseline} has completed runs."]
    return "\n".join(lines)


def test_section(s: Study) -> str:
    """Test accuracy of the best-val models: the only place the test split is used."""
    lines = [
        "## Test accuracy at the best-val epoch",
        "",
        f"Each run's checkpoint was chosen on validation and scored once on the fixed test "
        f"set. Variant − {s.baseline}, paired by seed; the 95% interval and the p-value come "
        "from a bootstrap over seeds and test images together (both noise sources); p (Holm) "
        f"corrects over all {s.n_tests} tests of this report; P(A > B) is the share of seeds "
        "where the variant won; MDE is the smallest difference this many seeds detect with 80% "
        "power.",
    ]
    if s.test.empty:
        return "\n".join(lines + ["", "No completed pair of runs with test predictions."])
    header = ["variant", "test acc", f"{s.baseline}", "difference", "95% CI", "p", "p (Holm)"]
    header += ["P(A > B)", "MDE", "n", "verdict"]
    rows = []
    for v, r in s.test.iterrows():
        verdict = holm_verdict(r["p_holm"], r["diff"], r["mde"])
        rows.append(
            [v, num(r["variant_test"], 4), num(r["baseline_test"], 4), signed(r["diff"], 4)]
            + [ci(r["low"], r["high"], 4), num(r["p"], 3), num(r["p_holm"], 3)]
            + [num(r["p_a_beats_b"], 2), num(r["mde"], 3), int(r["n"]), verdict]
        )
    return "\n".join(lines + ["", md_table(header, rows)])


def focus_section(s: Study) -> str:
    lines = ["## Focus", ""]
    if s.focus.empty:
        return "\n".join(lines + ["No focus measure was logged in this study."])
    header = ["variant", "measure", "focus (final)", "chance", "focus − chance", "95% CI", "n"]
    rows = [
        [r["variant"], FOCUS_NAMES[r["measure"]], num(r["focus"]), num(r["chance"])]
        + [signed(r["mean_diff"]), ci(r["low"], r["high"]), int(r["n"]), r["verdict"]]
        for _, r in s.focus.iterrows()
    ]
    lines.append(
        "Final-epoch focus of completed runs, paired with its chance level per seed "
        "(descriptive: each interval on its own, not corrected for multiple comparisons)."
    )
    return "\n".join(lines + ["", md_table(header + ["verdict"], rows)])
