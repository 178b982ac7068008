"""Forward + backward of one CBAM layer alone, the current layer against the one before
issue 16 part 3 (`legacy_gates.py`), float32 and mixed_bfloat16, interleaved repeats.

    python benchmarks/gate_layer_step.py

Input (64, 64, 64, 32) (small_cnn's first stage at 64 px, batch 64), ReLU-like (zeros, so
tied maxima), reduction 8, kernel 7, training mode; loss = sum of the outputs. Prints the
median ms per call of each and the per-repeat ratio old / new. The layer alone is far less
noisy on a shared host than whole training steps.
"""

import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import legacy_gates  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_attn.layers import CBAM  # noqa: E402


def step_fn(layer):
    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.cast(layer(x, training=True), "float32"))
        return tape.gradient(loss, [x, *layer.trainable_variables])

    return step


def main(repeats=6, calls=4):
    x0 = np.maximum(np.random.default_rng(0).normal(size=(64, 64, 64, 32)), 0).astype("float32")
    for policy in ("float32", "mixed_bfloat16"):
        keras.config.set_dtype_policy(policy)
        layers = {"old": legacy_gates.LegacyCBAM(reduction=8, seed=0), "new": CBAM(8, seed=0)}
        keras.config.set_dtype_policy("float32")
        x = tf.constant(x0, dtype="float32" if policy == "float32" else "bfloat16")
        steps = {}
        for name, layer in layers.items():
            layer(x)
            steps[name] = step_fn(layer)
            steps[name](x)
        ms = {name: [] for name in steps}
        for _ in range(repeats):
            for name, step in steps.items():  # interleaved
                t = time.perf_counter()
                for _ in range(calls):
                    step(x)[0].numpy()
                ms[name].append(1e3 * (time.perf_counter() - t) / calls)
        ratios = [o / n for o, n in zip(ms["old"], ms["new"], strict=True)]
        print(
            f"{policy}: old {statistics.median(ms['old']):.1f} ms, new "
            f"{statistics.median(ms['new']):.1f} ms per forward+backward; old/new median "
            f"{statistics.median(ratios):.2f} (per repeat {min(ratios):.2f}..{max(ratios):.2f})"
        )


if __name__ == "__main__":
    main()
