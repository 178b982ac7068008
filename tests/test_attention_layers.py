"""Image attention layers: maps, registry, hand-checked math, half precision on large maps.

Shapes, configs, .keras files, seeds, weight counts and mixed precision on tiny inputs
are checked for every layer by tests/test_layers_contract.py.
"""

import math

import numpy as np
import pytest
from mixed_precision import mixed_float16_copy

from keras_attn.layers import (
    ChannelAttention,
    IdentityAttention,
    LinearAttention,
    attention_names,
    get_attention,
)

CHANNELS = 8
# Small widths keep the file fast; every option is given to every layer, as a builder would.
OPTIONS = dict(reduction=2, min_hidden=2, kernel_size=3, num_heads=2, seed=7)


def make(name, **overrides):
    return get_attention(name, **{**OPTIONS, **overrides})


def images(shape=(2, 4, 5, CHANNELS), seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def test_registry_lists_the_vocabulary():
    assert attention_names() == ["none", "channel", "spatial", "cbam", "linear"]


@pytest.mark.parametrize("name", attention_names())
def test_maps_lie_in_the_unit_interval_and_only_none_keeps_the_input(name):
    x = images()
    y, a = (np.asarray(t) for t in make(name)(x, return_attention=True))
    assert a.min() >= 0.0 and a.max() <= 1.0
    if name == "none":
        np.testing.assert_array_equal(y, x)
        np.testing.assert_array_equal(a, 1.0)
    else:
        assert not np.allclose(y, x)


def test_distinct_projections_get_distinct_seeds():
    layer = LinearAttention(num_heads=2, seed=3)
    layer.build((None, 4, 4, CHANNELS))
    assert not np.allclose(layer.query_kernel.numpy(), layer.key_kernel.numpy())
    assert not np.allclose(layer.key_kernel.numpy(), layer.value_kernel.numpy())


def test_registry_errors_name_the_valid_choices():
    with pytest.raises(ValueError, match="unknown attention 'nope'; valid: none, channel, "):
        get_attention("nope")
    with pytest.raises(ValueError, match="bogus"):
        get_attention("cbam", bogus=1)
    with pytest.raises(ValueError, match="units"):  # a temporal option, not an attention one
        get_attention("cbam", units=8)


def test_registry_passes_only_accepted_options():
    identity = get_attention("none", reduction=4, kernel_size=5, seed=1, name="gate")
    assert isinstance(identity, IdentityAttention) and identity.name == "gate"
    spatial = get_attention("spatial", reduction=4, kernel_size=5, num_heads=2, seed=1)
    assert (spatial.kernel_size, spatial.seed) == (5, 1)
    assert get_attention("linear", num_heads=2, reduction=4).num_heads == 2


def test_channel_gate_matches_hand_computation():
    layer = ChannelAttention(reduction=1, min_hidden=2)
    layer.build((None, 3, 3, 2))
    w1, b1 = np.array([[1.0, -1.0], [0.5, 2.0]]), np.array([0.1, -0.2])
    w2, b2 = np.array([[1.0, 0.0], [-1.0, 2.0]]), np.array([0.0, 0.5])
    layer.set_weights([w1, b1, w2, b2])

    # Constant channels: average and max descriptors are both v = (1.5, -0.5), so
    # hidden = relu(v w1 + b1) = (1.35, 0), mlp = hidden w2 + b2 = (1.35, 0.5),
    # gate = sigmoid(2 * mlp).
    x = np.ones((1, 3, 3, 2), "float32") * np.array([1.5, -0.5], "float32")
    y, gate = layer(x, return_attention=True)
    sigmoid = lambda z: 1.0 / (1.0 + math.exp(-z))  # noqa: E731
    expected = np.array([sigmoid(2.7), sigmoid(1.0)])
    np.testing.assert_allclose(np.asarray(gate).reshape(2), expected, rtol=1e-6)
    np.testing.assert_allclose(y, x * expected, rtol=1e-6)

    # Varying channels: average and max descriptors enter separately.
    x = images((1, 3, 3, 2), seed=2)
    mlp = lambda v: np.maximum(v @ w1 + b1, 0.0) @ w2 + b2  # noqa: E731
    logits = mlp(x.mean(axis=(1, 2))) + mlp(x.max(axis=(1, 2)))
    _, gate = layer(x, return_attention=True)
    np.testing.assert_allclose(np.asarray(gate).reshape(1, 2), 1 / (1 + np.exp(-logits)), rtol=1e-5)


def _layer_norm(x, gamma, beta, epsilon=1e-3):
    centred = x - x.mean(-1, keepdims=True)
    return centred / np.sqrt(x.var(-1, keepdims=True) + epsilon) * gamma + beta


def test_linear_attention_matches_explicit_attention_matrix():
    heads, head_dim = 2, 2
    layer = LinearAttention(num_heads=heads, seed=0)
    x = images((1, 2, 3, 4), seed=3)
    y, received = (np.asarray(t) for t in layer(x, return_attention=True))
    # Keyed by path inside the layer: "query_kernel", "attention_norm/gamma", ...
    w = {v.path.split("/", 1)[1]: v.numpy().astype("float64") for v in layer.weights}

    tokens = x.reshape(6, 4).astype("float64")
    phi = lambda z: np.where(z > 0, z + 1.0, np.exp(z))  # elu(z) + 1  # noqa: E731
    split = lambda kernel: (tokens @ kernel).reshape(6, heads, head_dim).transpose(1, 0, 2)  # noqa: E731
    q, k, v = phi(split(w["query_kernel"])), phi(split(w["key_kernel"])), split(w["value_kernel"])
    scores = q @ k.transpose(0, 2, 1)  # (heads, N, N): the matrix the layer never forms
    attention = scores / scores.sum(-1, keepdims=True)

    summary = attention.mean(axis=1).mean(axis=0)  # attention each token receives
    np.testing.assert_allclose(received.reshape(6), summary / summary.max(), rtol=1e-5)

    attended = (attention @ v).transpose(1, 0, 2).reshape(6, heads * head_dim)
    projected = attended @ w["output_kernel"] + w["output_bias"]
    h = _layer_norm(tokens + projected, w["attention_norm/gamma"], w["attention_norm/beta"])
    erf = np.vectorize(math.erf)
    hidden = h @ w["ff_kernel"] + w["ff_bias"]
    hidden = 0.5 * hidden * (1.0 + erf(hidden / math.sqrt(2.0)))
    update = hidden @ w["ff_output_kernel"] + w["ff_output_bias"]
    expected = _layer_norm(h + update, w["ff_norm/gamma"], w["ff_norm/beta"])
    np.testing.assert_allclose(y.reshape(6, 4), expected, atol=1e-4)


@pytest.mark.parametrize("name", attention_names())
def test_mixed_float16_on_a_large_map_stays_finite_and_close_to_float32(name):
    # Mixed precision is the default on a GPU. LinearAttention's sums over 64x64 tokens
    # overflowed float16 there (NaN logits) until they were computed in float32; the
    # contract's tiny inputs are too small to overflow.
    x = 4.0 * np.maximum(images((1, 64, 64, 32), seed=3), 0.0)
    reference = make(name)
    want = np.asarray(reference(x))
    mixed = mixed_float16_copy(reference, x)
    got = np.asarray(mixed(x), "float32")
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, want, atol=0.02 * np.abs(want).max())
