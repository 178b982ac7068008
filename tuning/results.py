"""The results of a search, from the oracle: trials.csv, best_hparams.json, best.keras.

Written by the process that owns the oracle (the single process, or the chief in
distributed mode) when the search ends, and again by every resume, so they always
cover every trial of the project.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pandas as pd

from keras_attn.files import atomic_path, atomic_write_json, atomic_write_text, read_json

# Keras Tuner's Hyperband bookkeeping, shown after the searched hyperparameters.
HYPERBAND_KEYS = ("tuner/epochs", "tuner/initial_epoch", "tuner/bracket", "tuner/round")
# Training-stability measurements (history.csv's columns) at the trial's best epoch.
STABILITY = ("grad_norm_mean", "grad_norm_max", "batch_loss_std", "gap_accuracy")


def _metric(trial, name):
    tracker = trial.metrics
    return tracker.get_last_value(name) if tracker.exists(name) else None


def trials_table(
    oracle, project_dir: Path, hp_names: list[str], int_names: tuple = ()
) -> pd.DataFrame:
    """One row per trial: hyperparameters, objective, best val accuracy, epochs, the
    stability measurements at the best epoch, wall time."""
    objective = oracle.objective.name
    rows = []
    for trial_id in sorted(oracle.trials):
        trial = oracle.trials[trial_id]
        values = trial.hyperparameters.values
        run = read_json(Path(project_dir) / f"trial_{trial_id}" / "run.json", default={})
        row = {"trial_id": trial_id, "status": trial.status}
        row.update({name: values.get(name) for name in hp_names})
        row.update({key: values[key] for key in HYPERBAND_KEYS if key in values})
        if "tuner/trial_id" in values:
            row["continues"] = values["tuner/trial_id"]
        if objective != "val_accuracy":
            row[objective] = trial.score
        row.update(
            best_val_accuracy=_metric(trial, "best_val_accuracy"),
            epochs=_metric(trial, "epochs"),
            best_epoch=_metric(trial, "best_epoch"),
            **{name: _metric(trial, name) for name in STABILITY},
            wall_seconds=_metric(trial, "wall_seconds"),
            tuner_id=run.get("tuner_id"),
        )
        if trial.message:
            row["error"] = trial.message.strip().splitlines()[-1]
        rows.append(row)
    order = [
        "trial_id",
        "status",
        *hp_names,
        *HYPERBAND_KEYS,
        "continues",
        objective,
        "best_val_accuracy",
        "epochs",
        "best_epoch",
        *STABILITY,
        "wall_seconds",
        "tuner_id",
        "error",
    ]
    present = {key for row in rows for key in row}
    table = pd.DataFrame(rows, columns=[c for c in dict.fromkeys(order) if c in present])
    # Integers stay integers beside the empty cells of inactive hyperparameters.
    for column in (*int_names, *HYPERBAND_KEYS, "epochs", "best_epoch"):
        if column in table:
            table[column] = table[column].astype("Int64")
    return table


def _printable(table: pd.DataFrame) -> pd.DataFrame:
    def cell(value):
        if value is None or value is pd.NA or (isinstance(value, float) and value != value):
            return "-"
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    return table.astype(object).map(cell)


def write_results(
    oracle, project_dir: str | os.PathLike, hp_names: list[str], int_names: tuple = ()
) -> pd.DataFrame:
    """Prints the trials table and writes trials.csv, best_hparams.json and best.keras."""
    project_dir = Path(project_dir)
    table = trials_table(oracle, project_dir, hp_names, int_names)
    atomic_write_text(project_dir / "trials.csv", table.to_csv(index=False))
    print(f"\nTrials of {project_dir} ({len(table)}):")
    if len(table):
        print(_printable(table).to_string(index=False))
    print(f"Table: {project_dir / 'trials.csv'}")

    completed = [t for t in oracle.trials.values() if t.status == "COMPLETED"]
    if not completed:
        print("No completed trial yet: no best_hparams.json or best.keras.")
        return table
    best = sorted(completed, key=lambda t: t.score, reverse=oracle.objective.direction == "max")[0]
    atomic_write_json(
        project_dir / "best_hparams.json",
        dict(
            trial_id=best.trial_id,
            objective=oracle.objective.name,
            direction=oracle.objective.direction,
            score=best.score,
            best_val_accuracy=_metric(best, "best_val_accuracy"),
            hyperparameters=best.hyperparameters.values,
        ),
    )
    source = project_dir / f"trial_{best.trial_id}" / "best.keras"
    target = project_dir / "best.keras"
    if source.exists():
        with atomic_path(target) as tmp:
            shutil.copyfile(source, tmp)
        saved = f"model: {target}"
    else:  # a worker on another machine, without a shared --directory, holds it
        saved = (
            f"its model is not in this directory ({source} is on the machine that ran the "
            "trial: share --directory between the machines to collect it)"
        )
    print(
        f"Best: trial {best.trial_id}, {oracle.objective.name} = {best.score:.4f}; "
        f"hyperparameters: {project_dir / 'best_hparams.json'}; {saved}"
    )
    return table
