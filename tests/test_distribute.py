"""MirroredStrategy over two logical CPU devices gives the results of one device."""

import json
import subprocess
import sys
import textwrap

import pytest

from keras_attn.errors import UserError
from keras_attn.training.distribute import distribution_strategy

# Logical devices must be declared before TensorFlow starts, hence a fresh process.
SCRIPT = textwrap.dedent("""
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras, numpy as np
    from keras_attn.training.config import TrainingSpec
    from keras_attn.training.run import run_training
    STABILITY = ["grad_norm_mean", "grad_norm_max", "batch_loss_std"]

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")

    def train_data(start, end):
        def epoch(e):
            order = tf.random.experimental.stateless_shuffle(tf.range(64), seed=tf.stack([e, e]))
            return tf.data.Dataset.from_tensor_slices((tf.gather(x, order), tf.gather(y, order)))
        return tf.data.Dataset.range(start, end).flat_map(epoch).batch(16)

    def build():
        inputs = keras.Input((8,))
        hidden = keras.layers.Dense(16, activation="relu")(inputs)
        return keras.Model(inputs, keras.layers.Dense(2)(hidden))

    losses = {}
    for strategy in ("none", "mirrored"):
        cfg = TrainingSpec(
            epochs=3, batch_size=16, lr=1e-2, strategy=strategy, mixed_precision="off"
        )
        val = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
        run_training(build, train_data, val, 4, cfg, f"{sys.argv[1]}/{strategy}")
        import pandas as pd
        history = pd.read_csv(f"{sys.argv[1]}/{strategy}/history.csv")
        losses[strategy] = history[["loss", *STABILITY]].to_numpy().ravel().tolist()
    print("LOSSES" + json.dumps(losses))
""")


@pytest.mark.slow
def test_mirrored_over_two_cpu_devices_matches_one_device_with_stability_metrics(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith("LOSSES"))
    losses = json.loads(line[len("LOSSES") :])
    # Loss, then the gradient norm's mean and max and the batch-loss spread, per epoch:
    # the replicas' metrics must describe the whole batch, as one device does.
    assert len(losses["mirrored"]) == 3 * 4
    for one, two in zip(losses["none"], losses["mirrored"], strict=True):
        assert two == pytest.approx(one, rel=1e-4)


def test_mirrored_needs_two_devices_and_unknown_names_are_refused():
    with pytest.raises(UserError, match="two or more devices"):
        distribution_strategy("mirrored")  # this process has one CPU device
    with pytest.raises(UserError, match="unknown strategy 'ring'"):
        distribution_strategy("ring")
    assert distribution_strategy("auto") is distribution_strategy("none")
