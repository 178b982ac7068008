"""CBAM's channel gate: which feature maps matter."""

import keras
from keras import ops

from keras_attn.layers._base import AttentionLayer, mean_and_max
from keras_attn.layers._seeding import glorot, he


@keras.saving.register_keras_serializable(package="keras_attn")
class ChannelAttention(AttentionLayer):
    """Channel attention of CBAM: a per-channel sigmoid gate from pooled descriptors.

    The average- and max-pooled channel descriptors go through one shared
    two-layer MLP (`C -> max(C // reduction, min_hidden)` relu `-> C`); the two
    results are summed, squashed by a sigmoid and multiply the input. Both descriptors
    come from one pooling op and pass through the MLP together (stacked), which is the
    same function with fewer, larger ops.

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

    def call(self, inputs, training=None, return_attention=False):
        channels = inputs.shape[-1]
        # Both descriptors in one pooling op, through the MLP's first layer in one matmul;
        # its second layer is linear, so mlp(avg) + mlp(max) = (h_avg + h_max) W2 + 2 b2.
        descriptors = ops.reshape(mean_and_max(inputs, axis=(1, 2)), (-1, 2, channels))
        hidden = ops.relu(ops.matmul(descriptors, self.hidden_kernel) + self.hidden_bias)
        logits = ops.matmul(ops.sum(hidden, axis=1), self.output_kernel) + 2.0 * self.output_bias
        # The sigmoid in float32 (the compute dtype may be half precision).
        gate = ops.cast(ops.sigmoid(ops.cast(logits, "float32")), inputs.dtype)
        gate = ops.reshape(gate, (-1, 1, 1, channels))
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
