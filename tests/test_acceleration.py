"""--mixed-precision and --jit-compile: checked for correctness on CPU."""

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from keras_attn.layers import attention_names
from keras_attn.models.image import build_image_model
from keras_attn.training import acceleration
from keras_attn.training.config import TrainingSpec
from keras_attn.training.run import run_training


def test_auto_is_off_without_a_gpu_and_bad_settings_are_refused():
    assert not tf.config.list_physical_devices("GPU")  # this machine; CI too
    assert acceleration.resolve("auto") is False
    assert acceleration.resolve("on") is True and acceleration.resolve("off") is False
    with pytest.raises(ValueError, match="unknown setting 'fast'"):
        acceleration.resolve("fast")
    with pytest.raises(ValueError, match="unknown jit compile 'yes'; valid: auto, on, off"):
        TrainingSpec(jit_compile="yes").validate()


@pytest.mark.parametrize("attention", attention_names())
def test_every_attention_gives_the_float32_logits_in_mixed_precision(attention):
    images = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    full = build_image_model(3, 32, attention=attention, seed=0)
    with acceleration.precision_policy(True):
        mixed = acceleration.float32_logits(build_image_model(3, 32, attention=attention, seed=0))
    assert keras.config.dtype_policy().name == "float32"  # restored after the build
    assert mixed.get_layer("stage1_conv1").compute_dtype == "float16"
    assert mixed.output.dtype == "float32"
    mixed.set_weights(full.get_weights())  # the variables stay float32 in both
    expected = full.predict(images, verbose=0)
    got = mixed.predict(images, verbose=0)
    assert got.dtype == np.float32 and np.isfinite(got).all()
    np.testing.assert_allclose(got, expected, atol=0.05 * np.abs(expected).max() + 1e-2)


def _run(tmp_path, name, **cfg):
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 255, (48, 32, 32, 3)).astype("float32")
    y = (x[:, :16].mean(axis=(1, 2, 3)) > x[:, 16:].mean(axis=(1, 2, 3))).astype("int32")

    def train_data(start, end):
        one = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
        return tf.data.Dataset.range(start, end).flat_map(lambda _: one)

    val = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    config = TrainingSpec(epochs=2, batch_size=16, lr=1e-3, **cfg)
    run_training(
        # No dropout: XLA draws other random masks, which is not what is compared here.
        lambda: build_image_model(2, 32, attention="cbam", seed=0, dropout=0.0),
        train_data,
        val,
        3,
        config,
        tmp_path / name,
    )
    return pd.read_csv(tmp_path / name / "history.csv"), tmp_path / name / "best.keras"


@pytest.mark.slow
def test_mixed_precision_and_xla_runs_train_like_the_default_one(tmp_path):
    default, _ = _run(tmp_path, "default", mixed_precision="off", jit_compile="off")
    xla, _ = _run(tmp_path, "xla", mixed_precision="off", jit_compile="on")
    mixed, best = _run(tmp_path, "mixed", mixed_precision="on", jit_compile="off")
    # XLA fuses the same float32 math differently: equal up to rounding.
    np.testing.assert_allclose(xla["loss"], default["loss"], rtol=1e-3)
    # float16 activations: close, not equal; the gradient norm is unscaled (not x loss scale).
    np.testing.assert_allclose(mixed["loss"], default["loss"], rtol=0.03)
    np.testing.assert_allclose(mixed["grad_norm_mean"], default["grad_norm_mean"], rtol=0.1)
    model = keras.saving.load_model(best)
    assert model.output.dtype == "float32"
    assert keras.config.dtype_policy().name == "float32"
