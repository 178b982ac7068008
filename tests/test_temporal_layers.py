"""Temporal modules: pooling and GRU values, Keras masks, seeded projections, registry.

Shapes, masks, configs, .keras files, seeds, weight counts and mixed precision are
checked for every module by tests/test_layers_contract.py.
"""

import warnings

import keras
import numpy as np
import pytest

from keras_attn.layers import (
    GRUEncoder,
    TemporalPooling,
    TransformerEncoder,
    get_temporal,
    temporal_names,
)

FEATURES = 6
OPTIONS = dict(filters=8, units=8, hidden=8, num_heads=2, key_dim=4, ff_dim=8, max_frames=8, seed=5)
OPTIONS["dilations"] = (1, 2)
# Right padding, no padding, and left padding with a gap: masks need not be right-padded.
MASK = np.array([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1], [0, 1, 1, 0, 1, 0]], bool)


def make(name, **overrides):
    return get_temporal(name, **{**OPTIONS, **overrides})


def frames(frames=6, seed=0, batch=3):
    return np.random.default_rng(seed).normal(size=(batch, frames, FEATURES)).astype("float32")


def check_weights(weights, mask):
    weights = np.asarray(weights)
    assert weights.shape == mask.shape
    assert weights.min() >= 0.0 and weights.max() <= 1.0 + 1e-6
    np.testing.assert_array_equal(weights[~mask], 0.0)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-5)


def test_registry_lists_the_vocabulary():
    assert temporal_names() == [
        "avg", "max", "last", "attention", "tcn", "gru", "tcn_gru", "transformer"
    ]  # fmt: skip


def test_seeded_transformer_has_distinct_query_and_key_kernels():
    # MultiHeadAttention clones one seeded initializer for q, k and v.
    layer = TransformerEncoder(num_heads=2, key_dim=4, ff_dim=8, max_frames=8, seed=1)
    layer(frames(), mask=MASK)
    attention = layer.blocks[0].attention
    query, key = attention.query_dense.kernel.numpy(), attention.key_dense.kernel.numpy()
    assert not np.allclose(query, key)
    assert not np.allclose(key, attention.value_dense.kernel.numpy())


def test_plain_pooling_matches_numpy():
    x = frames()
    valid = MASK[..., None]
    mean = (x * valid).sum(1) / valid.sum(1)
    maximum = np.where(valid, x, -np.inf).max(1)
    last = x[np.arange(3), [2, 5, 4]]
    for mode, expected in [("avg", mean), ("max", maximum), ("last", last)]:
        vector, weights = TemporalPooling(mode)(x, mask=MASK, return_attention=True)
        np.testing.assert_allclose(vector, expected, rtol=1e-6, err_msg=mode)
        check_weights(weights, MASK)

    # max: the share of features whose maximum sits in each frame.
    x = np.array([[[1, 5], [3, 0], [9, 9]]], "float32")
    _, weights = TemporalPooling("max")(x, mask=np.array([[1, 1, 0]]), return_attention=True)
    np.testing.assert_allclose(weights, [[0.5, 0.5, 0.0]])


def test_gru_state_is_the_state_at_the_last_valid_frame():
    layer = GRUEncoder(units=8, seed=0)
    x = frames()
    vector, weights = layer(x, mask=MASK, return_attention=True)
    np.testing.assert_allclose(vector[0], layer(x[:1, :3])[0], atol=1e-6)
    np.testing.assert_array_equal(np.asarray(weights)[[0, 1, 2], [2, 5, 4]], 1.0)


def test_keras_mask_from_a_masking_layer_is_honoured_and_consumed():
    inputs = keras.Input((None, FEATURES))
    masked = keras.layers.Masking(0.0)(inputs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Keras warns when a layer "destroys" a mask
        vector = make("attention")(masked)
    model = keras.Model(inputs, vector)
    x = np.where(MASK[..., None], frames(), 0.0).astype("float32")
    explicit = model.layers[-1](x, mask=MASK)
    np.testing.assert_allclose(model(x), explicit, atol=1e-6)
    assert getattr(vector, "_keras_mask", None) is None


def test_registry_errors_and_option_routing():
    with pytest.raises(ValueError, match="unknown temporal module 'lstm'; valid: avg, max, "):
        get_temporal("lstm")
    with pytest.raises(ValueError, match="bogus"):
        get_temporal("tcn", bogus=1)
    with pytest.raises(ValueError, match="mode"):  # fixed by the registry entry
        get_temporal("avg", mode="max")
    with pytest.raises(ValueError, match="valid: attention, avg, max, last"):
        get_temporal("tcn", pool="median")
    with pytest.raises(ValueError, match="valid: avg, max, last"):
        TemporalPooling("median")
    assert get_temporal("tcn", pool="max", units=4).pool == "max"
    gru = get_temporal("gru", pool="max", units=4, name="head")
    assert (gru.units, gru.name) == (4, "head")
    assert get_temporal("avg", units=4).mode == "avg"
