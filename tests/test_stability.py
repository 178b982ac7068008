"""Gradient norms and batch-loss spread per epoch, checked against a hand computation."""

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from keras_attn.training.config import TrainingSpec
from keras_attn.training.run import run_training
from keras_attn.training.stability import StabilityModel, with_stability_metrics


def _tiny_model():
    inputs = keras.Input((5,))
    hidden = keras.layers.Dense(7, activation="tanh", name="hidden")(inputs)
    return keras.Model(inputs, keras.layers.Dense(3, name="logits")(hidden))


def _data(n=32):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(n, 5)).astype("float32")
    y = keras.utils.to_categorical(rng.integers(0, 3, n), 3).astype("float32")
    return x, y


def test_epoch_metrics_equal_a_hand_computation_per_batch():
    keras.utils.set_random_seed(0)
    model = with_stability_metrics(_tiny_model())
    loss_fn = keras.losses.CategoricalCrossentropy(from_logits=True)
    # A learning rate of zero keeps the weights fixed, so each batch's gradient can be
    # recomputed afterwards with the same weights.
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss=loss_fn)
    x, y = _data()
    history = model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)

    norms, losses = [], []
    for start in range(0, 32, 8):
        with tf.GradientTape() as tape:
            loss = loss_fn(y[start : start + 8], model(x[start : start + 8], training=True))
        grads = tape.gradient(loss, model.trainable_weights)
        norms.append(float(tf.linalg.global_norm(grads)))
        losses.append(float(loss))
    logs = {k: v[-1] for k, v in history.history.items()}
    assert logs["grad_norm_mean"] == pytest.approx(np.mean(norms), rel=1e-5)
    assert logs["grad_norm_max"] == pytest.approx(np.max(norms), rel=1e-5)
    assert logs["batch_loss_std"] == pytest.approx(np.std(losses), rel=1e-4, abs=1e-7)
    assert np.std(losses) > 1e-3  # the spread being checked is not trivially zero
    # Reset every epoch: epoch 1 saw the same batches, so it reports the same values.
    assert history.history["grad_norm_max"][0] == pytest.approx(logs["grad_norm_max"], rel=1e-5)


def test_run_writes_stability_columns_not_their_val_twins_and_best_model_loads(tmp_path):
    x, y = _data(64)
    labels = y.argmax(1).astype("int32")

    def train_data(start, end):
        one = tf.data.Dataset.from_tensor_slices((x, labels)).batch(16)
        return tf.data.Dataset.range(start, end).flat_map(lambda _: one)

    val = tf.data.Dataset.from_tensor_slices((x, labels)).batch(16)
    cfg = TrainingSpec(epochs=3, batch_size=16, lr=1e-2)
    run_training(_tiny_model, train_data, val, 4, cfg, tmp_path / "run")

    history = pd.read_csv(tmp_path / "run" / "history.csv")
    for column in ("grad_norm_mean", "grad_norm_max", "batch_loss_std", "gap_accuracy"):
        assert history[column].notna().all(), column
    assert (history["grad_norm_max"] >= history["grad_norm_mean"]).all()
    assert (history["grad_norm_mean"] > 0).all()
    assert history["gap_accuracy"].to_numpy() == pytest.approx(
        (history["accuracy"] - history["val_accuracy"]).to_numpy()
    )
    assert history["gap_loss"].to_numpy() == pytest.approx(
        (history["val_loss"] - history["loss"]).to_numpy()
    )
    assert not [c for c in history.columns if c.startswith("val_grad") or c == "val_batch_loss_std"]

    model = keras.saving.load_model(tmp_path / "run" / "best.keras", safe_mode=True)
    assert isinstance(model, StabilityModel)
    assert model.predict(x, verbose=0).shape == (64, 3)
