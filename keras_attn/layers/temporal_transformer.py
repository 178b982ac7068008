"""Transformer encoder over frames, pooled by temporal attention."""

import keras
from keras import ops

from keras_attn.layers._masking import ClipEncoder, frame_mask
from keras_attn.layers._seeding import derive, glorot
from keras_attn.layers.temporal_pooling import AttentionPooling


@keras.saving.register_keras_serializable(package="keras_attn")
class TransformerBlock(keras.layers.Layer):
    """Pre-LayerNorm transformer block: masked self-attention and a feed-forward net.

    Args:
        num_heads: int, attention heads.
        key_dim: int, width of each head.
        ff_dim: int, hidden width of the feed-forward net (`gelu`).
        dropout: float, dropout rate on both residual branches and the attention weights.
        seed: optional int, makes the initial weights reproducible.
        **kwargs: base `keras.layers.Layer` arguments.

    Input shape: `(batch, frames, num_heads * key_dim)` and optional boolean `attention_mask`
    `(batch, frames, frames)`.
    Output shape: the same.

    Example:
    >>> y = TransformerBlock(num_heads=2, key_dim=8, ff_dim=32)(keras.random.normal((2, 6, 16)))
    >>> tuple(y.shape)
    (2, 6, 16)

    Reference: Xiong et al., "On Layer Normalization in the Transformer
    Architecture", ICML 2020 (pre-LN); Vaswani et al., NeurIPS 2017.
    """

    def __init__(self, num_heads=4, key_dim=32, ff_dim=128, dropout=0.1, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.ff_dim = ff_dim
        self.dropout = dropout
        self.seed = seed
        policy = self.dtype_policy
        self.attention_norm = keras.layers.LayerNormalization(dtype=policy, name="attention_norm")
        self.attention = keras.layers.MultiHeadAttention(
            num_heads,
            key_dim,
            dropout=dropout,
            kernel_initializer=glorot(seed, 1),
            seed=derive(seed, 10),
            dtype=policy,
            name="attention",
        )
        self.attention_dropout = keras.layers.Dropout(
            dropout, seed=derive(seed, 11), dtype=policy, name="attention_dropout"
        )
        self.ff_norm = keras.layers.LayerNormalization(dtype=policy, name="ff_norm")
        self.ff_hidden = keras.layers.Dense(
            ff_dim,
            activation="gelu",
            kernel_initializer=glorot(seed, 5),
            dtype=policy,
            name="ff_hidden",
        )
        self.ff_output = keras.layers.Dense(
            num_heads * key_dim, kernel_initializer=glorot(seed, 6), dtype=policy, name="ff_output"
        )
        self.ff_dropout = keras.layers.Dropout(
            dropout, seed=derive(seed, 12), dtype=policy, name="ff_dropout"
        )

    def build(self, input_shape):
        self.attention_norm.build(input_shape)
        self.attention.build(input_shape, input_shape)
        # MultiHeadAttention gives each projection a clone of its initializer, so one
        # seed would make the query and key kernels identical: redraw the others.
        if self.seed is not None:
            projections = (self.attention.key_dense, self.attention.value_dense)
            for offset, dense in enumerate((*projections, self.attention.output_dense), start=2):
                dense.kernel.assign(glorot(self.seed, offset)(dense.kernel.shape))
        self.ff_norm.build(input_shape)
        self.ff_hidden.build(input_shape)
        self.ff_output.build((*input_shape[:-1], self.ff_dim))

    def call(self, inputs, attention_mask=None, training=None):
        x = self.attention_norm(inputs)
        x = self.attention(x, x, attention_mask=attention_mask, training=training)
        x = inputs + self.attention_dropout(x, training=training)
        update = self.ff_output(self.ff_hidden(self.ff_norm(x)))
        return x + self.ff_dropout(update, training=training)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_heads=self.num_heads,
            key_dim=self.key_dim,
            ff_dim=self.ff_dim,
            dropout=self.dropout,
            seed=self.seed,
        )
        return config


@keras.saving.register_keras_serializable(package="keras_attn")
class TransformerEncoder(ClipEncoder):
    """Transformer encoder over frames: projection, learned positions, blocks, attention pooling.

    Frames are projected to width `d = num_heads * key_dim`, given learned
    positional embeddings, passed through `num_layers` pre-LN blocks whose
    self-attention ignores padded frames, normalised, and pooled by
    `AttentionPooling` over the valid frames.

    Args:
        num_layers: int, number of transformer blocks.
        num_heads: int, attention heads per block.
        key_dim: int, width of each head.
        ff_dim: int, hidden width of each feed-forward net.
        dropout: float, dropout rate inside the blocks and after the embedding.
        max_frames: int, longest clip the positional embedding covers.
        seed: optional int, makes the initial weights reproducible.
        **kwargs: base `keras.layers.Layer` arguments.

    Input shape: `(batch, frames, features)` with `frames <= max_frames`, and
    optional `mask` `(batch, frames)`.
    Output shape: `(batch, num_heads * key_dim)`; with `return_attention=True`,
    also the final attention pooling's frame weights `(batch, frames)`.

    Example:
    >>> x = keras.random.normal((2, 8, 32))
    >>> clip, weights = TransformerEncoder(num_heads=2, key_dim=8, seed=0)(
    ...     x, return_attention=True)
    >>> tuple(clip.shape), tuple(weights.shape)
    ((2, 16), (2, 8))

    Reference: Vaswani et al., "Attention Is All You Need", NeurIPS 2017.
    """

    def __init__(
        self,
        num_layers=1,
        num_heads=4,
        key_dim=32,
        ff_dim=128,
        dropout=0.1,
        max_frames=64,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.ff_dim = ff_dim
        self.dropout = dropout
        self.max_frames = max_frames
        self.seed = seed
        policy = self.dtype_policy
        self.projection = keras.layers.Dense(
            num_heads * key_dim, kernel_initializer=glorot(seed, 1), dtype=policy, name="projection"
        )
        self.embedding_dropout = keras.layers.Dropout(
            dropout, seed=derive(seed, 3), dtype=policy, name="embedding_dropout"
        )
        self.blocks = [
            TransformerBlock(
                num_heads,
                key_dim,
                ff_dim,
                dropout,
                seed=derive(seed, 100 * (i + 1)),
                dtype=policy,
                name=f"block{i}",
            )
            for i in range(num_layers)
        ]
        self.norm = keras.layers.LayerNormalization(dtype=policy, name="norm")
        self.pooling = AttentionPooling(key_dim, seed=derive(seed, 4), dtype=policy, name="pooling")

    def build(self, input_shape):
        width = self.num_heads * self.key_dim
        self.position_embedding = self.add_weight(
            name="position_embedding",
            shape=(self.max_frames, width),
            initializer=glorot(self.seed, 2),
        )
        self.projection.build(input_shape)
        shape = (*input_shape[:-1], width)
        for block in self.blocks:
            block.build(shape)
        self.norm.build(shape)
        self.pooling.build(shape)

    def _clip_width(self, input_shape):
        return self.num_heads * self.key_dim

    def call(self, inputs, mask=None, training=None, return_attention=False):
        mask = frame_mask(mask, inputs)
        frames, width = ops.shape(inputs)[1], self.num_heads * self.key_dim
        # A tensor, not the variable: JAX 0.11's dynamic_slice refuses Keras variables.
        table = ops.convert_to_tensor(self.position_embedding)
        positions = ops.slice(table, (0, 0), (frames, width))
        x = self.projection(inputs) + positions[None]
        x = self.embedding_dropout(x, training=training)
        # Every frame may attend to valid frames only (a row per query frame).
        valid = mask > 0
        attention_mask = ops.logical_and(valid[:, None, :], ops.ones_like(valid)[:, :, None])
        for block in self.blocks:
            x = block(x, attention_mask=attention_mask, training=training)
        x = self.norm(x)
        return self.pooling(x, mask=mask, training=training, return_attention=return_attention)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_layers=self.num_layers,
            num_heads=self.num_heads,
            key_dim=self.key_dim,
            ff_dim=self.ff_dim,
            dropout=self.dropout,
            max_frames=self.max_frames,
            seed=self.seed,
        )
        return config
