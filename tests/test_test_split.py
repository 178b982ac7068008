"""The test split is scored once, with the model chosen on validation, and never before."""

import json

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

import keras_attn  # noqa: F401  (registers StabilityModel for load_model)
from keras_attn.training.config import TrainingSpec
from keras_attn.training.run import run_training

N, FEATURES, CLASSES = 48, 6, 3


def _split(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, FEATURES)).astype("float32")
    return x, (x[:, 0] > 0).astype("int32") + (x[:, 1] > 0.5).astype("int32")


def _batches(seed):
    return tf.data.Dataset.from_tensor_slices(_split(seed)).batch(16)


def _build():
    inputs = keras.Input((FEATURES,))
    return keras.Model(inputs, keras.layers.Dense(CLASSES)(keras.layers.Dense(8)(inputs)))


def _run(run_dir, test=True, epochs=3):
    spec = TrainingSpec(epochs=epochs, batch_size=16, lr=5e-2)
    return run_training(
        _build,
        lambda start, end: _batches(0).repeat(end - start),
        _batches(1),
        N // 16,
        spec,
        run_dir,
        test_data=_batches(2) if test else None,
    )


def _score(path, seed):
    model = keras.saving.load_model(path, compile=False)
    x, y = _split(seed)
    logits = model.predict(x, verbose=0)
    accuracy = float(np.mean(logits.argmax(-1) == y))
    loss = float(
        keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1)(
            np.eye(CLASSES)[y], logits
        )
    )
    return accuracy, loss


def test_the_best_val_model_is_scored_once_on_test(tmp_path):
    summary = _run(tmp_path / "run")
    accuracy, loss = _score(tmp_path / "run" / "best.keras", seed=2)
    assert summary["test_accuracy"] == pytest.approx(accuracy)
    assert summary["test_loss"] == pytest.approx(loss, rel=1e-5)
    on_disk = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert on_disk["test_accuracy"] == summary["test_accuracy"]
    # history.csv and the epoch logs never held a test figure: nothing could select on it.
    header = (tmp_path / "run" / "history.csv").read_text().splitlines()[0]
    assert "test" not in header


def test_a_finished_run_without_a_test_score_gets_one_and_keeps_its_training(tmp_path):
    before = _run(tmp_path / "run", test=False)
    assert "test_accuracy" not in before
    history = (tmp_path / "run" / "history.csv").read_text()
    after = _run(tmp_path / "run")
    assert (tmp_path / "run" / "history.csv").read_text() == history  # nothing retrained
    assert after["test_accuracy"] == pytest.approx(_score(tmp_path / "run" / "best.keras", 2)[0])


def test_predictions_of_both_models_are_written_and_recompute_the_scores(tmp_path):
    summary = _run(tmp_path / "run", epochs=4)
    saved = np.load(tmp_path / "run" / "test_predictions.npz")
    _, y = _split(2)
    np.testing.assert_array_equal(saved["label"], y)
    assert saved["probabilities"].shape == (N, CLASSES)
    np.testing.assert_allclose(saved["probabilities"].sum(-1), 1, atol=1e-2)
    assert summary["num_test"] == N
    assert summary["test_accuracy"] == pytest.approx(np.mean(saved["predicted"] == y))
    assert summary["test_accuracy_last"] == pytest.approx(np.mean(saved["predicted_last"] == y))
    # The last epoch's model is the one training ended with, not best.keras (unless equal).
    best_epoch = summary["best_epoch"]
    if best_epoch < 4:
        assert summary["test_loss_last"] != summary["test_loss"]


def test_early_stopping_on_val_loss_ends_the_run_and_says_so(tmp_path):
    spec = TrainingSpec(
        epochs=40, batch_size=16, lr=5e-2, early_stopping=2, early_stopping_on="val_loss"
    )
    summary = run_training(
        _build,
        lambda start, end: _batches(0).repeat(end - start),
        _batches(1),
        N // 16,
        spec,
        tmp_path / "run",
        test_data=_batches(2),
    )
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    assert summary["stopped_early"] and summary["epochs_completed"] == len(history) < 40
    best_loss_epoch = int(history["val_loss"].idxmin()) + 1
    assert len(history) == best_loss_epoch + 2  # two epochs without a lower val loss
