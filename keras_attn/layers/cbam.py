"""CBAM: channel gate, then spatial gate."""

import keras

from keras_attn.layers._base import AttentionLayer
from keras_attn.layers._seeding import derive
from keras_attn.layers.channel_attention import ChannelAttention
from keras_attn.layers.spatial_attention import SpatialAttention


@keras.saving.register_keras_serializable(package="keras_attn")
class CBAM(AttentionLayer):
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
        self.channel = ChannelAttention(
            reduction, min_hidden, seed=seed, dtype=self.dtype_policy, name="channel"
        )
        self.spatial = SpatialAttention(
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
