"""`python -m keras_attn.study check [FOLDER]`: every figure the README's findings quote,
recomputed from the committed study data.

`FOLDER/findings.toml` lists the claims; each names a study folder under FOLDER (its
`results.csv`, and for test comparisons `runs/<run>/test_predictions.npz`), a statistic,
the variant (and baseline) and the text the README prints, e.g.:

    readme = "../../README.md"          # relative to findings.toml

    [[claim]]
    study = "image"
    statistic = "paired_difference"     # variant − baseline, paired by seed, t-interval
    metric = "best_val_accuracy"
    variant = "cbam"
    baseline = "none"
    text = "−0.189 [−0.453, 0.074]"

Statistics: `mean_std_ci` (mean ± std [95% t-interval] over the variant's completed
runs), `paired_difference` (as the report's paired tables), `test_difference` (the
report's test comparison: a bootstrap over seeds and test images), `interaction` (the
report's interaction slope: each seed's paired test-accuracy difference fitted on the
claim's `axis`, e.g. `axis = "distractors"`, per doubling for data sizes and epochs; on an
axis of two named values, e.g. `axis = "backbone"`, the change from the first to the second),
`variance_ratio` (the variant's variance over seeds against the baseline's, with its F
interval; with an `axis`, pooled within each of its values, as the report's "Seed variance
over all conditions") and `focus` (the report's focus table: the final epoch's focus
`metric`, e.g. `focus_temporal`, against its chance level, paired by seed; one condition
of a grid, pinned with `where`). `where` keeps the runs whose columns have the given values
(`where = { lr = 0.01 }`); in a study that tuned the rate (`--tune-lr`) only the runs at
each variant's chosen rate count, as in its report. A claim holds when the recomputed text
equals `text` and the README contains it; the command prints one line per claim and exits
1 if any fails.
"""

from __future__ import annotations

import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from keras_attn.errors import UserError
from keras_attn.study import comparisons, selection, stats
from keras_attn.study.report.formatting import ci, diff_phrase, mean_std_ci, num, signed

STATISTICS = (
    "mean_std_ci",
    "paired_difference",
    "test_difference",
    "interaction",
    "variance_ratio",
    "focus",
)
POOLED = ("interaction", "variance_ratio")  # the statistics that take an `axis`
CLAIMS_FILE = "findings.toml"
STUDY_FILE = "study.json"


@dataclass(frozen=True)
class Claim:
    study: str
    statistic: str
    variant: str
    text: str
    metric: str = "best_val_accuracy"
    baseline: str | None = None
    axis: str | None = None
    where: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        against = f" − {self.baseline}" if self.baseline else ""
        return f"{self.study}: {self.statistic} of {self.variant}{against} ({self.metric})"


def read_claims(folder: Path) -> tuple[list[Claim], Path]:
    """The claims of `folder/findings.toml` and the README they are quoted in."""
    path = Path(folder) / CLAIMS_FILE
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: no such file (the findings' claims)") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise UserError(f"{path}: not a readable TOML file ({err})") from None
    claims = []
    for number, entry in enumerate(data.get("claim", []), 1):
        try:
            claim = Claim(**entry)
        except TypeError as err:
            raise UserError(f"{path}: claim {number}: {err}") from None
        if claim.statistic not in STATISTICS:
            raise UserError(
                f"{path}: claim {number}: unknown statistic {claim.statistic!r}; valid: "
                + ", ".join(STATISTICS)
            )
        if claim.statistic not in ("mean_std_ci", "focus") and not claim.baseline:
            raise UserError(f"{path}: claim {number}: {claim.statistic} needs a baseline")
        if claim.statistic == "interaction" and claim.axis is None:
            raise UserError(f"{path}: claim {number}: interaction needs an `axis`")
        if claim.axis is not None and claim.statistic not in POOLED:
            raise UserError(f"{path}: claim {number}: `axis` goes only with " + " or ".join(POOLED))
        claims.append(claim)
    if not claims:
        raise UserError(f"{path}: no [[claim]] entries")
    return claims, path.parent / data.get("readme", "../../README.md")


def _runs(folder: Path, claim: Claim) -> pd.DataFrame:
    path = folder / claim.study / "results.csv"
    if not path.exists():
        raise UserError(f"{path}: no such file (claim {claim.name})")
    runs = _at_chosen_rates(pd.read_csv(path), folder / claim.study / STUDY_FILE)
    for column in [*claim.where, *([claim.axis] if claim.axis else [])]:
        if column not in runs:
            raise UserError(f"{path}: no column {column!r} (claim {claim.name})")
    for column, value in claim.where.items():
        runs = runs[np.isclose(runs[column], value) if _is_number(value) else runs[column] == value]
    return runs


def _study_meta(study_file: Path) -> dict | None:
    """The `meta` of a study's `study.json`; None when the study has none."""
    try:
        return json.loads(study_file.read_text()).get("meta", {})
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{study_file}: not a readable study file ({err})") from None


def _at_chosen_rates(runs: pd.DataFrame, study_file: Path) -> pd.DataFrame:
    """With `--tune-lr` (the study's `study.json` says so) only the runs at each variant's
    rate chosen on validation, as every table of the report after its sweep."""
    meta = _study_meta(study_file)
    if meta is None:
        return runs
    runs = selection.select(runs, dict(meta.get("axes") or {}), list(meta.get("tuned") or []))
    return runs[runs["selected"]].drop(columns="selected")


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def recompute(folder: Path, claim: Claim) -> str:
    """The text the claim's statistic gives on the committed data."""
    runs = _runs(Path(folder), claim)
    done = runs[runs["status"] == stats.COMPLETED]
    if claim.statistic == "mean_std_ci":
        values = done.loc[done["variant"] == claim.variant, claim.metric]
        return mean_std_ci(*stats.mean_ci(values))
    if claim.statistic == "paired_difference":
        table = stats.paired_differences(runs, claim.baseline, claim.metric)
        if claim.variant not in table.index:
            return "—"
        return diff_phrase(table.loc[claim.variant])
    if claim.statistic == "interaction":
        axes = (_study_meta(Path(folder) / claim.study / STUDY_FILE) or {}).get("axes") or {}
        return _interaction(runs, claim, axes.get(claim.axis))
    if claim.statistic == "variance_ratio":
        return _variance_ratio(done, claim)
    if claim.statistic == "focus":
        return _focus(Path(folder), claim, runs)
    # The report's own test comparison, on the committed copies of the runs' predictions.
    committed = Path(folder) / claim.study / "runs"
    runs = runs.assign(run_dir=[str(committed / Path(r).name) for r in runs["run_dir"]])
    runs = runs[runs["variant"].isin([claim.variant, claim.baseline])]
    for run_dir in runs.loc[runs["status"] == stats.COMPLETED, "run_dir"]:
        if not (Path(run_dir) / "test_predictions.npz").exists():
            raise UserError(f"{run_dir}/test_predictions.npz: no such file (claim {claim.name})")
    table = comparisons.comparison_table(runs, claim.baseline)
    if claim.variant not in table.index:
        return "—"
    row = table.loc[claim.variant]
    if math.isnan(row["low"]):
        return signed(row["diff"])
    return f"{signed(row['diff'])} {ci(row['low'], row['high'])}"


def _interaction(runs: pd.DataFrame, claim: Claim, values) -> str:
    """The report's interaction slope; `values` (the grid's order of the axis) code a
    two-valued categorical axis as 0 and 1."""
    done = runs[runs["status"] == stats.COMPLETED]
    trend = comparisons.paired_trend(
        done, claim.axis, claim.variant, claim.baseline, claim.metric, order=values
    )
    if math.isnan(trend.slope):
        return "—"
    return f"{signed(trend.slope, 4)} {ci(trend.low, trend.high, 4)}"


def _focus(folder: Path, claim: Claim, runs: pd.DataFrame) -> str:
    path = folder / claim.study / "curves.csv"
    if not path.exists():
        raise UserError(f"{path}: no such file (claim {claim.name})")
    curves = pd.read_csv(path)
    # The curves of the runs kept: the chosen rate and the conditions `where` pins.
    pinned = [c for c in (selection.TUNED, *claim.where) if c in curves and c in runs]
    keys = ["variant", "seed", *pinned]
    if runs.duplicated(["variant", "seed"]).any():
        raise UserError(f"claim {claim.name}: runs of several conditions; pin them with `where`")
    table = stats.focus_above_chance(curves.merge(runs[keys], on=keys), runs)
    row = table[(table["variant"] == claim.variant) & (table["measure"] == claim.metric)]
    if row.empty:
        return "—"
    r = row.iloc[0]
    interval = ci(r["low"], r["high"])
    return f"{num(r['focus'])} vs {num(r['chance'])}: {signed(r['mean_diff'])} {interval}"


def _variance_ratio(done: pd.DataFrame, claim: Claim) -> str:
    axes = [claim.axis] if claim.axis else []
    ratio, low, high = comparisons.seed_variance_ratio(
        done, axes, claim.variant, claim.baseline, claim.metric
    )
    if math.isnan(ratio):
        return "—"
    return f"{num(ratio, 2)} {ci(low, high, 2)}"


def check(folder: str | Path) -> int:
    """Prints one line per claim; returns how many failed."""
    folder = Path(folder)
    claims, readme_path = read_claims(folder)
    try:
        readme = readme_path.read_text()
    except OSError as err:
        raise UserError(f"{readme_path}: cannot read the README ({err.strerror or err})") from None
    failed = 0
    for claim in claims:
        got = recompute(folder, claim)
        if got != claim.text:
            print(f"FAIL {claim.name}: the data give {got!r}, findings.toml says {claim.text!r}")
            failed += 1
        elif claim.text not in readme:
            print(f"FAIL {claim.name}: {claim.text!r} is not in {readme_path}")
            failed += 1
        else:
            print(f"ok   {claim.name}: {got}")
    print(f"{len(claims) - failed} of {len(claims)} claims hold")
    return failed
