"""Temporal convolutional network (TCN) over per-frame features."""

import keras
from keras import ops

from keras_attn.layers._masking import ClipEncoder, frame_mask
from keras_attn.layers._seeding import derive, glorot, he
from keras_attn.layers.temporal_pooling import AttentionPooling, TemporalPooling


@keras.saving.register_keras_serializable(package="keras_attn")
class TemporalBlock(keras.layers.Layer):
    """One residual TCN block: two dilated causal convolutions and a skip connection.

    Each convolution is followed by LayerNormalization, relu and dropout; a
    1x1 projection aligns the skip path when the input width differs from `filters`.

    Args:
        filters: int, output width.
        kernel_size: int, temporal window of each convolution.
        dilation: int, dilation rate of both convolutions.
        dropout: float, dropout rate after each convolution.
        seed: optional int, makes the initial weights reproducible.
        **kwargs: base `keras.layers.Layer` arguments.

    Input shape: `(batch, frames, features)`.
    Output shape: `(batch, frames, filters)`; frame `t` depends on frames `<= t` only.

    Example:
    >>> y = TemporalBlock(32, dilation=2, seed=0)(keras.random.normal((2, 8, 16)))
    >>> tuple(y.shape)
    (2, 8, 32)

    Reference: Bai et al., "An Empirical Evaluation of Generic Convolutional and
    Recurrent Networks for Sequence Modeling", arXiv:1803.01271, 2018.
    """

    def __init__(self, filters=64, kernel_size=3, dilation=1, dropout=0.1, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.kernel_size = kernel_size
        self.dilation = dilation
        self.dropout = dropout
        self.seed = seed
        policy = self.dtype_policy
        self.convs, self.norms, self.dropouts = [], [], []
        for i in (1, 2):
            self.convs.append(
                keras.layers.Conv1D(
                    filters,
                    kernel_size,
                    padding="causal",
                    dilation_rate=dilation,
                    kernel_initializer=he(seed, i),
                    dtype=policy,
                    name=f"conv{i}",
                )
            )
            self.norms.append(keras.layers.LayerNormalization(dtype=policy, name=f"norm{i}"))
            self.dropouts.append(
                keras.layers.Dropout(
                    dropout, seed=derive(seed, 10 + i), dtype=policy, name=f"dropout{i}"
                )
            )

    # The skip projection exists only when widths differ, which the input decides.
    def build(self, input_shape):
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms, strict=True)):
            conv.build((*input_shape[:-1], input_shape[-1] if i == 0 else self.filters))
            norm.build((*input_shape[:-1], self.filters))
        self.skip_kernel = None
        if input_shape[-1] != self.filters:
            self.skip_kernel = self.add_weight(
                name="skip_kernel",
                shape=(input_shape[-1], self.filters),
                initializer=glorot(self.seed, 3),
            )

    def call(self, inputs, training=None):
        x = inputs
        for conv, norm, dropout in zip(self.convs, self.norms, self.dropouts, strict=True):
            x = dropout(ops.relu(norm(conv(x))), training=training)
        skip = inputs if self.skip_kernel is None else ops.matmul(inputs, self.skip_kernel)
        return ops.relu(x + skip)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            dilation=self.dilation,
            dropout=self.dropout,
            seed=self.seed,
        )
        return config


def temporal_blocks(filters, kernel_size, dilations, dropout, seed, dtype=None):
    """One `TemporalBlock` per dilation, each with its own derived seed."""
    return [
        TemporalBlock(
            filters,
            kernel_size,
            d,
            dropout,
            seed=derive(seed, 100 * (i + 1)),
            dtype=dtype,
            name=f"block{i}",
        )
        for i, d in enumerate(dilations)
    ]


def run_blocks(blocks, inputs, mask, training):
    """Zero padded frames before every block, so their values never reach a valid frame."""
    x = inputs
    for block in blocks:
        x = block(x * mask[..., None], training=training)
    return x


POOLS = ("attention", "avg", "max", "last")


def make_pooling(pool, hidden, seed, dtype=None):
    if pool not in POOLS:
        raise ValueError(f"unknown pool '{pool}'; valid: {', '.join(POOLS)}")
    if pool == "attention":
        return AttentionPooling(hidden, seed=seed, dtype=dtype, name="pooling")
    return TemporalPooling(pool, dtype=dtype, name="pooling")


@keras.saving.register_keras_serializable(package="keras_attn")
class TCN(ClipEncoder):
    """Temporal convolutional network: residual dilated causal blocks, then masked pooling.

    Padded frames are zeroed before every block and excluded from the pooling,
    so their contents never change the output.

    Args:
        filters: int, width of every block.
        kernel_size: int, temporal window of each convolution.
        dilations: sequence of int, one residual block per dilation rate.
        dropout: float, dropout rate inside the blocks.
        pool: `"attention"` (learned, `AttentionPooling`), `"avg"`, `"max"` or `"last"`.
        seed: optional int, makes the initial weights reproducible.
        **kwargs: base `keras.layers.Layer` arguments.

    Input shape: `(batch, frames, features)` and optional `mask` `(batch, frames)`.
    Output shape: `(batch, filters)`; with `return_attention=True`, also the
    pooling's frame weights `(batch, frames)`.

    Example:
    >>> x = keras.random.normal((2, 8, 32))
    >>> clip, weights = TCN(filters=16, seed=0)(x, return_attention=True)
    >>> tuple(clip.shape), tuple(weights.shape)
    ((2, 16), (2, 8))

    Reference: Bai et al., "An Empirical Evaluation of Generic Convolutional and
    Recurrent Networks for Sequence Modeling", arXiv:1803.01271, 2018.
    """

    def __init__(
        self,
        filters=64,
        kernel_size=3,
        dilations=(1, 2, 4),
        dropout=0.1,
        pool="attention",
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = filters
        self.kernel_size = kernel_size
        self.dilations = tuple(dilations)
        self.dropout = dropout
        self.pool = pool
        self.seed = seed
        self.pooling = make_pooling(pool, filters, derive(seed, 1), self.dtype_policy)
        self.blocks = temporal_blocks(
            filters, kernel_size, self.dilations, dropout, seed, self.dtype_policy
        )

    def build(self, input_shape):
        shape = input_shape
        for block in self.blocks:
            block.build(shape)
            shape = (*shape[:-1], self.filters)
        self.pooling.build(shape)

    def call(self, inputs, mask=None, training=None, return_attention=False):
        mask = frame_mask(mask, inputs)
        x = run_blocks(self.blocks, inputs, mask, training)
        return self.pooling(x, mask=mask, training=training, return_attention=return_attention)

    def _clip_width(self, input_shape):
        return self.filters

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            dilations=list(self.dilations),
            dropout=self.dropout,
            pool=self.pool,
            seed=self.seed,
        )
        return config
