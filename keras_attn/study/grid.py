"""A grid of training runs, variants × seeds, and the tables gathered from their run directories.

Each cell is an ordinary run directory, `<out>/runs/<variant>-seed<seed>`, so
re-running the study skips finished cells (their summary says completed) and
resumes an interrupted one. A run that diverges is recorded as failed and the
grid goes on.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import keras
import pandas as pd

from keras_attn.training.files import atomic_write_json, atomic_write_text, read_json
from keras_attn.training.run import TrainingDiverged

RUN_COLUMNS = (
    "variant",
    "seed",
    "status",
    "best_val_accuracy",
    "best_epoch",
    "final_val_accuracy",
    "test_accuracy",
    "test_accuracy_last",
    "test_loss",
    "num_test",
    "epochs_completed",
    "wall_seconds",
    "run_dir",
    "failure",
)


def run_dir_for(out: Path, variant: str, seed: int) -> Path:
    return Path(out) / "runs" / f"{variant}-seed{seed}"


def grid_cells(variants: Sequence[str], seeds: Sequence[int]) -> list[tuple[str, int]]:
    """Seed-major order: after each seed every variant has a run, so a study cut short
    still pairs each variant with the baseline."""
    return [(variant, seed) for seed in seeds for variant in variants]


def run_grid(
    out: Path,
    variants: Sequence[str],
    seeds: Sequence[int],
    run_one: Callable[[str, int, Path], object],
) -> dict[str, int]:
    """Runs every cell not finished yet; returns counts of completed and failed runs.

    `run_one(variant, seed, run_dir)` trains (or resumes, or reports) one cell.
    """
    counts = {"completed": 0, "failed": 0}
    cells = grid_cells(variants, seeds)
    for number, (variant, seed) in enumerate(cells, 1):
        run_dir = run_dir_for(out, variant, seed)
        print(f"[study] run {number}/{len(cells)}: {variant}, seed {seed} -> {run_dir}", flush=True)
        try:
            run_one(variant, seed, run_dir)
            counts["completed"] += 1
        except TrainingDiverged as err:
            # summary.json already says "diverged"; the study counts it and goes on.
            print(f"[study] {variant} seed {seed} failed: {err}", flush=True)
            counts["failed"] += 1
        free_memory()
    return counts


def free_memory() -> None:
    """What Keras Tuner does between trials: drop the finished run's graph and model."""
    keras.backend.clear_session()
    gc.collect()


def collect(
    out: Path, variants: Sequence[str], seeds: Sequence[int]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`(curves, runs)`: every cell's history.csv rows, and one row per cell.

    A cell without a summary (never started) is listed with status "missing".
    """
    curves, runs = [], []
    for variant, seed in grid_cells(variants, seeds):
        run_dir = run_dir_for(out, variant, seed)
        summary = read_json(run_dir / "summary.json", default={})
        status = summary.get("status", "missing")
        runs.append(
            dict(
                variant=variant,
                seed=seed,
                status="failed" if status == "diverged" else status,
                best_val_accuracy=summary.get("best_val_accuracy"),
                best_epoch=summary.get("best_epoch"),
                final_val_accuracy=summary.get("final_val_accuracy"),
                test_accuracy=summary.get("test_accuracy"),
                test_accuracy_last=summary.get("test_accuracy_last"),
                test_loss=summary.get("test_loss"),
                num_test=summary.get("num_test"),
                epochs_completed=summary.get("epochs_completed", 0),
                wall_seconds=summary.get("wall_seconds", 0.0),
                run_dir=str(run_dir),
                failure=summary.get("failure", ""),
            )
        )
        history_path = run_dir / "history.csv"
        if history_path.exists():
            history = pd.read_csv(history_path)
            curves.append(history.assign(variant=variant, seed=seed))
    curves_table = pd.concat(curves, ignore_index=True) if curves else pd.DataFrame()
    if not curves_table.empty:
        first = ["variant", "seed", "epoch"]
        curves_table = curves_table[first + [c for c in curves_table if c not in first]]
    return curves_table, pd.DataFrame(runs, columns=list(RUN_COLUMNS))


def write_tables(out: Path, curves: pd.DataFrame, runs: pd.DataFrame) -> None:
    """`results.csv` (one row per run) and `curves.csv` (one row per run and epoch)."""
    atomic_write_text(Path(out) / "results.csv", runs.to_csv(index=False))
    atomic_write_text(Path(out) / "curves.csv", curves.to_csv(index=False))


def write_study_file(out: Path, study: dict) -> None:
    """`study.json`: what was asked for (kind, variants, seeds, settings, command)."""
    atomic_write_json(Path(out) / "study.json", json.loads(json.dumps(study, default=str)))
