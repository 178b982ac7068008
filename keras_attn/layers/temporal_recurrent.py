"""Recurrent clip encoders: a GRU, alone or on top of TCN blocks."""

import keras
from keras import ops

from keras_attn.layers._masking import ClipEncoder, frame_mask, last_valid_weights
from keras_attn.layers._seeding import derive, glorot
from keras_attn.layers.temporal_conv import run_blocks, temporal_blocks


def _gru(units, dropout, seed, dtype):
    return keras.layers.GRU(
        units,
        dropout=dropout,
        kernel_initializer=glorot(seed, 1),
        recurrent_initializer=keras.initializers.Orthogonal(seed=derive(seed, 2)),
        seed=derive(seed, 3),
        dtype=dtype,
        name="gru",
    )


def _encode(gru, x, mask, training, return_attention):
    # The GRU carries its state through masked steps, so its final state is the
    # state at the last valid frame.
    vector = gru(x, mask=ops.cast(mask, "bool"), training=training)
    return (vector, last_valid_weights(mask)) if return_attention else vector


@keras.saving.register_keras_serializable(package="keras_attn")
class GRUEncoder(ClipEncoder):
    """A GRU over the valid frames; the clip vector is its state after the last one.

    Args:
        units: int, GRU width.
        dropout: float, dropout rate on the GRU's inputs.
        seed: optional int, makes the initial weights reproducible.
        **kwargs: base `keras.layers.Layer` arguments.

    Input shape: `(batch, frames, features)` and optional `mask` `(batch, frames)`.
    On a GPU, cuDNN accepts only right-padded masks with at least one valid frame.
    Output shape: `(batch, units)`; with `return_attention=True`, also frame
    weights `(batch, frames)`: one-hot on the last valid frame.

    Example:
    >>> x = keras.random.normal((2, 8, 32))
    >>> clip = GRUEncoder(units=16, seed=0)(x, mask=keras.ops.ones((2, 8), "bool"))
    >>> tuple(clip.shape)
    (2, 16)

    Reference: Cho et al., "Learning Phrase Representations using RNN
    Encoder-Decoder for Statistical Machine Translation", EMNLP 2014.
    """

    def __init__(self, units=64, dropout=0.1, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.dropout = dropout
        self.seed = seed
        self.gru = _gru(units, dropout, seed, self.dtype_policy)

    def build(self, input_shape):
        self.gru.build(input_shape)

    def _clip_width(self, input_shape):
        return self.units

    def call(self, inputs, mask=None, training=None, return_attention=False):
        mask = frame_mask(mask, inputs)
        return _encode(self.gru, inputs, mask, training, return_attention)

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units, dropout=self.dropout, seed=self.seed)
        return config


@keras.saving.register_keras_serializable(package="keras_attn")
class TCNGRU(ClipEncoder):
    """TCN blocks, then a GRU whose final state is the clip vector (the original study's head).

    Args:
        filters: int, width of every TCN block.
        kernel_size: int, temporal window of each convolution.
        dilations: sequence of int, one residual block per dilation rate.
        units: int, GRU width.
        dropout: float, dropout rate inside the blocks and on the GRU's inputs.
        seed: optional int, makes the initial weights reproducible.
        **kwargs: base `keras.layers.Layer` arguments.

    Input shape: `(batch, frames, features)` and optional `mask` `(batch, frames)`.
    Output shape: `(batch, units)`; with `return_attention=True`, also frame
    weights `(batch, frames)`: one-hot on the last valid frame.

    Example:
    >>> x = keras.random.normal((2, 8, 32))
    >>> clip, weights = TCNGRU(filters=16, units=8, seed=0)(x, return_attention=True)
    >>> tuple(clip.shape), keras.ops.convert_to_numpy(weights[0]).tolist()
    ((2, 8), [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0])

    Reference: Bai et al., arXiv:1803.01271, 2018 (TCN); Cho et al., EMNLP 2014 (GRU).
    """

    def __init__(
        self,
        filters=64,
        kernel_size=3,
        dilations=(1, 2, 4),
        units=64,
        dropout=0.1,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = filters
        self.kernel_size = kernel_size
        self.dilations = tuple(dilations)
        self.units = units
        self.dropout = dropout
        self.seed = seed
        self.gru = _gru(units, dropout, seed, self.dtype_policy)
        self.blocks = temporal_blocks(
            filters, kernel_size, self.dilations, dropout, seed, self.dtype_policy
        )

    def build(self, input_shape):
        shape = input_shape
        for block in self.blocks:
            block.build(shape)
            shape = (*shape[:-1], self.filters)
        self.gru.build(shape)

    def _clip_width(self, input_shape):
        return self.units

    def call(self, inputs, mask=None, training=None, return_attention=False):
        mask = frame_mask(mask, inputs)
        x = run_blocks(self.blocks, inputs, mask, training)
        return _encode(self.gru, x, mask, training, return_attention)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            dilations=list(self.dilations),
            units=self.units,
            dropout=self.dropout,
            seed=self.seed,
        )
        return config
