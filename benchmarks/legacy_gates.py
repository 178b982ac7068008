"""The gate layers as they were before issue 16 part 3 (commit 24fa1d4), for benchmarks only.

`image_step.py --legacy-cbam` times them beside the current layers in one run. Each is
the old code verbatim but registered under package "keras_attn_legacy" (so both can be
loaded in one process). Not part of the package: nothing outside benchmarks/ imports it.
"""

import keras
from keras import ops

from keras_attn.layers._base import AttentionLayer
from keras_attn.layers._seeding import derive, glorot, he


@keras.saving.register_keras_serializable(package="keras_attn_legacy")
class LegacyChannelAttention(AttentionLayer):
    """Channel attention of CBAM: a per-channel sigmoid gate from pooled descriptors.

    The average- and max-pooled channel descriptors go through one shared
    two-layer MLP (`C -> max(C // reduction, min_hidden)` relu `-> C`); the two
    results are summed, squashed by a sigmoid and multiply the input.

    Args:
        reduction: int, channel reduction ratio of the MLP's hidden layer.
        min_hidden: int, lower bound on the hidden width (small `C`).
        seed: optional int, makes the initial weights reproducible.
        **kwargs: base `keras.layers.Layer` arguments.

    Input shape: `(batch, height, width, channels)`.
    Output shape: the same; with `return_attention=True`, also the channel
    weights `(batch, 1, 1, channels)` in `[0, 1]`.

    Example:
    >>> x = keras.random.normal((2, 8, 8, 32))
    >>> y, gate = ChannelAttention(reduction=16, seed=0)(x, return_attention=True)
    >>> tuple(y.shape), tuple(gate.shape)
    ((2, 8, 8, 32), (2, 1, 1, 32))

    Reference: Woo et al., "CBAM: Convolutional Block Attention Module", ECCV 2018.
    """

    def __init__(self, reduction=16, min_hidden=8, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.reduction = reduction
        self.min_hidden = min_hidden
        self.seed = seed

    # The MLP's widths depend on the input's channels, so its weights are made here
    # rather than as Dense sublayers (sublayers are fixed in __init__).
    def build(self, input_shape):
        channels = input_shape[-1]
        hidden = max(channels // self.reduction, self.min_hidden)
        self.hidden_kernel = self.add_weight(
            name="hidden_kernel", shape=(channels, hidden), initializer=he(self.seed, 1)
        )
        self.hidden_bias = self.add_weight(name="hidden_bias", shape=(hidden,), initializer="zeros")
        self.output_kernel = self.add_weight(
            name="output_kernel", shape=(hidden, channels), initializer=glorot(self.seed, 2)
        )
        self.output_bias = self.add_weight(
            name="output_bias", shape=(channels,), initializer="zeros"
        )

    def _mlp(self, descriptor):
        hidden = ops.relu(ops.matmul(descriptor, self.hidden_kernel) + self.hidden_bias)
        return ops.matmul(hidden, self.output_kernel) + self.output_bias

    def call(self, inputs, training=None, return_attention=False):
        average = ops.mean(inputs, axis=(1, 2), keepdims=True)
        maximum = ops.max(inputs, axis=(1, 2), keepdims=True)
        gate = ops.sigmoid(self._mlp(average) + self._mlp(maximum))
        outputs = inputs * gate
        return (outputs, gate) if return_attention else outputs

    def compute_output_shape(self, input_shape, return_attention=False):
        input_shape = tuple(input_shape)
        gate_shape = (input_shape[0], 1, 1, input_shape[-1])
        return (input_shape, gate_shape) if return_attention else input_shape

    def get_config(self):
        config = super().get_config()
        config.update(reduction=self.reduction, min_hidden=self.min_hidden, seed=self.seed)
        return config


@keras.saving.register_keras_serializable(package="keras_attn_legacy")
class LegacySpatialAttention(AttentionLayer):
    """Spatial attention of CBAM: a per-position sigmoid gate from channel statistics.

    The channel-wise mean and max are stacked into a `(batch, height, width, 2)`
    map, convolved to one channel (`kernel_size` x `kernel_size`, "same"),
    optionally batch-normalised, squashed by a sigmoid and multiply the input.

    Args:
        kernel_size: int, side of the convolution window.
        use_batchnorm: bool, batch-normalise the gate logits (as in CBAM).
        seed: optional int, makes the initial weights reproducible.
        **kwargs: base `keras.layers.Layer` arguments.

    Input shape: `(batch, height, width, channels)`.
    Output shape: the same; with `return_attention=True`, also the spatial map
    `(batch, height, width, 1)` in `[0, 1]`.

    Example:
    >>> x = keras.random.normal((2, 8, 8, 32))
    >>> y, where = SpatialAttention(kernel_size=7, seed=0)(x, return_attention=True)
    >>> tuple(y.shape), tuple(where.shape)
    ((2, 8, 8, 32), (2, 8, 8, 1))

    Reference: Woo et al., "CBAM: Convolutional Block Attention Module", ECCV 2018.
    """

    def __init__(self, kernel_size=7, use_batchnorm=True, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.kernel_size = kernel_size
        self.use_batchnorm = use_batchnorm
        self.seed = seed
        # A bias before batch normalisation would be cancelled by its centring.
        self.conv = keras.layers.Conv2D(
            1,
            kernel_size,
            padding="same",
            use_bias=not use_batchnorm,
            kernel_initializer=glorot(seed, 1),
            dtype=self.dtype_policy,
            name="conv",
        )
        self.norm = None
        if use_batchnorm:
            self.norm = keras.layers.BatchNormalization(dtype=self.dtype_policy, name="norm")

    def build(self, input_shape):
        stats_shape = (*input_shape[:-1], 2)
        self.conv.build(stats_shape)
        if self.norm is not None:
            self.norm.build((*input_shape[:-1], 1))

    def call(self, inputs, training=None, return_attention=False):
        stats = ops.concatenate(
            [ops.mean(inputs, axis=-1, keepdims=True), ops.max(inputs, axis=-1, keepdims=True)],
            axis=-1,
        )
        logits = self.conv(stats)
        if self.norm is not None:
            logits = self.norm(logits, training=training)
        attention = ops.sigmoid(logits)
        outputs = inputs * attention
        return (outputs, attention) if return_attention else outputs

    def compute_output_shape(self, input_shape, return_attention=False):
        input_shape = tuple(input_shape)
        return (input_shape, (*input_shape[:-1], 1)) if return_attention else input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            kernel_size=self.kernel_size, use_batchnorm=self.use_batchnorm, seed=self.seed
        )
        return config


@keras.saving.register_keras_serializable(package="keras_attn_legacy")
class LegacyCBAM(AttentionLayer):
    """Convolutional Block Attention Module: `spatial(channel(x))`.

    Args:
        reduction: int, channel reduction ratio of the channel gate's MLP.
        min_hidden: int, lower bound on that MLP's hidden width.
        kernel_size: int, convolution window of the spatial gate.
        use_batchnorm: bool, batch-normalise the spatial gate's logits.
        seed: optional int, makes the initial weights reproducible.
        **kwargs: base `keras.layers.Layer` arguments.

    Input shape: `(batch, height, width, channels)`.
    Output shape: the same; with `return_attention=True`, also the spatial map
    `(batch, height, width, 1)` in `[0, 1]`.

    Example:
    >>> x = keras.random.normal((2, 8, 8, 32))
    >>> y, where = CBAM(seed=0)(x, return_attention=True)
    >>> tuple(y.shape), tuple(where.shape)
    ((2, 8, 8, 32), (2, 8, 8, 1))

    Reference: Woo et al., "CBAM: Convolutional Block Attention Module", ECCV 2018.
    """

    def __init__(
        self, reduction=16, min_hidden=8, kernel_size=7, use_batchnorm=True, seed=None, **kwargs
    ):
        super().__init__(**kwargs)
        self.reduction = reduction
        self.min_hidden = min_hidden
        self.kernel_size = kernel_size
        self.use_batchnorm = use_batchnorm
        self.seed = seed
        self.channel = LegacyChannelAttention(
            reduction, min_hidden, seed=seed, dtype=self.dtype_policy, name="channel"
        )
        self.spatial = LegacySpatialAttention(
            kernel_size,
            use_batchnorm,
            seed=derive(seed, 100),
            dtype=self.dtype_policy,
            name="spatial",
        )

    def build(self, input_shape):
        self.channel.build(input_shape)
        self.spatial.build(input_shape)

    def call(self, inputs, training=None, return_attention=False):
        gated = self.channel(inputs, training=training)
        return self.spatial(gated, training=training, return_attention=return_attention)

    def compute_output_shape(self, input_shape, return_attention=False):
        return self.spatial.compute_output_shape(input_shape, return_attention)

    def get_config(self):
        config = super().get_config()
        config.update(
            reduction=self.reduction,
            min_hidden=self.min_hidden,
            kernel_size=self.kernel_size,
            use_batchnorm=self.use_batchnorm,
            seed=self.seed,
        )
        return config
