"""No attention: the baseline every attention layer is compared against."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_attn")
class IdentityAttention(keras.layers.Layer):
    """Returns its input unchanged; the `none` entry of the attention registry.

    Args:
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Input shape: `(batch, height, width, channels)`.
    Output shape: the same; with `return_attention=True`, also a map of ones
    `(batch, height, width, 1)` (every position fully kept).

    Example:
    >>> x = keras.random.normal((2, 8, 8, 16))
    >>> y, attention = IdentityAttention()(x, return_attention=True)

    Reference: none; the baseline of the study.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs, training=None, return_attention=False):
        if return_attention:
            return inputs, ops.ones_like(inputs[..., :1])
        return inputs
