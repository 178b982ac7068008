"""One training run in one run directory: the unit the CLIs, the tuner and the study share.

A run directory holds `config.json` (the resolved config), `history.csv`,
`summary.json`, `best.keras`, `logs/` (TensorBoard) and, while a run is
unfinished, `backup/` (what `EpochBackup` resumes from).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from keras_attn.errors import UserError
from keras_attn.files import atomic_path
from keras_attn.training import acceleration
from keras_attn.training.callbacks import (
    BestCheckpoint,
    EpochBackup,
    EpochLine,
    HistoryCSV,
    LearningRateLogger,
    PatienceStop,
    predict_logits,
)
from keras_attn.training.config import TrainingSpec
from keras_attn.training.distribute import distribution_strategy
from keras_attn.training.files import atomic_write_json, read_json
from keras_attn.training.interrupt import InterruptCheck
from keras_attn.training.optim import make_loss, make_optimizer
from keras_attn.training.stability import GeneralizationGap, with_stability_metrics


class TrainingDiverged(Exception):
    """The loss became NaN or infinite; `best.keras` still holds the last good model."""


class RunDirConflict(UserError):
    """`run_dir` holds a run whose config differs from the requested one in `changed`;
    the message gives a training CLI's remedies (a study words its own)."""

    def __init__(self, run_dir: Path, changed: list[str]):
        self.run_dir, self.changed = run_dir, changed
        super().__init__(
            f"{run_dir} holds a run with a different config (differs in: {', '.join(changed)}); "
            "pass --overwrite to replace it or choose another --run-dir"
        )


def _differences(previous: dict, config: dict, defaults: dict) -> list[str]:
    """Settings that differ; one the previous run predates matches at its default
    (a setting is only ever added with a default that keeps what runs computed before)."""
    changed = []
    for key in sorted(set(previous) | set(config)):
        if key not in previous and key in defaults and config[key] in (None, defaults[key]):
            continue
        if previous.get(key) != config.get(key):
            changed.append(key)
    return changed


def _changed_settings(config_path: Path, spec: TrainingSpec, config: dict) -> list[str]:
    """The settings in which the run at `config_path` differs from `config` (`spec`'s)."""
    defaults = json.loads(json.dumps(type(spec)().config(), default=str))
    return _differences(type(spec).upgrade(read_json(config_path)), config, defaults)


def intra_op_threads() -> int:
    """The threads TensorFlow's ops run on: as set, else its environment variable, else
    (TensorFlow's default) every core."""
    set_here = tf.config.threading.get_intra_op_parallelism_threads()
    return set_here or int(os.environ.get("TF_NUM_INTRAOP_THREADS") or 0) or os.cpu_count()


def prepare_run_dir(run_dir: Path, spec: TrainingSpec) -> None:
    """Creates `run_dir` for `spec`, or accepts it for a resume if it holds the same config."""
    config = json.loads(json.dumps(spec.config(), default=str))
    config_path = run_dir / "config.json"
    if run_dir.exists() and spec.overwrite:
        shutil.rmtree(run_dir)
    if config_path.exists():
        changed = _changed_settings(config_path, spec, config)
        if changed:
            raise RunDirConflict(run_dir, changed)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(config_path, config)


def _read_summary(run_dir: Path, cfg: TrainingSpec, until_epoch: int | None) -> dict:
    """`summary.json` of `run_dir` ({} for a new run), its status `completed` when every
    epoch up to `until_epoch` (default: all) is done."""
    summary = read_json(run_dir / "summary.json", default={})
    # Killed after EpochBackup dropped its backup at the end but before the summary
    # said "completed": every epoch is done, so the run is finished, not to be restarted.
    last_epoch = min(until_epoch or cfg.epochs, cfg.epochs)
    if summary.get("epochs_completed", 0) >= last_epoch and (run_dir / "best.keras").exists():
        summary["status"] = "completed"
    return summary


def _report_complete(run_dir: Path, summary: dict) -> None:
    print(f"{run_dir} is already complete; nothing to do.")
    print(f"Best val_acc = {summary['best_val_accuracy']:.4f}")


def finished_run(
    run_dir: str | Path, cfg: TrainingSpec, test_scored: bool, until_epoch: int | None = None
) -> dict | None:
    """What `run_training` would return for `run_dir`, reported the same way, if it holds
    a complete run of `cfg` with nothing left to do (with `test_scored`, its test score
    included); else None, leaving everything to `run_training`.

    Needs no data and no model: a CLI calls it first, so that running a finished run's
    command again does not load the data only to find there is nothing to do.
    """
    cfg.validate()
    run_dir = Path(run_dir)
    config_path = run_dir / "config.json"
    if cfg.overwrite or not config_path.exists():
        return None
    config = json.loads(json.dumps(cfg.config(), default=str))
    if _changed_settings(config_path, cfg, config):
        return None  # run_training says how it differs
    summary = _read_summary(run_dir, cfg, until_epoch)
    if summary.get("status") != "completed" or (test_scored and "test_accuracy" not in summary):
        return None
    prepare_run_dir(run_dir, cfg)  # what run_training does first (rewrites config.json)
    _report_complete(run_dir, summary)
    return summary


def execution_size(requested: int, steps_per_epoch: int) -> int:
    """The largest divisor of `steps_per_epoch` not above `requested`.

    Keras runs whole executions, so one that does not divide the epoch would take
    batches of the next epoch (and run out of data at the end).
    """
    return max(d for d in range(1, min(requested, steps_per_epoch) + 1) if steps_per_epoch % d == 0)


def without_autotuning(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """`dataset` with tf.data's autotuning off: the same elements in the same order.

    The autotuner's thread sleeps between its rounds, twice as long after each (up to a
    minute), and on TF 2.21 an iterator's destructor waits for that sleep to end, holding
    the GIL: measured here, up to a minute idle when fit returns and up to a pass's length
    after each validation and test pass (benchmarks/startup.py). Without it an AUTOTUNE map
    runs one call per core and an AUTOTUNE prefetch grows its buffer when it runs dry; the
    project's pipelines are far faster than the models they feed either way.
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


def _one_hot(num_classes: int):
    def convert(x, y):
        return x, tf.one_hot(y, num_classes)

    return convert


def compile_for_training(
    build_model: Callable[[], keras.Model], cfg: TrainingSpec, steps_per_epoch: int
) -> keras.Model:
    """Seeds, builds and compiles the model as every run trains it: distribution
    strategy, precision policy, float32 logits, stability metrics, optimizer and
    schedule, loss, XLA and steps per execution. The tuner builds its trials with it."""
    keras.utils.set_random_seed(cfg.seed)
    if cfg.deterministic:
        tf.config.experimental.enable_op_determinism()
    precision, _ = acceleration.resolve_precision(cfg.mixed_precision, cfg.BF16_PAYS_ON_CPU)
    # Variables created in the strategy's scope are mirrored; fit then splits each batch.
    with distribution_strategy(cfg.strategy).scope(), acceleration.precision_policy(precision):
        model = with_stability_metrics(acceleration.float32_logits(build_model()))
        # Under float16 Keras wraps the optimizer in a LossScaleOptimizer (not bfloat16:
        # it has float32's exponent range).
        model.compile(
            optimizer=make_optimizer(cfg, steps_per_epoch, model),
            loss=make_loss(cfg),
            metrics=["accuracy"],
            jit_compile=acceleration.resolve(cfg.jit_compile),
            steps_per_execution=execution_size(cfg.steps_per_execution, steps_per_epoch),
        )
    return model


def run_training(
    build_model: Callable[[], keras.Model],
    train_data: Callable[[int, int], tf.data.Dataset],
    val_data: tf.data.Dataset,
    steps_per_epoch: int,
    cfg: TrainingSpec,
    run_dir: str | Path,
    summary_extra: dict | None = None,
    extra_callbacks: list | None = None,
    progress_bar: bool | None = None,
    measure_callbacks: list | None = None,
    model: keras.Model | None = None,
    initial_epoch: int = 0,
    until_epoch: int | None = None,
    test_data: tf.data.Dataset | None = None,
) -> dict:
    """Trains (or resumes, or just reports) the run in `run_dir`; returns its summary.

    Args:
        build_model: builds the model (logits output); called after seeding, so
            initial weights depend on `cfg.seed` only.
        train_data: `train_data(start_epoch, epochs)` -> dataset of `(x, int label)`
            batches covering those epochs back to back, `steps_per_epoch` each.
        val_data: dataset of `(x, int label)` batches, fixed order.
        cfg: the run's spec; `config.json` holds `cfg.config()` and a resume requires
            the same config.
        summary_extra: merged into `summary.json` (data counts, skipped files...).
        progress_bar: Keras' progress bar besides the epoch lines; default: on a terminal.
        measure_callbacks: callbacks that add measurements to the epoch logs (attention
            focus...); they run before the logs are written to history.csv and TensorBoard.
        model: the model `compile_for_training` built (a tuner trial); default: built here.
        initial_epoch: a fresh run starts here with `model`'s weights (Hyperband
            continuing an earlier trial); the schedule continues from there too.
        until_epoch: stop after this epoch of the `cfg.epochs` the schedule spans
            (a Hyperband round); default: all of them.
        test_data: batches like `val_data`; once the run is complete, `best.keras` (chosen
            on validation) is evaluated on it once, into `test_accuracy` / `test_loss`.
    """
    cfg.validate()
    run_dir = Path(run_dir)
    prepare_run_dir(run_dir, cfg)
    summary_path = run_dir / "summary.json"
    summary = _read_summary(run_dir, cfg, until_epoch)
    last_epoch = min(until_epoch or cfg.epochs, cfg.epochs)
    if summary.get("status") == "completed":
        _report_complete(run_dir, summary)
        if test_data is not None and "test_accuracy" not in summary:
            summary.update(evaluate_best(run_dir, cfg, test_data))
            atomic_write_json(summary_path, summary)
        return summary

    backup_dir = run_dir / "backup"
    start_epoch = EpochBackup.resume_epoch(backup_dir)
    if model is None:
        model = compile_for_training(build_model, cfg, steps_per_epoch)
    if start_epoch:  # the optimizer's slots are made in the model's own strategy
        with model.distribute_strategy.scope():
            EpochBackup.restore(model, backup_dir)
    elif initial_epoch:
        start_epoch = initial_epoch
        model.optimizer.iterations.assign(initial_epoch * steps_per_epoch)
    else:
        # An attempt stopped before its first backup starts again from epoch 1: the
        # epochs it logged would show twice in TensorBoard.
        for split in ("train", "validation"):
            shutil.rmtree(run_dir / "logs" / split, ignore_errors=True)
    num_classes = int(model.output.shape[-1])

    print(acceleration.precision_line(cfg.mixed_precision, cfg.BF16_PAYS_ON_CPU))
    if start_epoch:
        print(f"Resuming {run_dir} at epoch {start_epoch + 1}/{cfg.epochs}")
    to_one_hot = _one_hot(num_classes)
    train = without_autotuning(train_data(start_epoch, last_epoch).map(to_one_hot))
    val = without_autotuning(val_data.map(to_one_hot))

    previous_wall = float(summary.get("wall_seconds", 0.0))
    started = time.perf_counter()
    best = BestCheckpoint(
        run_dir / "best.keras",
        best=summary.get("best_val_accuracy", -math.inf) if start_epoch else -math.inf,
        best_epoch=summary.get("best_epoch", 0) if start_epoch else 0,
    )
    summary = {**summary, **(summary_extra or {}), "epochs": cfg.epochs}
    # What the run computed in (the dtype policy, the threads), for the report: one- and
    # two-thread runs of one config differ numerically.
    summary.update(
        precision=model.dtype_policy.name,
        xla=bool(model.jit_compile),
        intra_op_threads=intra_op_threads(),
    )

    def write_summary(status: str, epochs_completed: int, **more) -> None:
        summary.update(
            status=status,
            epochs_completed=epochs_completed,
            best_val_accuracy=best.best if best.best_epoch else None,
            best_epoch=best.best_epoch,
            wall_seconds=round(previous_wall + time.perf_counter() - started, 2),
            **more,
        )
        atomic_write_json(summary_path, summary)

    last_logs: dict = {}

    def after_epoch(epoch: int, logs: dict) -> None:
        last_logs.update(logs)
        write_summary("running", epoch, final_val_accuracy=logs.get("val_accuracy"))

    epoch_line = EpochLine(cfg.epochs, on_epoch=after_epoch)
    if progress_bar is None:
        progress_bar = sys.stdout.isatty()
    # An explicit ProgbarLogger ends its line before the epoch line is printed.
    progbar = [keras.callbacks.ProgbarLogger()] if progress_bar else []
    callbacks = [
        keras.callbacks.TerminateOnNaN(raise_error=True),
        LearningRateLogger(),
        GeneralizationGap(),
        *(measure_callbacks or []),
        keras.callbacks.TensorBoard(run_dir / "logs", write_graph=False, profile_batch=0),
        HistoryCSV(run_dir / "history.csv"),
        best,
        *progbar,
        epoch_line,
        *(extra_callbacks or []),
    ]
    if cfg.early_stopping:
        monitor = cfg.early_stopping_on
        callbacks.append(
            PatienceStop(
                monitor,
                cfg.early_stopping,
                _logged(run_dir, monitor, start_epoch),
                start=cfg.early_stopping_start,
            )
        )
    # Last, so an epoch is only marked done once everything above has been written.
    callbacks.append(EpochBackup(backup_dir))

    write_summary("running", start_epoch)
    # Creates the optimizer's and the compiled metrics' variables now, as Keras itself does
    # under a distribution strategy (Keras 3.15 defers it to the first trace otherwise):
    # variables created while tracing make TensorFlow trace the train step a second time,
    # which took about as long as the first (~4 s of CPU for the default image model).
    with model.distribute_strategy.scope():
        model._symbolic_build(data_batch=train.element_spec)
    interrupt_check = InterruptCheck()
    try:
        with interrupt_check:
            model.fit(
                train,
                epochs=last_epoch,
                initial_epoch=start_epoch,
                steps_per_epoch=steps_per_epoch,
                validation_data=val,
                callbacks=[interrupt_check, *callbacks],
                verbose=1 if progress_bar else 0,
                shuffle=False,  # the datasets fix the order per seed and epoch
            )
    except RuntimeError as err:
        if "NaN or Inf loss" not in str(err):
            raise
        epoch = epoch_line.current_epoch
        write_summary("diverged", epoch - 1, failure=f"loss diverged in epoch {epoch}: {err}")
        raise TrainingDiverged(
            f"training diverged in epoch {epoch} ({str(err).split('.')[0]}); "
            f"best.keras keeps the last good model (epoch {best.best_epoch})"
        ) from None
    except KeyboardInterrupt:
        # Ctrl-C between an epoch's end and the next one's start: that epoch is done.
        done = max(epoch_line.current_epoch - 1, int(summary.get("epochs_completed", 0)))
        write_summary("interrupted", done)
        raise

    epochs_done = int(summary.get("epochs_completed", start_epoch))
    stopped_early = epochs_done < last_epoch
    write_summary("completed", epochs_done, stopped_early=stopped_early)
    if best.best_epoch:
        print(f"Best val_acc = {best.best:.4f}")
    if test_data is not None and best.best_epoch:
        last_is_best = best.best_epoch == epochs_done
        summary.update(evaluate_best(run_dir, cfg, test_data, model, last_is_best))
        atomic_write_json(summary_path, summary)
        print(
            f"Test (best-val model, epoch {best.best_epoch}): "
            f"accuracy {summary['test_accuracy']:.4f}, loss {summary['test_loss']:.4f}; "
            f"last epoch's model: accuracy {summary['test_accuracy_last']:.4f}"
        )
    return summary


def _logged(run_dir: Path, column: str, epochs: int) -> list[float]:
    """`column` of history.csv for the first `epochs` epochs (what a resumed run has done)."""
    path = run_dir / "history.csv"
    if not epochs or not path.exists():
        return []
    history = pd.read_csv(path)
    return history.loc[history["epoch"] <= epochs, column].dropna().tolist()


def evaluate_best(
    run_dir: Path,
    cfg: TrainingSpec,
    test_data: tf.data.Dataset,
    last_model=None,
    last_is_best: bool = False,
) -> dict:
    """`best.keras` (and `last_model`, the last epoch's) on the test split, once.

    The only place a run touches test data, and nothing is chosen from what it returns.
    Writes `test_predictions.npz` (every test example's `label`, the best-val model's
    `predicted` class and float16 `probabilities` (N, classes), and `predicted_last`
    when `last_model` is given) so every test figure can be recomputed, e.g. bootstrapped.
    `last_is_best`: the best epoch was the last, so `last_model` holds best.keras's
    weights and is scored once for both.
    """
    if last_is_best and last_model is not None:
        best = last_model
    else:
        best = keras.saving.load_model(Path(run_dir) / "best.keras", compile=False)
    test_data = without_autotuning(test_data)
    labels, logits = predict_logits(best, test_data)
    scores = _scores(cfg, labels, logits)
    arrays = dict(
        label=labels.astype(np.int16),
        predicted=logits.argmax(-1).astype(np.int16),
        probabilities=keras.ops.convert_to_numpy(keras.ops.softmax(logits)).astype(np.float16),
    )
    result = dict(test_accuracy=scores["accuracy"], test_loss=scores["loss"])
    if last_model is not None:
        _, last_logits = (
            (labels, logits) if best is last_model else predict_logits(last_model, test_data)
        )
        last = _scores(cfg, labels, last_logits)
        result.update(test_accuracy_last=last["accuracy"], test_loss_last=last["loss"])
        arrays["predicted_last"] = last_logits.argmax(-1).astype(np.int16)
    result["num_test"] = len(labels)
    with atomic_path(Path(run_dir) / "test_predictions.npz") as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
    return result


def _scores(cfg: TrainingSpec, labels: np.ndarray, logits: np.ndarray) -> dict:
    one_hot = np.eye(logits.shape[-1], dtype=np.float32)[labels]
    loss = keras.ops.convert_to_numpy(make_loss(cfg)(one_hot, logits))
    return dict(accuracy=float(np.mean(logits.argmax(-1) == labels)), loss=float(loss))
