"""Keras Tuner tuners that record every trial, the project directory, and distributed mode.

A project directory `<directory>/<project>/` holds, besides Keras Tuner's own files
(`oracle.json`, `trial_<id>/trial.json`, `trial_<id>/checkpoint.weights.h5`):

    search.json            the settings the search was started with (a resume must match)
    trial_<id>/            an ordinary run directory (config.json, history.csv,
                           summary.json, best.keras by val accuracy, logs/), plus:
    trial_<id>/logs/       TensorBoard: the trial's HParams session beside its scalars in
                           train/ and validation/, best_val_accuracy and wall_seconds at the end
    trial_<id>/run.json    which tuner ran the trial, on which host, when, for how long
    trials.csv, best_hparams.json, best.keras   the results (see `tuning.results`)
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from datetime import datetime
from pathlib import Path

import keras_tuner as kt
import tensorflow as tf

from keras_attn.errors import UserError
from keras_attn.training.files import atomic_write_json, read_json


class TrialRecorder:
    """Mixin placed before a Keras Tuner tuner class: per-trial logs, model and timing.

    `run_trial` reports, with the objective, `best_val_accuracy`, `epochs`, `best_epoch`,
    `wall_seconds` and the stability measurements at the best epoch to the oracle, so
    they reach the chief's `trial.json` over gRPC even when workers do not share the
    project directory.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.trials_run = []

    def _populate_initial_space(self):
        # Keras Tuner would build the model (repeatedly) to discover the space; ours is
        # declared as data, so no model and no data are needed (a chief loads none).
        hp = self.oracle.get_space()
        self.hypermodel.declare_hyperparameters(hp)
        self.oracle.update_space(hp)

    def run_trial(self, trial, *args, **kwargs):
        started = time.perf_counter()
        trial_dir = Path(self.get_trial_dir(trial.trial_id))
        log_dir = trial_dir / "logs"  # where the trial's run writes its scalars
        write_hparams(log_dir, trial, f"{self.project_name}/{trial.trial_id}")
        record = dict(
            trial_id=trial.trial_id,
            tuner_id=self.tuner_id,
            host=socket.gethostname(),
            pid=os.getpid(),
            started=datetime.now().isoformat(timespec="seconds"),
            status="running",
        )
        atomic_write_json(trial_dir / "run.json", record)
        try:
            results = super().run_trial(trial, *args, trial_dir=trial_dir, **kwargs)
        except BaseException as err:
            status = "interrupted" if isinstance(err, KeyboardInterrupt) else "failed"
            record.update(status=status, error=f"{type(err).__name__}: {err}"[:500])
            atomic_write_json(trial_dir / "run.json", record)
            raise
        metrics = dict(results[0])
        metrics["wall_seconds"] = round(time.perf_counter() - started, 2)
        write_final_scalars(log_dir, metrics)
        record.update(
            status="completed",
            **{k: metrics[k] for k in ("wall_seconds", "epochs", "best_val_accuracy")},
        )
        atomic_write_json(trial_dir / "run.json", record)
        self.trials_run.append(trial.trial_id)
        return metrics


class RandomSearch(TrialRecorder, kt.RandomSearch):
    pass


class GridSearch(TrialRecorder, kt.GridSearch):
    pass


class BayesianOptimization(TrialRecorder, kt.BayesianOptimization):
    pass


class Hyperband(TrialRecorder, kt.Hyperband):
    pass


TUNERS = {
    "random": RandomSearch,
    "grid": GridSearch,
    "bayesian": BayesianOptimization,
    "hyperband": Hyperband,
}


def make_tuner(
    kind: str,
    hypermodel,
    objective: str,
    direction: str,
    directory: str,
    project_name: str,
    seed: int,
    max_trials: int | None = None,
    max_epochs: int | None = None,
    factor: int = 3,
    hyperband_iterations: int = 1,
    initial_points: int | None = None,
):
    """A recording tuner of `kind`; an existing project in the directory is resumed."""
    options = dict(
        hypermodel=hypermodel,
        objective=kt.Objective(objective, direction),
        directory=directory,
        project_name=project_name,
        seed=seed + 1,  # Keras Tuner takes seed 0 for "pick one at random"
        overwrite=False,  # prepare_project did --overwrite, on the chief only
    )
    if kind == "hyperband":
        options.update(
            max_epochs=max_epochs, factor=factor, hyperband_iterations=hyperband_iterations
        )
    else:
        options["max_trials"] = max_trials
    if kind == "bayesian":
        options["num_initial_points"] = initial_points
        try:
            import sklearn  # noqa: F401  (Keras Tuner's Gaussian process)
        except ImportError:
            raise UserError(
                "--tuner bayesian needs scikit-learn: pip install -r requirements.txt"
            ) from None
    return TUNERS[kind](**options)


def write_hparams(log_dir: Path, trial, session: str) -> None:
    """The trial's HParams session: its hyperparameters, named `session`.

    Sessions of the same name form one group in the dashboard, so the name holds the
    project: `tensorboard --logdir runs/tuning` shows image and video trials apart.
    """
    from tensorboard.plugins.hparams import api as hparams_api

    values = {
        name: value
        for name, value in trial.hyperparameters.values.items()
        if isinstance(value, bool | int | float | str)
    }
    writer = tf.summary.create_file_writer(str(log_dir))
    with writer.as_default():
        hparams_api.hparams(values, trial_id=session)
    writer.close()


def write_final_scalars(log_dir: Path, metrics: dict) -> None:
    """Per-trial results as scalars of the session run (HParams dashboard metrics)."""
    writer = tf.summary.create_file_writer(str(log_dir))
    with writer.as_default():
        for name in ("best_val_accuracy", "wall_seconds"):
            tf.summary.scalar(name, metrics[name], step=int(metrics["epochs"]))
    writer.close()


# ----------------------------------------------------------------------------- project


def prepare_project(project_dir: Path, settings: dict, overwrite: bool) -> None:
    """Starts the project afresh (`overwrite`) or accepts it for a resume of the same search.

    Keras Tuner restores the search space from its own state on a resume, so a
    command line that changed the space (or the data, epochs, tuner...) would be
    silently ignored: it is refused here instead. `--max-trials` may change (to
    extend a finished search).
    """
    settings = json.loads(json.dumps(settings, default=str))
    if overwrite and project_dir.exists():
        shutil.rmtree(project_dir)
    path = project_dir / "search.json"
    previous = read_json(path)
    if previous is not None and previous != settings:
        keys = set(previous) | set(settings)
        changed = sorted(k for k in keys if previous.get(k) != settings.get(k))
        raise UserError(
            f"{project_dir} holds a search started with other settings (differs in: "
            f"{', '.join(changed)}); pass --overwrite to start afresh or choose another "
            "--project-name"
        )
    project_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, settings)
