"""No attention: the baseline every attention layer is compared against."""

import keras
from keras import ops

from keras_attn.layers._base import AttentionLayer


@keras.saving.register_keras_serializable(package="keras_attn")
class IdentityAttention(AttentionLayer):
    """Returns its input unchanged; the `none` entry of the attention registry.

    Args:
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Input shape: `(batch, height, width, channels)`.
    Output shape: the same; with `return_attention=True`, also a map of ones
    `(batch, height, width, 1)` (every position fully kept).

    Example:
    >>> x = keras.random.normal((2, 8, 8, 16))
    >>> y, attention = IdentityAttention()(x, return_attention=True)
    >>> tuple(y.shape), tuple(attention.shape)
    ((2, 8, 8, 16), (2, 8, 8, 1))

    Reference: none; the baseline of the study.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs, training=None, return_attention=False):
        if return_attention:
            return inputs, ops.ones_like(inputs[..., :1])
        return inputs

    def compute_output_shape(self, input_shape, return_attention=False):
        input_shape = tuple(input_shape)
        return (input_shape, (*input_shape[:-1], 1)) if return_attention else input_shape
