"""Linear self-attention over spatial tokens: the attention head of the original study."""

import keras
from keras import ops

from keras_attn.layers._base import AttentionLayer
from keras_attn.layers._seeding import derive, glorot

# Keeps the normaliser positive where elu(x) + 1 underflows to zero for very negative x.
_EPSILON = 1e-6


@keras.saving.register_keras_serializable(package="keras_attn")
class LinearAttention(AttentionLayer):
    """Linear (kernelised) self-attention over the `height * width` tokens of a feature map.

    With the feature map `phi(x) = elu(x) + 1`, attention weights are
    `A_ij = phi(q_i) . phi(k_j) / sum_j' phi(q_i) . phi(k_j')`, evaluated in
    `O(N d)` as `phi(q_i) (sum_j phi(k_j) v_j^T) / z_i`, never forming the `N x N`
    matrix. The attended values go through an output projection, a residual
    connection and LayerNorm, then a feed-forward block (`gelu`, width
    `ff_multiplier * channels`) with its own residual and LayerNorm.

    Args:
        num_heads: int, number of attention heads.
        key_dim: optional int, width of each head; default `channels // num_heads`.
        ff_multiplier: int, feed-forward width as a multiple of `channels`.
        dropout: float, dropout rate on the attention and feed-forward outputs.
        seed: optional int, makes the initial weights reproducible.
        **kwargs: base `keras.layers.Layer` arguments.

    Input shape: `(batch, height, width, channels)`; height and width may be dynamic.
    Output shape: the same; with `return_attention=True`, also the attention each
    token receives, `(1/N) sum_i A_ij` averaged over heads and divided by its
    per-image maximum: `(batch, height, width, 1)` in `[0, 1]`.

    Example:
    >>> x = keras.random.normal((2, 8, 8, 32))
    >>> y, received = LinearAttention(num_heads=4, seed=0)(x, return_attention=True)
    >>> tuple(y.shape), tuple(received.shape)
    ((2, 8, 8, 32), (2, 8, 8, 1))

    Reference: Katharopoulos et al., "Transformers are RNNs: Fast Autoregressive
    Transformers with Linear Attention", ICML 2020.
    """

    def __init__(
        self, num_heads=4, key_dim=None, ff_multiplier=2, dropout=0.0, seed=None, **kwargs
    ):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.ff_multiplier = ff_multiplier
        self.dropout = dropout
        self.seed = seed
        policy = self.dtype_policy
        self.attention_norm = keras.layers.LayerNormalization(dtype=policy, name="attention_norm")
        self.ff_norm = keras.layers.LayerNormalization(dtype=policy, name="ff_norm")
        self.attention_dropout = keras.layers.Dropout(
            dropout, seed=derive(seed, 7), dtype=policy, name="attention_dropout"
        )
        self.ff_dropout = keras.layers.Dropout(
            dropout, seed=derive(seed, 8), dtype=policy, name="ff_dropout"
        )

    # Projection widths depend on the input's channels, so these are weights made
    # here rather than Dense sublayers (sublayers are fixed in __init__).
    def build(self, input_shape):
        channels = input_shape[-1]
        self._head_dim = self.key_dim or max(channels // self.num_heads, 1)
        width = self.num_heads * self._head_dim
        hidden = self.ff_multiplier * channels

        def weight(name, shape, offset=None):
            initializer = "zeros" if offset is None else glorot(self.seed, offset)
            return self.add_weight(name=name, shape=shape, initializer=initializer)

        self.query_kernel = weight("query_kernel", (channels, width), 1)
        self.key_kernel = weight("key_kernel", (channels, width), 2)
        self.value_kernel = weight("value_kernel", (channels, width), 3)
        self.output_kernel = weight("output_kernel", (width, channels), 4)
        self.output_bias = weight("output_bias", (channels,))
        self.ff_kernel = weight("ff_kernel", (channels, hidden), 5)
        self.ff_bias = weight("ff_bias", (hidden,))
        self.ff_output_kernel = weight("ff_output_kernel", (hidden, channels), 6)
        self.ff_output_bias = weight("ff_output_bias", (channels,))
        self.attention_norm.build((None, None, channels))
        self.ff_norm.build((None, None, channels))

    def _split_heads(self, tokens, kernel):
        projected = ops.matmul(tokens, kernel)
        batch = ops.shape(tokens)[0]
        projected = ops.reshape(projected, (batch, -1, self.num_heads, self._head_dim))
        return ops.transpose(projected, (0, 2, 1, 3))

    def call(self, inputs, training=None, return_attention=False):
        batch, height, width = ops.shape(inputs)[0], ops.shape(inputs)[1], ops.shape(inputs)[2]
        channels = inputs.shape[-1]
        tokens = ops.reshape(inputs, (batch, -1, channels))

        # The sums over all H*W tokens overflow float16 (max 65504) under mixed precision
        # (NaN logits at 64x64 tokens on a GPU): attention is computed in float32.
        phi_q = ops.cast(ops.elu(self._split_heads(tokens, self.query_kernel)) + 1.0, "float32")
        phi_k = ops.cast(ops.elu(self._split_heads(tokens, self.key_kernel)) + 1.0, "float32")
        values = ops.cast(self._split_heads(tokens, self.value_kernel), "float32")
        context = ops.einsum("bhnd,bhne->bhde", phi_k, values)
        normalizer = ops.einsum("bhnd,bhd->bhn", phi_q, ops.sum(phi_k, axis=2)) + _EPSILON
        attended = ops.einsum("bhnd,bhde->bhne", phi_q, context) / normalizer[..., None]
        attended = ops.cast(attended, tokens.dtype)
        attended = ops.transpose(attended, (0, 2, 1, 3))
        attended = ops.reshape(attended, (batch, -1, self.num_heads * self._head_dim))
        projected = ops.matmul(attended, self.output_kernel) + self.output_bias
        x = self.attention_norm(tokens + self.attention_dropout(projected, training=training))

        hidden = ops.gelu(ops.matmul(x, self.ff_kernel) + self.ff_bias, approximate=False)
        update = ops.matmul(hidden, self.ff_output_kernel) + self.ff_output_bias
        x = self.ff_norm(x + self.ff_dropout(update, training=training))
        outputs = ops.reshape(x, (batch, height, width, channels))
        if not return_attention:
            return outputs

        # Column mean of A without A: mean_i A_ij = phi(k_j) . mean_i(phi(q_i) / z_i).
        query_share = ops.mean(phi_q / normalizer[..., None], axis=2)
        received = ops.mean(ops.einsum("bhnd,bhd->bhn", phi_k, query_share), axis=1)
        received = received / ops.max(received, axis=1, keepdims=True)
        # Back from float32 to the compute dtype, which compute_output_spec promises.
        received = ops.cast(received, outputs.dtype)
        return outputs, ops.reshape(received, (batch, height, width, 1))

    def compute_output_shape(self, input_shape, return_attention=False):
        input_shape = tuple(input_shape)
        return (input_shape, (*input_shape[:-1], 1)) if return_attention else input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            num_heads=self.num_heads,
            key_dim=self.key_dim,
            ff_multiplier=self.ff_multiplier,
            dropout=self.dropout,
            seed=self.seed,
        )
        return config
