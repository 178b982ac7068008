"""Masked pooling of per-frame features into one clip vector."""

import keras
from keras import ops

from keras_attn.layers._masking import (
    ClipEncoder,
    frame_mask,
    last_valid_weights,
    masked_softmax,
    normalize,
    weighted_sum,
)
from keras_attn.layers._seeding import glorot


@keras.saving.register_keras_serializable(package="keras_attn")
class AttentionPooling(ClipEncoder):
    """Temporal attention: a learned softmax over the valid frames, then a weighted sum.

    A small scoring net (`Dense(hidden, tanh) -> Dense(1)`) gives one logit per
    frame; padded frames are excluded from the softmax.

    Args:
        hidden: int, width of the scoring net.
        seed: optional int, makes the initial weights reproducible.
        **kwargs: base `keras.layers.Layer` arguments.

    Input shape: `(batch, frames, features)` and optional `mask` `(batch, frames)`
    (bool or 0/1, False for padded frames); `frames` may be dynamic.
    Output shape: `(batch, features)`; with `return_attention=True`, also the frame
    weights `(batch, frames)`: zero on padded frames, summing to 1 over valid ones.

    Example:
    >>> x = keras.random.normal((2, 8, 32))
    >>> mask = keras.ops.arange(8)[None, :] < keras.ops.array([[8], [5]])
    >>> clip, weights = AttentionPooling(seed=0)(x, mask=mask, return_attention=True)
    >>> tuple(clip.shape), tuple(weights.shape)
    ((2, 32), (2, 8))
    >>> float(keras.ops.sum(weights[1, 5:]))
    0.0

    Reference: Bahdanau et al., "Neural Machine Translation by Jointly Learning to
    Align and Translate", ICLR 2015 (additive attention scores).
    """

    def __init__(self, hidden=64, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.hidden = hidden
        self.seed = seed
        self.score_hidden = keras.layers.Dense(
            hidden,
            activation="tanh",
            kernel_initializer=glorot(seed, 1),
            dtype=self.dtype_policy,
            name="score_hidden",
        )
        self.score = keras.layers.Dense(
            1, kernel_initializer=glorot(seed, 2), dtype=self.dtype_policy, name="score"
        )

    def build(self, input_shape):
        self.score_hidden.build(input_shape)
        self.score.build((*input_shape[:-1], self.hidden))

    def call(self, inputs, mask=None, training=None, return_attention=False):
        mask = frame_mask(mask, inputs)
        logits = self.score(self.score_hidden(inputs))[..., 0]
        weights = masked_softmax(logits, mask)
        vector = weighted_sum(inputs, weights)
        return (vector, weights) if return_attention else vector

    def get_config(self):
        config = super().get_config()
        config.update(hidden=self.hidden, seed=self.seed)
        return config


@keras.saving.register_keras_serializable(package="keras_attn")
class TemporalPooling(ClipEncoder):
    """Parameter-free masked pooling over frames: mean, max or last valid frame.

    Args:
        mode: `"avg"` (mean of valid frames), `"max"` (per-feature max over valid
            frames) or `"last"` (the last valid frame).
        **kwargs: base `keras.layers.Layer` arguments.

    Input shape: `(batch, frames, features)` and optional `mask` `(batch, frames)`.
    Output shape: `(batch, features)`; with `return_attention=True`, also frame
    weights `(batch, frames)` summing to 1 over valid frames: uniform for `avg`,
    the fraction of features whose maximum lies in each frame for `max`, one-hot
    on the last valid frame for `last`.

    Example:
    >>> x = keras.random.normal((2, 8, 32))
    >>> clip = TemporalPooling("max")(x, mask=keras.ops.ones((2, 8), "bool"))
    >>> bool(keras.ops.all(clip == keras.ops.max(x, axis=1)))
    True

    Reference: the usual pooling baselines of temporal models, e.g. Karpathy et al.,
    "Large-scale Video Classification with Convolutional Neural Networks", CVPR 2014.
    """

    MODES = ("avg", "max", "last")

    def __init__(self, mode="avg", **kwargs):
        super().__init__(**kwargs)
        if mode not in self.MODES:
            raise ValueError(f"unknown pooling mode '{mode}'; valid: {', '.join(self.MODES)}")
        self.mode = mode

    def call(self, inputs, mask=None, training=None, return_attention=False):
        mask = frame_mask(mask, inputs)
        if self.mode == "avg":
            weights = normalize(ops.ones_like(mask), mask)
            vector = weighted_sum(inputs, weights)
        elif self.mode == "last":
            weights = last_valid_weights(mask)
            vector = weighted_sum(inputs, weights)
        else:
            valid = mask[..., None] > 0
            # float32 so the fill for padded frames stays finite under mixed precision.
            masked = ops.where(valid, ops.cast(inputs, "float32"), -1e9)
            # A clip without valid frames pools to zeros, not to the fill value.
            vector = ops.where(ops.any(valid, axis=1), ops.max(masked, axis=1), 0.0)
            vector = ops.cast(vector, inputs.dtype)
            winners = ops.one_hot(ops.argmax(masked, axis=1), ops.shape(inputs)[1], axis=1)
            weights = normalize(ops.mean(ops.cast(winners, inputs.dtype), axis=-1), mask)
        return (vector, weights) if return_attention else vector

    def get_config(self):
        config = super().get_config()
        config.update(mode=self.mode)
        return config
