"""How numbers, intervals and verdicts read in the report: true minus signs, dashes for gaps."""

from __future__ import annotations

import math

import pandas as pd

MINUS = "\u2212"
DASH = "\u2014"
# How the verdict of each paired metric reads in a sentence.
VERDICT_WORDS = {
    "fluctuation": {"better": "more stable", "worse": "less stable"},
    "gap_accuracy": {"better": "smaller gap", "worse": "larger gap"},
}
METRIC_NAMES = {
    "best_val_accuracy": "best val acc",
    "final_val_accuracy": "final val acc",
    "fluctuation": "fluctuation",
    "gap_accuracy": "train−val accuracy gap",
}
FOCUS_NAMES = {
    "focus_attention": "attention-map mass in the box",
    "focus_gradcam": "Grad-CAM mass in the box",
    "focus_temporal": "temporal weight on in-sign frames",
}


def num(x, digits: int = 3) -> str:
    """A number with a true minus sign; a dash for NaN/None."""
    if x is None or (isinstance(x, float) and math.isnan(x)) or pd.isna(x):
        return DASH
    return f"{float(x):.{digits}f}".replace("-", MINUS)


def signed(x, digits: int = 3) -> str:
    text = num(x, digits)
    return text if text == DASH or text.startswith(MINUS) else "+" + text


def _bound(x, digits: int) -> str:
    # A bound that rounds to 0 but is not 0 decides a verdict: keep its sign visible.
    if not pd.isna(x) and 0 < abs(x) < 0.5 * 10**-digits:
        return f"{float(x):.1e}".replace("-", MINUS)
    return num(x, digits)


def ci(low, high, digits: int = 3) -> str:
    return f"[{_bound(low, digits)}, {_bound(high, digits)}]"


def mean_std_ci(mean, std, low, high, n) -> str:
    """ "0.812 ± 0.013 [0.79, 0.83]"; one seed has no spread, so only "(n=1)"."""
    if not n:
        return DASH
    if n == 1:
        return f"{num(mean)} (n=1)"
    return f"{num(mean)} ± {num(std)} {ci(low, high, 2)}"


def diff_phrase(row: pd.Series) -> str:
    """ "+0.021 [−0.004, 0.046]": a paired difference with its interval."""
    if row["n"] < 2:
        return f"{signed(row['mean_diff'])} (n={int(row['n'])})"
    return f"{signed(row['mean_diff'])} {ci(row['low'], row['high'])}"


def verdict_word(metric: str, verdict: str) -> str:
    return VERDICT_WORDS.get(metric, {}).get(verdict, verdict)


def duration(seconds: float) -> str:
    if pd.isna(seconds):
        return DASH
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def join_names(names) -> str:
    names = list(names)
    return ", ".join(str(n) for n in names) if names else "none"
