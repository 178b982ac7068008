"""FusedBatchNormalization against keras.layers.BatchNormalization: same outputs, gradients
and moving statistics, in float32 and bfloat16, and the same weights and files."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_attn.models.batch_norm import BatchNormalization as FusedBatchNormalization
from keras_attn.models.image import build_image_model

# (max |difference|) allowed between the two layers' outputs, per compute dtype.
TOLERANCE = {"float32": 2e-5, "mixed_bfloat16": 2e-2}


def _pair(policy, **options):
    x = np.random.default_rng(0).normal(3.0, 2.0, (4, 6, 5, 8)).astype("float32")
    keras_bn = keras.layers.BatchNormalization(dtype=policy, **options)
    fused = FusedBatchNormalization(dtype=policy, **options)
    keras_bn.build(x.shape)
    fused.build(x.shape)
    rng = np.random.default_rng(1)
    weights = [rng.uniform(0.5, 1.5, w.shape).astype("float32") for w in keras_bn.get_weights()]
    keras_bn.set_weights(weights)
    fused.set_weights(weights)
    return x, keras_bn, fused, weights


def _forward_backward(layer, x, training):
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = tf.cast(layer(x, training=training), "float32")
        # Weights that vary over positions: with one weight per channel the gradient to the
        # input is zero in training mode (normalised values sum to zero) and only rounding.
        weights = np.random.default_rng(2).normal(size=x.shape).astype("float32")
        loss = tf.reduce_sum(y * weights)
    grads = tape.gradient(loss, [x, *layer.trainable_weights])
    return y.numpy(), [g.numpy() for g in grads]


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("options", [{}, {"center": False, "scale": False, "momentum": 0.5}])
def test_fused_layer_computes_what_keras_batch_normalization_computes(policy, training, options):
    x, keras_bn, fused, weights = _pair(policy, **options)
    expected, expected_grads = _forward_backward(keras_bn, x, training)
    got, got_grads = _forward_backward(fused, x, training)
    assert fused(x).dtype == keras_bn(x).dtype == keras.DTypePolicy(policy).compute_dtype
    scale = np.abs(expected).max()
    assert np.abs(got - expected).max() <= TOLERANCE[policy] * scale
    assert len(got_grads) == len(expected_grads) == 1 + 2 * (not options)
    for g, e in zip(got_grads, expected_grads, strict=True):
        assert np.abs(g - e).max() <= TOLERANCE[policy] * max(np.abs(e).max(), 1.0)
    # The moving statistics move (training) or stay (inference) alike, biased variance.
    for name in ("moving_mean", "moving_variance"):
        a, b = getattr(fused, name).numpy(), getattr(keras_bn, name).numpy()
        np.testing.assert_allclose(a, b, rtol=1e-5 if policy == "float32" else 1e-2)
    if training:
        momentum = options.get("momentum", 0.99)
        variance = x.reshape(-1, 8).var(axis=0)  # numpy's var is the biased one
        initial = weights[-1]  # the moving variance, last of the layer's weights
        np.testing.assert_allclose(
            fused.moving_variance.numpy(),
            momentum * initial + (1 - momentum) * variance,
            rtol=1e-4 if policy == "float32" else 1e-2,
        )


def test_one_value_per_channel_gives_a_zero_batch_variance_as_in_keras():
    x = np.arange(6, dtype="float32").reshape(1, 1, 1, 6)
    fused = FusedBatchNormalization(momentum=0.0)
    fused(x, training=True)
    np.testing.assert_array_equal(fused.moving_variance.numpy(), np.zeros(6))
    np.testing.assert_array_equal(fused.moving_mean.numpy(), x.ravel())


def test_masks_and_other_ranks_take_keras_path():
    x = np.random.default_rng(0).normal(size=(2, 5, 3)).astype("float32")
    keras_bn, fused = keras.layers.BatchNormalization(), FusedBatchNormalization()
    mask = np.array([[1, 1, 0, 0, 1], [1, 1, 1, 1, 1]], bool)
    np.testing.assert_allclose(
        fused(x, training=True, mask=mask), keras_bn(x, training=True, mask=mask), atol=1e-6
    )
    np.testing.assert_allclose(fused.moving_mean.numpy(), keras_bn.moving_mean.numpy(), atol=1e-7)


def test_a_backbone_saved_with_keras_batch_normalization_loads_its_weights(tmp_path):
    fused_model = build_image_model(3, 32, attention="cbam", seed=0)
    norms = [x for x in fused_model.layers if isinstance(x, keras.layers.BatchNormalization)]
    assert len(norms) == 6 and all(type(x) is FusedBatchNormalization for x in norms)
    # The same model as it was built before: keras.layers.BatchNormalization, same names.
    plain = keras.models.clone_model(
        fused_model,
        clone_function=lambda layer: (
            keras.layers.BatchNormalization.from_config(layer.get_config())
            if isinstance(layer, FusedBatchNormalization)
            else layer.__class__.from_config(layer.get_config())
        ),
    )
    images = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    plain.compile(optimizer="sgd", loss="mse")
    plain.fit(images, plain.predict(images, verbose=0) + 1.0, epochs=1, verbose=0)
    plain.save(tmp_path / "plain.keras")
    plain.save_weights(tmp_path / "plain.weights.h5")
    fused_model.load_weights(tmp_path / "plain.weights.h5")
    expected = plain.predict(images, verbose=0)
    np.testing.assert_allclose(fused_model.predict(images, verbose=0), expected, atol=1e-5)
    np.testing.assert_allclose(
        keras.saving.load_model(tmp_path / "plain.keras").predict(images, verbose=0),
        expected,
        atol=1e-6,
    )
    fused_model.save(tmp_path / "fused.keras")
    again = keras.saving.load_model(tmp_path / "fused.keras")
    assert type(again.get_layer(norms[0].name)) is FusedBatchNormalization
    np.testing.assert_allclose(again.predict(images, verbose=0), expected, atol=1e-5)
