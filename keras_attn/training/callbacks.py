"""Callbacks of a training run: history, best checkpoint, epoch lines, learning rate."""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from keras_attn.files import (
    atomic_path,
    atomic_save_model,
    atomic_write_json,
    atomic_write_text,
    read_json,
)


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


class PatienceStop(keras.callbacks.Callback):
    """Stops once `monitor` has not improved for `patience` epochs (loss: lower is better).

    Unlike `keras.callbacks.EarlyStopping` it survives a resume: `previous` holds the
    monitored values of the epochs done before (from history.csv), so a run killed and
    resumed stops at the same epoch as one never interrupted. Ties are no improvement.
    As Keras' `start_from_epoch`, the first `start` epochs are not watched: neither a
    candidate for the best nor counted against the patience.
    """

    def __init__(self, monitor: str, patience: int, previous=(), start: int = 0):
        super().__init__()
        self.monitor = monitor
        self.patience = int(patience)
        self.start = int(start)
        self.values = [float(v) for v in previous]
        self.sign = -1.0 if monitor.endswith("loss") else 1.0

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            return
        self.values.append(float(value))
        watched = self.values[self.start :]
        if not watched:
            return
        best = int(np.argmax(self.sign * np.asarray(watched)))  # the first best
        if len(watched) - 1 - best >= self.patience:
            self.model.stop_training = True


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
            ("val_top5_accuracy", "val_top5"),
            ("val_top10_accuracy", "val_top10"),
            ("val_class_top1_accuracy", "val_class_acc"),
        ):
            if key in logs:
                parts.append(f"{label}={logs[key]:.4f}")
        print(" | ".join(parts), flush=True)
        if self.on_epoch is not None:
            self.on_epoch(epoch + 1, logs)


TOP_K = (1, 5, 10)


def top_k_values(num_classes: int) -> list[int]:
    """The k of top-k worth reporting: 1, 5 and 10 where k is smaller than the class count."""
    return [k for k in TOP_K if k == 1 or k < num_classes]


def top_k_scores(labels: np.ndarray, logits: np.ndarray, prefix: str = "") -> dict:
    """Top-k accuracy per instance (`<prefix>top<k>_accuracy`) and per class, the mean over
    the classes present (`<prefix>class_top<k>_accuracy`), for `top_k_values`.

    A tie with the true class's logit counts against it, so ties never flatter a model.
    """
    labels = np.asarray(labels, dtype=np.int64)
    logits = np.asarray(logits, dtype=np.float32)
    true = logits[np.arange(len(labels)), labels]
    rank = (logits > true[:, None]).sum(-1) + (logits == true[:, None]).sum(-1) - 1
    present = np.unique(labels)
    out = {}
    for k in top_k_values(logits.shape[-1]):
        hit = rank < k
        out[f"{prefix}top{k}_accuracy"] = float(hit.mean())
        out[f"{prefix}class_top{k}_accuracy"] = float(
            np.mean([hit[labels == c].mean() for c in present])
        )
    return out


def predict_logits(model, dataset) -> tuple[np.ndarray, np.ndarray]:
    """`(labels, logits)` of `model` over `(x, int label)` batches, in order."""
    labels, logits = [], []
    for x, y in dataset:
        logits.append(np.asarray(model.predict_on_batch(x), dtype=np.float32))
        labels.append(np.asarray(y))
    return np.concatenate(labels), np.concatenate(logits)


class TopKMetrics(keras.callbacks.Callback):
    """Adds validation top-k accuracies, per instance and per class, to the epoch logs.

    One extra pass over `val_data` (`(x, int label)` batches) per epoch; as a measure
    callback its values reach history.csv, TensorBoard and the epoch line. `val_top1_accuracy`
    is Keras' `val_accuracy` computed again (so the two must agree).
    """

    def __init__(self, val_data):
        super().__init__()
        self.val_data = val_data

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        labels, logits = predict_logits(self.model, self.val_data)
        logs.update(top_k_scores(labels, logits, prefix="val_"))


class EpochBackup(keras.callbacks.Callback):
    """The state to resume from after every epoch, in `backup_dir`, safe against kill -9.

    Keras' BackupAndRestore overwrites `latest.weights.h5` in place, so a kill while it
    writes leaves a file that cannot be opened (and with `double_checkpoint` a kill during
    its copy spoils the spare). Here the weights (model and optimizer state) go to a new
    file `epoch_<N>.weights.h5` under a temporary name, renamed when complete; then
    `training_metadata.json` (written atomically) names it; only then are older files
    removed. Whatever the moment of a kill, the metadata names a complete file.
    The backup is removed when training ends normally.

    The metadata also holds the random-seed states of layers such as Dropout, which
    `save_weights` leaves out: without them a run resumed in a new process draws
    other dropout masks than an uninterrupted one from the resumed epoch on.
    """

    METADATA = "training_metadata.json"

    def __init__(self, backup_dir):
        super().__init__()
        self.backup_dir = Path(backup_dir)

    @classmethod
    def resume_epoch(cls, backup_dir) -> int:
        """The number of finished epochs the backup holds (0 without a usable backup)."""
        metadata = read_json(Path(backup_dir) / cls.METADATA, default={})
        weights = Path(backup_dir) / str(metadata.get("weights", ""))
        return int(metadata.get("epoch", 0)) if weights.is_file() else 0

    @classmethod
    def restore(cls, model, backup_dir) -> None:
        """Loads the backed-up weights and optimizer state into a compiled `model`."""
        metadata = read_json(Path(backup_dir) / cls.METADATA)
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        model.load_weights(Path(backup_dir) / metadata["weights"])
        if "seed_states" in metadata:  # absent in backups made before they were kept
            for variable, value in zip(_seed_states(model), metadata["seed_states"], strict=True):
                variable.assign(np.asarray(value, dtype=variable.dtype))

    def on_epoch_end(self, epoch, logs=None):
        self.backup_dir.mkdir(parents=True, exist_ok=True)
        name = f"epoch_{epoch + 1}.weights.h5"
        with atomic_path(self.backup_dir / name) as tmp:
            self.model.save_weights(tmp, overwrite=True)
        seeds = [np.asarray(v).tolist() for v in _seed_states(self.model)]
        atomic_write_json(
            self.backup_dir / self.METADATA,
            {"epoch": epoch + 1, "weights": name, "seed_states": seeds},
        )
        for old in self.backup_dir.glob("*.weights.h5"):
            if old.name != name:
                old.unlink(missing_ok=True)

    def on_train_end(self, logs=None):
        shutil.rmtree(self.backup_dir, ignore_errors=True)


def _seed_states(model) -> list:
    """The SeedGenerator states of `model`'s layers, in a fixed order.

    `model.variables` is every piece of layer state, seeds included; `model.weights`
    is what `save_weights` writes. The difference is the seed states.
    """
    saved = {id(v) for v in model.weights}
    return [v for v in model.variables if id(v) not in saved]
