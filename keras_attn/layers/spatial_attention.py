"""CBAM's spatial gate: where in the feature map to look."""

import keras
from keras import ops

from keras_attn.layers._base import AttentionLayer, mean_and_max
from keras_attn.layers._seeding import glorot


@keras.saving.register_keras_serializable(package="keras_attn")
class SpatialAttention(AttentionLayer):
    """Spatial attention of CBAM: a per-position sigmoid gate from channel statistics.

    The channel-wise mean and max are stacked into a `(batch, height, width, 2)`
    map (one pooling op), convolved to one channel (`kernel_size` x `kernel_size`, "same"),
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
        logits = self.conv(mean_and_max(inputs, axis=-1))  # (B, H, W, 2): [mean, max]
        if self.norm is not None:
            logits = self.norm(logits, training=training)
        # The sigmoid in float32 (the compute dtype may be half precision).
        attention = ops.cast(ops.sigmoid(ops.cast(logits, "float32")), inputs.dtype)
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
