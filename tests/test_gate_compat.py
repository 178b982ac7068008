"""The fused gate layers (issue 16 part 3) against the layers they replaced.

`fixtures/gate_layers.keras` was saved by the old layers (two MLP passes, concatenate then
conv; see `fixtures/make_gate_fixture.py`) with random weights everywhere, and
`gate_layers.npz` holds that model's inputs and outputs: the new code must load the file
and give the same outputs. Gradients are checked against the old formulation, written out
here with plain autodiff, on inputs with tied maxima (ReLU zeros).
"""

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

import keras_attn.layers  # noqa: F401  (registers the layers for loading)
from keras_attn.layers import CBAM, ChannelAttention, SpatialAttention
from keras_attn.layers._base import mean_and_max

FIXTURES = Path(__file__).parent / "fixtures"


def test_a_model_saved_by_the_old_layers_loads_and_gives_the_same_outputs():
    model = keras.saving.load_model(FIXTURES / "gate_layers.keras")
    expected = np.load(FIXTURES / "gate_layers.npz")
    outputs = model(expected["inputs"], training=False)
    assert len(outputs) == 4
    for i, output in enumerate(outputs):
        np.testing.assert_allclose(np.asarray(output), expected[f"output_{i}"], atol=1e-6)


def _old_channel(layer, x):
    def mlp(v):
        hidden = ops.relu(ops.matmul(v, layer.hidden_kernel) + layer.hidden_bias)
        return ops.matmul(hidden, layer.output_kernel) + layer.output_bias

    average = ops.mean(x, axis=(1, 2), keepdims=True)
    maximum = ops.max(x, axis=(1, 2), keepdims=True)
    return x * ops.sigmoid(mlp(average) + mlp(maximum))


def _old_spatial(layer, x, training):
    stats = ops.concatenate(
        [ops.mean(x, axis=-1, keepdims=True), ops.max(x, axis=-1, keepdims=True)], axis=-1
    )
    logits = layer.conv(stats)
    if layer.norm is not None:
        logits = layer.norm(logits, training=training)
    return x * ops.sigmoid(logits)


def _inputs(shape, seed):
    x = np.random.default_rng(seed).normal(size=shape).astype("float32")
    x[0] = np.maximum(x[0], 0.0)  # zeros: maxima tied across channels and positions
    x[1, ..., 0] = 0.0  # a dead channel: every position ties
    return x


@pytest.mark.parametrize("kind", ["channel", "spatial", "cbam"])
def test_outputs_and_gradients_equal_the_old_formulation(kind):
    x = _inputs((3, 9, 10, 32), seed=4)
    layer = {
        "channel": lambda: ChannelAttention(reduction=4, min_hidden=2, seed=1),
        "spatial": lambda: SpatialAttention(kernel_size=7, seed=1),
        "cbam": lambda: CBAM(reduction=4, min_hidden=2, kernel_size=7, seed=1),
    }[kind]()
    layer(x)
    rng = np.random.default_rng(5)
    layer.set_weights([rng.normal(0, 0.5, w.shape).astype("float32") for w in layer.get_weights()])

    def old(x):
        if kind == "channel":
            return _old_channel(layer, x)
        if kind == "spatial":
            return _old_spatial(layer, x, training=True)
        return _old_spatial(layer.spatial, _old_channel(layer.channel, x), training=True)

    weights = np.random.default_rng(6).normal(size=x.shape).astype("float32")
    results = []
    for f in (old, lambda v: layer(v, training=True)):
        xt = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(xt)
            y = f(xt)
            loss = tf.reduce_sum(y * weights)
        grads = tape.gradient(loss, [xt, *layer.trainable_variables])
        results.append([y.numpy(), *(g.numpy() for g in grads)])
    for old_value, new_value in zip(*results, strict=True):
        np.testing.assert_allclose(new_value, old_value, atol=2e-5, rtol=1e-5)
    np.testing.assert_allclose(results[1][0], results[0][0], atol=1e-6)


@pytest.mark.parametrize("axis", [(1, 2), -1])
def test_mean_and_max_gradient_shares_ties_as_autodiff_does(axis):
    x = tf.constant(_inputs((2, 5, 6, 4), seed=7))
    up = tf.constant(
        np.random.default_rng(8)
        .normal(size=(2, 1, 1, 8) if axis == (1, 2) else (2, 5, 6, 2))
        .astype("float32")
    )
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        fused = mean_and_max(x, axis)
        plain = tf.concat(
            [tf.reduce_mean(x, axis, keepdims=True), tf.reduce_max(x, axis, keepdims=True)], -1
        )
        fused_loss, plain_loss = tf.reduce_sum(fused * up), tf.reduce_sum(plain * up)
    np.testing.assert_array_equal(fused.numpy(), plain.numpy())
    np.testing.assert_allclose(
        tape.gradient(fused_loss, x).numpy(), tape.gradient(plain_loss, x).numpy(), atol=1e-6
    )


def test_mixed_bfloat16_gradients_are_finite_and_close_to_float32():
    x = _inputs((2, 16, 16, 32), seed=9)
    reference = CBAM(reduction=4, min_hidden=2, kernel_size=7, seed=2)
    reference(x)
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        mixed = CBAM(reduction=4, min_hidden=2, kernel_size=7, seed=2)
    finally:
        keras.config.set_dtype_policy("float32")
    mixed(x)
    mixed.set_weights(reference.get_weights())
    grads = []
    for layer in (reference, mixed):
        xt = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(xt)
            loss = tf.reduce_sum(tf.cast(layer(xt, training=True), "float32") ** 2)
        grads.append([g.numpy() for g in tape.gradient(loss, [xt, *layer.trainable_variables])])
    for want, got in zip(*grads, strict=True):
        got = got.astype("float32")
        assert np.isfinite(got).all()
        # Rounding to bfloat16 can move an argmax to a near-tied neighbour (so can the old
        # layers): elementwise, a few input gradients jump; as a whole they stay close.
        assert np.linalg.norm(got - want) <= 0.1 * np.linalg.norm(want)
