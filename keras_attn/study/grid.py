"""A grid of training runs, variants × axes × seeds, and the tables gathered from their runs.

The axes are any other settings given as lists (`--train-per-class 25,100`, the
learning rates of `--tune-lr`): every variant runs at every combination of them.
Each cell is an ordinary run directory, `<out>/runs/<variant>[-<axis><value>...]-seed<seed>`,
so re-running the study skips finished cells (their summary says completed) and
resumes an interrupted one. A run that diverges is recorded as failed and the grid
goes on.
"""

from __future__ import annotations

import gc
import itertools
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import keras
import pandas as pd

from keras_attn.errors import UserError
from keras_attn.training.files import atomic_write_json, atomic_write_text, read_json
from keras_attn.training.run import RunDirConflict, TrainingDiverged

RUN_COLUMNS = (
    "variant",
    "seed",
    # then one column per axis
    "status",
    "best_val_accuracy",
    "best_epoch",
    "final_val_accuracy",
    "test_accuracy",
    "test_accuracy_last",
    "test_loss",
    "num_test",
    "epochs_completed",
    "epochs",
    "stopped_early",
    "precision",
    "xla",
    "intra_op_threads",
    "wall_seconds",
    "run_dir",
    "failure",
)
FINAL_FOCUS_FILE = "final_focus.json"


class Cell(NamedTuple):
    """One run of the grid: a variant at a seed and one value of every axis."""

    variant: str
    seed: int
    settings: tuple = ()  # ((axis, value), ...) in the axes' order

    @property
    def name(self) -> str:
        return "-".join(
            [str(self.variant), *(f"{k}{v}" for k, v in self.settings), f"seed{self.seed}"]
        )

    @property
    def label(self) -> str:
        """What the logs say: `"cbam, train_per_class 100, seed 0"`."""
        return ", ".join(
            [str(self.variant), *(f"{k} {v}" for k, v in self.settings), f"seed {self.seed}"]
        )


def variant_settings(spec: type, varied: str, variant: str) -> dict:
    """A variant's settings: `"tcn"` -> `{varied: "tcn"}`, and `"tcn:temporal_pool=avg"`
    also fixes `temporal_pool`, so one grid holds ablations that each change one thing."""
    name, *fixed = str(variant).split(":")
    settings = {varied: name}
    for item in fixed:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in spec.listable() or key == varied:
            raise UserError(
                f"variant {variant!r}: write NAME:SETTING=VALUE with a setting of the "
                f"experiment (got {item!r})"
            )
        settings[key] = spec.parse_list(key, value)[0]
    return settings


def run_dir_for(out: Path, variant: str, seed: int, settings: tuple = ()) -> Path:
    return Path(out) / "runs" / Cell(variant, seed, tuple(settings)).name


def grid_cells(
    variants: Sequence[str], seeds: Sequence[int], axes: Mapping[str, Sequence] | None = None
) -> list[Cell]:
    """Seed-major order: after each seed every variant has a run at every axis value,
    so a study cut short still pairs each variant with the baseline; within a seed the
    variants of one axis combination are neighbours (they share the seed's data)."""
    axes = dict(axes or {})
    combos = [tuple(zip(axes, values, strict=True)) for values in itertools.product(*axes.values())]
    return [Cell(v, seed, combo) for seed in seeds for combo in combos for v in variants]


def run_grid(
    out: Path,
    variants: Sequence[str],
    seeds: Sequence[int],
    run_one: Callable[..., object],
    axes: Mapping[str, Sequence] | None = None,
) -> dict[str, int]:
    """Runs every cell not finished yet; returns counts of completed and failed runs.

    `run_one(variant, seed, run_dir, **settings)` trains (or resumes, or reports) one
    cell; `settings` are the cell's axis values by setting name.
    """
    counts = {"completed": 0, "failed": 0}
    cells = grid_cells(variants, seeds, axes)
    for number, cell in enumerate(cells, 1):
        run_dir = run_dir_for(out, *cell)
        print(f"[study] run {number}/{len(cells)}: {cell.label} -> {run_dir}", flush=True)
        try:
            run_cell(run_one, cell, run_dir)
            counts["completed"] += 1
        except TrainingDiverged as err:
            # summary.json already says "diverged"; the study counts it and goes on.
            print(f"[study] {cell.label} failed: {err}", flush=True)
            counts["failed"] += 1
        free_memory()
    return counts


def run_cell(run_one: Callable[..., dict], cell: Cell, run_dir: Path) -> dict:
    """`run_one` for `cell`; a run directory holding another config is refused in the
    study's terms (it has `--out`, and never overwrites a run)."""
    try:
        return run_one(cell.variant, cell.seed, run_dir, **dict(cell.settings))
    except RunDirConflict as err:
        raise UserError(
            f"{err.run_dir} holds a run with a different config (differs in: "
            f"{', '.join(err.changed)}); a study reuses only runs of its own config: "
            "delete that run directory to run the cell again, or choose another --out"
        ) from None


def free_memory() -> None:
    """What Keras Tuner does between trials: drop the finished run's graph and model."""
    keras.backend.clear_session()
    gc.collect()


def collect(
    out: Path,
    variants: Sequence[str],
    seeds: Sequence[int],
    axes: Mapping[str, Sequence] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`(curves, runs)`: every cell's history.csv rows, and one row per cell.

    Both carry the cell's variant, seed and axis values. A cell without a summary (never
    started) is listed with status "missing"; a run's end-of-training focus measures
    (`final_focus.json`) become `final_*` columns.
    """
    axes = dict(axes or {})
    curves, runs = [], []
    for cell in grid_cells(variants, seeds, axes):
        run_dir = run_dir_for(out, *cell)
        summary = read_json(run_dir / "summary.json", default={})
        status = summary.get("status", "missing")
        keys = dict(variant=cell.variant, seed=cell.seed, **dict(cell.settings))
        summary = {"epochs_completed": 0, "wall_seconds": 0.0, **summary}
        row = dict(
            keys,
            status="failed" if status == "diverged" else status,
            **{c: summary.get(c) for c in RUN_COLUMNS[3:-2]},
            run_dir=str(run_dir),
            failure=summary.get("failure", ""),
        )
        focus = read_json(run_dir / FINAL_FOCUS_FILE, default={}) if status == "completed" else {}
        row.update({f"final_{k}": v for k, v in focus.items()})
        runs.append(row)
        history_path = run_dir / "history.csv"
        if history_path.exists():
            history = pd.read_csv(history_path)
            curves.append(history.assign(**keys))
    curves_table = pd.concat(curves, ignore_index=True) if curves else pd.DataFrame()
    if not curves_table.empty:
        first = ["variant", "seed", *axes, "epoch"]
        curves_table = curves_table[first + [c for c in curves_table if c not in first]]
    # An axis may be a column the summary records too (--epochs 30,60): listed once.
    columns = list(dict.fromkeys(["variant", "seed", *axes, *RUN_COLUMNS[2:]]))
    runs_table = pd.DataFrame(runs)
    extra = [c for c in runs_table if c not in columns]
    return curves_table, runs_table.reindex(columns=columns + extra)


def write_tables(out: Path, curves: pd.DataFrame, runs: pd.DataFrame) -> None:
    """`results.csv` (one row per run) and `curves.csv` (one row per run and epoch)."""
    atomic_write_text(Path(out) / "results.csv", runs.to_csv(index=False))
    atomic_write_text(Path(out) / "curves.csv", curves.to_csv(index=False))


def write_study_file(out: Path, study: dict) -> None:
    """`study.json`: what was asked for (kind, variants, seeds, settings, command)."""
    atomic_write_json(Path(out) / "study.json", json.loads(json.dumps(study, default=str)))
