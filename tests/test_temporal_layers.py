"""Temporal modules: masks honoured, frame weights, serialization, seeding, registry."""

import inspect
import warnings

import keras
import numpy as np
import pytest
from mixed_precision import mixed_float16_copy

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
WIDTH = {"tcn": 8, "gru": 8, "tcn_gru": 8, "transformer": 8}  # others keep FEATURES
# Right padding, no padding, and left padding with a gap: masks need not be right-padded.
MASK = np.array([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1], [0, 1, 1, 0, 1, 0]], bool)
BASE_CONFIG = {"name", "trainable", "dtype"}


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


@pytest.mark.parametrize("name", temporal_names())
def test_mask_keyword_in_functional_model_and_keras_file_round_trip(name, tmp_path):
    features = keras.Input((None, FEATURES))
    mask = keras.Input((None,), dtype="bool")
    vector, weights = make(name)(features, mask=mask, return_attention=True)
    model = keras.Model([features, mask], [vector, weights])

    for steps in (6, 4):
        x, m = frames(steps), MASK[:, :steps]
        v, w = model([x, m])
        assert v.shape == (3, WIDTH.get(name, FEATURES))
        check_weights(w, m)

    path = tmp_path / f"{name}.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)
    inputs = [frames(seed=1), MASK]
    for original, loaded in zip(model(inputs), reloaded(inputs), strict=True):
        np.testing.assert_allclose(original, loaded, atol=1e-6)


@pytest.mark.parametrize("name", temporal_names())
def test_padded_frames_do_not_change_the_output(name):
    layer = make(name)
    x = frames()
    noisy = np.where(MASK[..., None], x, 100.0 * frames(seed=9))
    for clean, padded in zip(
        layer(x, mask=MASK, return_attention=True),
        layer(noisy, mask=MASK, return_attention=True),
        strict=True,
    ):
        np.testing.assert_allclose(clean, padded, atol=1e-5)
    # The test can fail: without the mask the noise does change the output.
    assert not np.allclose(layer(x), layer(noisy), atol=1e-3)


@pytest.mark.parametrize("name", temporal_names())
def test_missing_mask_means_all_frames_and_empty_clip_is_finite(name):
    layer = make(name)
    x = frames()
    np.testing.assert_allclose(layer(x), layer(x, mask=np.ones(MASK.shape, "float32")), atol=1e-6)
    empty = MASK.copy()
    empty[0] = False
    vector, weights = layer(x, mask=empty, return_attention=True)
    assert np.isfinite(np.asarray(vector)).all()
    np.testing.assert_array_equal(np.asarray(weights)[0], 0.0)


@pytest.mark.parametrize("name", temporal_names())
def test_config_round_trip_with_copied_weights(name):
    layer = make(name, seed=None)
    config = layer.get_config()
    params = set(inspect.signature(type(layer).__init__).parameters) - {"self", "kwargs"}
    assert set(config) - BASE_CONFIG == params

    x = frames()
    expected = layer(x, mask=MASK, return_attention=True)
    clone = type(layer).from_config(config)
    clone(x, mask=MASK)
    clone.set_weights(layer.get_weights())
    for want, got in zip(expected, clone(x, mask=MASK, return_attention=True), strict=True):
        np.testing.assert_allclose(want, got, atol=1e-6)


@pytest.mark.parametrize("name", ["attention", "tcn", "gru", "tcn_gru", "transformer"])
def test_seed_fixes_initial_weights(name):
    def weights(seed):
        layer = make(name, seed=seed)
        layer(frames(), mask=MASK)
        return layer.get_weights()

    same, again, other = weights(3), weights(3), weights(4)
    for a, b in zip(same, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(same, other, strict=True))


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


@pytest.mark.parametrize("name", temporal_names())
def test_mixed_float16_handles_an_empty_clip_and_matches_float32(name):
    # A clip without valid frames divided 0 by max(0, 1e-9), and 1e-9 is 0 in float16: NaN.
    empty = MASK.copy()
    empty[0] = False
    x = frames()
    reference = make(name)
    want = np.asarray(reference(x, mask=empty))
    mixed = mixed_float16_copy(reference, x, mask=empty)
    vector, weights = mixed(x, mask=empty, return_attention=True)
    vector = np.asarray(vector, "float32")
    assert np.isfinite(vector).all() and np.isfinite(np.asarray(weights, "float32")).all()
    np.testing.assert_array_equal(np.asarray(weights, "float32")[0], 0.0)
    np.testing.assert_allclose(vector, want, atol=0.02 * np.abs(want).max())
