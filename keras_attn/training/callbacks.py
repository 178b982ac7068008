"""Callbacks of a training run: history, best checkpoint, epoch lines, learning rate."""

from __future__ import annotations

import math
import time

import keras
import pandas as pd

from keras_attn.training.files import atomic_save_model, atomic_write_text


class LearningRateLogger(keras.callbacks.Callback):
    """Adds `learning_rate` to the epoch logs, so history.csv and TensorBoard get it.

    Placed before the callbacks that read the logs: they all share one dict.
    """

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(
                keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)
            )


class HistoryCSV(keras.callbacks.Callback):
    """`history.csv`, one row per epoch (1-based `epoch` column), rewritten atomically.

    Rows from an epoch that is being re-run after a resume are replaced, so every
    epoch appears once however the previous process ended.
    """

    def __init__(self, path):
        super().__init__()
        self.path = path
        self._epoch_start = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}}
        row["epoch_seconds"] = time.perf_counter() - self._epoch_start
        try:
            old = pd.read_csv(self.path)
            old = old[old["epoch"] < epoch + 1]
        except (FileNotFoundError, pd.errors.EmptyDataError):
            old = pd.DataFrame()
        table = pd.concat([old, pd.DataFrame([row])], ignore_index=True)
        atomic_write_text(self.path, table.to_csv(index=False))


class BestCheckpoint(keras.callbacks.Callback):
    """Saves `best.keras` when val accuracy improves; atomic, unlike ModelCheckpoint.

    `best` and `best_epoch` (1-based) start from a resumed run's summary so a
    resumed run never replaces a better model with a worse one.
    """

    def __init__(self, path, monitor="val_accuracy", best=-math.inf, best_epoch=0):
        super().__init__()
        self.path = path
        self.monitor = monitor
        self.best = best
        self.best_epoch = best_epoch

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is not None and value > self.best:
            self.best, self.best_epoch = float(value), epoch + 1
            atomic_save_model(self.model, self.path)


class EpochLine(keras.callbacks.Callback):
    """One line per epoch in the original study's style, beside Keras' progress bar.

    `Epoch 099/100 | loss=1.2345 | train_acc=0.5447 | val_acc=0.4835`
    """

    def __init__(self, epochs, on_epoch=None):
        super().__init__()
        self.epochs = epochs
        self.on_epoch = on_epoch
        self.current_epoch = 0
        self.width = len(str(epochs))

    def on_epoch_begin(self, epoch, logs=None):
        self.current_epoch = epoch + 1

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        parts = [f"Epoch {epoch + 1:0{max(2, self.width)}d}/{self.epochs}"]
        for key, label in (
            ("loss", "loss"),
            ("accuracy", "train_acc"),
            ("val_loss", "val_loss"),
            ("val_accuracy", "val_acc"),
        ):
            if key in logs:
                parts.append(f"{label}={logs[key]:.4f}")
        print(" | ".join(parts), flush=True)
        if self.on_epoch is not None:
            self.on_epoch(epoch + 1, logs)
