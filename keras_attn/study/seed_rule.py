"""`--seeds auto`: add seeds until the main comparison is as precise as asked, or a cap.

The main comparisons are every variant against the baseline on test accuracy in the
report's main condition (the last). After each round the widest of their 95% intervals
is measured; a seed is added while its half-width exceeds `--target-halfwidth` and
fewer than `--max-seeds` seeds have run. The rule reads only interval widths, never
which way a difference points, so stopping cannot favour a result.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from keras_attn.errors import UserError

AUTO = "auto"
AUTO_START = 3  # seeds before the first look: an interval needs a few
DEFAULT_TARGET = 0.01


def check_seeds(value: str) -> str | None:
    text = str(value)
    if text == AUTO or (text.isdigit() and int(text) >= 1):
        return None
    return f"must be a positive number of seeds or 'auto' (got {text!r})"


def first_seeds(value: str, target: float | None, max_seeds: int) -> int:
    """How many seeds the first round runs; a rule's settings that cannot work are errors."""
    if str(value) != AUTO:
        if target is not None:
            raise UserError("--target-halfwidth needs --seeds auto")
        return int(value)
    if max_seeds < AUTO_START:
        raise UserError(f"--max-seeds must be at least {AUTO_START} with --seeds auto")
    return AUTO_START


def widest_halfwidth(test) -> float:
    """Half the widest 95% interval of a comparison table (NaN when it has none)."""
    if test is None or test.empty:
        return math.nan
    return float(((test["high"] - test["low"]) / 2).max())


def verdict(halfwidth: float, target: float, seeds: int, max_seeds: int) -> tuple[bool, str]:
    """`(stop, sentence)` after a round with `seeds` seeds."""
    if not math.isnan(halfwidth) and halfwidth <= target:
        return True, (
            f"--seeds auto stopped at {seeds} seeds: the main comparisons' widest 95% interval "
            f"is ±{halfwidth:.4f}, within the target ±{target:g}."
        )
    if seeds >= max_seeds:
        return True, (
            f"--seeds auto reached the cap of {max_seeds} seeds with the widest 95% interval "
            f"at ±{halfwidth:.4f}, wider than the target ±{target:g}: the target was not met."
        )
    return False, ""


def grow(
    seeds: list[int],
    run_round: Callable[[list[int]], object],
    halfwidth_of: Callable[[list[int]], float],
    target: float,
    max_seeds: int,
) -> tuple[list[int], str]:
    """Runs `seeds`, then one more seed at a time until `verdict` says stop; returns the
    seeds run and the sentence the report prints."""
    while True:
        run_round(seeds)
        halfwidth = halfwidth_of(seeds)
        print(f"[study] {len(seeds)} seeds: widest 95% interval ±{halfwidth:.4f}", flush=True)
        stop, sentence = verdict(halfwidth, target, len(seeds), max_seeds)
        if stop:
            return seeds, sentence
        seeds = [*seeds, seeds[-1] + 1]
