"""Image attention applied to every frame's feature map, then spatial pooling."""

import keras
from keras import ops

from keras_attn.layers._base import AttentionLayer


@keras.saving.register_keras_serializable(package="keras_attn")
class FramewiseAttention(AttentionLayer):
    """Runs one image attention block on each frame's map and pools it to a vector.

    The frames share the block's weights, as `TimeDistributed` would; this layer
    exists because the attention blocks return `(outputs, map)` on request, which
    `TimeDistributed` cannot pass through.

    Args:
        attention: str, an image attention name ("spatial", "cbam", ...).
        options: dict, that attention's options (`reduction`, `kernel_size`, `seed`...).
        **kwargs: base `keras.layers.Layer` arguments.

    Input shape: `(batch, frames, height, width, channels)`.
    Output shape: `(batch, frames, channels)`; with `return_attention=True`, also
    the per-frame maps `(batch, frames, height, width, 1)` in `[0, 1]`.

    Example:
    >>> x = keras.random.normal((2, 8, 3, 3, 64))
    >>> vectors, maps = FramewiseAttention("spatial")(x, return_attention=True)
    >>> tuple(vectors.shape), tuple(maps.shape)
    ((2, 8, 64), (2, 8, 3, 3, 1))
    """

    def __init__(self, attention="spatial", options=None, **kwargs):
        super().__init__(**kwargs)
        from keras_attn.layers import get_attention  # the registry imports this module

        self.attention = attention
        self.options = dict(options or {})
        self.block = get_attention(attention, name="block", dtype=self.dtype_policy, **self.options)

    def build(self, input_shape):
        self.block.build((None, *input_shape[2:]))

    def call(self, inputs, training=None, return_attention=False):
        shape = ops.shape(inputs)
        batch, frames = shape[0], shape[1]
        per_frame = ops.reshape(inputs, (-1, *inputs.shape[2:]))
        attended, maps = self.block(per_frame, training=training, return_attention=True)
        vectors = ops.reshape(ops.mean(attended, axis=(1, 2)), (batch, frames, inputs.shape[-1]))
        if not return_attention:
            return vectors
        return vectors, ops.reshape(maps, (batch, frames, *maps.shape[1:]))

    def compute_output_shape(self, input_shape, return_attention=False):
        batch, frames, *frame_shape = input_shape
        vectors = (batch, frames, frame_shape[-1])
        if not return_attention:
            return vectors
        _, map_shape = self.block.compute_output_shape((None, *frame_shape), True)
        return vectors, (batch, frames, *map_shape[1:])

    def get_config(self):
        config = super().get_config()
        config.update(attention=self.attention, options=self.options)
        return config
