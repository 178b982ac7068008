"""Two ways to make CBAM's gates cheaper on CPU that were tried and not adopted, timed
against the gates as they are, float32 and bfloat16, interleaved repeats.

    python benchmarks/gate_alternatives.py [--shape 64,64,64,32] [--repeats 5]

1. XLA for the gates alone: the CBAM layer's `call` wrapped in `tf.function(jit_compile=
   True)` inside a graph-mode training step, so its elementwise passes could fuse while the
   backbone's convolutions stay with oneDNN (whole-model XLA was slower on CPU: RESULTS.md
   sections 3 and 5). Forward + backward of the layer, loss = sum(outputs * fixed weights).
2. Pooling ops for `mean_and_max`: `ops.average_pool` + `ops.max_pool` over the whole map
   (axis (1, 2), the channel gate's) and over the channels of a (B, H*W, C, 1) view (axis
   -1, the spatial gate's), against the gates' own `mean_and_max`. The pooling ops' max
   gradient goes to one of tied maxima, not shared among them as autodiff shares it (and
   as `mean_and_max` does), so their gradients differ where maxima tie.

Input: ReLU-like (`max(normal, 0)`, so tied maxima at zero) at small_cnn's first stage at
64 px, batch 64. Prints the largest difference of each alternative's outputs and gradients
from the current ones, and the median ms per forward + backward with the per-repeat ratio
current / alternative (above 1: the alternative is faster).
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras import ops  # noqa: E402

from keras_attn.layers import CBAM  # noqa: E402
from keras_attn.layers._base import mean_and_max  # noqa: E402


def gradient_step(fn, weights, variables=()):
    """Graph-mode d(sum(fn(x) * weights)) / d(x, variables)."""

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.cast(fn(x), "float32") * weights)
        return tape.gradient(loss, [x, *variables])

    return step


def pooled_over_map(x):
    """`mean_and_max(x, (1, 2))` from pooling ops: (B,H,W,C) -> (B,1,1,2C)."""
    window = tuple(x.shape[1:3])
    return ops.concatenate(
        [ops.average_pool(x, window, window), ops.max_pool(x, window, window)], axis=-1
    )


def pooled_over_channels(x):
    """`mean_and_max(x, -1)` from pooling ops on a (B, H*W, C, 1) view: -> (B,H,W,2)."""
    _, height, width, channels = x.shape
    view = ops.reshape(x, (-1, height * width, channels, 1))
    window = (1, channels)
    pooled = ops.concatenate(
        [ops.average_pool(view, window, window), ops.max_pool(view, window, window)], axis=-1
    )
    return ops.reshape(pooled, (-1, height, width, 2))


def compare(label, steps, x, repeats, calls=4):
    """Differences from steps['current'] and interleaved timings of each step."""
    results = {name: [t.numpy().astype("float32") for t in step(x)] for name, step in steps.items()}
    for name, values in results.items():
        if name == "current":
            continue
        worst = max(
            float(np.abs(a - b).max()) / max(float(np.abs(a).max()), 1e-30)
            for a, b in zip(results["current"], values, strict=True)
        )
        print(
            f"{label} {name}: largest |difference| / max |current|, over x's and weights' "
            f"gradients: {worst:.2e}"
        )
    ms = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            started = time.perf_counter()
            for _ in range(calls):
                step(x)[0].numpy()
            ms[name].append(1e3 * (time.perf_counter() - started) / calls)
    for name in steps:
        if name == "current":
            continue
        ratios = [c / a for c, a in zip(ms["current"], ms[name], strict=True)]
        print(
            f"{label}: current {statistics.median(ms['current']):.1f} ms, {name} "
            f"{statistics.median(ms[name]):.1f} ms per forward+backward; current/{name} "
            f"{statistics.median(ratios):.2f} (per repeat {min(ratios):.2f}..{max(ratios):.2f})"
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="64,64,64,32", help="B,H,W,C of the gates' input")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    shape = tuple(int(n) for n in args.shape.split(","))
    rng = np.random.default_rng(0)
    x0 = np.maximum(rng.normal(size=shape), 0).astype("float32")
    print(f"TensorFlow {tf.__version__}, Keras {keras.__version__}, input {shape}")
    for policy, dtype in (("float32", "float32"), ("mixed_bfloat16", "bfloat16")):
        x = tf.constant(x0, dtype=dtype)
        keras.config.set_dtype_policy(policy)
        layer = CBAM(8, seed=0)
        keras.config.set_dtype_policy("float32")
        layer(x)
        weights = tf.constant(rng.normal(size=shape).astype("float32"))

        def train_call(t, layer=layer):
            return layer(t, training=True)

        compare(
            f"{policy} CBAM layer",
            {
                "current": gradient_step(train_call, weights, layer.trainable_variables),
                "xla_gates": gradient_step(
                    tf.function(train_call, jit_compile=True), weights, layer.trainable_variables
                ),
            },
            x,
            args.repeats,
        )
        for axis, label, alternative in (
            ((1, 2), "over the map (channel gate)", pooled_over_map),
            (-1, "over the channels (spatial gate)", pooled_over_channels),
        ):
            pooled_shape = mean_and_max(x, axis).shape
            pooled_weights = tf.constant(rng.normal(size=pooled_shape).astype("float32"))
            compare(
                f"{policy} mean_and_max {label}",
                {
                    "current": gradient_step(lambda t, a=axis: mean_and_max(t, a), pooled_weights),
                    "pooling_ops": gradient_step(alternative, pooled_weights),
                },
                x,
                args.repeats,
            )


if __name__ == "__main__":
    main()
