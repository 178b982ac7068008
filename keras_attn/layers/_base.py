"""Symbolic outputs for the layers whose `call` can also return attention weights, and the
gates' shared pooling."""

import inspect

import keras
from keras import ops


class AttentionLayer(keras.layers.Layer):
    """Base of the layers that take `return_attention` in `call`.

    Subclasses implement `compute_output_shape(input_shape, return_attention=False)`.
    Keras would pass that method the input shape only, and so build one symbolic
    output where a functional model asked for two (outputs and attention weights);
    this reads `return_attention` from the call instead. Every output is in the
    layer's compute dtype, as `call` returns it.
    """

    def compute_output_spec(self, inputs, *args, **kwargs):
        call = inspect.signature(self.call).bind(inputs, *args, **kwargs)
        return_attention = call.arguments.get("return_attention", False)
        shapes = self.compute_output_shape(inputs.shape, return_attention=return_attention)
        return keras.tree.map_shape_structure(
            lambda shape: keras.KerasTensor(shape, dtype=self.compute_dtype), shapes
        )


def mean_and_max(x, axis):
    """`concatenate([mean(x, axis), max(x, axis)], -1)` (keepdims) in one op of the graph's
    backward: (B,H,W,C) -> (B,1,1,2C) for `axis=(1, 2)`, (B,H,W,2) for `axis=-1`.

    The values are those of `ops.mean` and `ops.max`. The gradient is the one autodiff gives
    (the mean's spread evenly, the max's shared evenly among tied maxima, as TensorFlow and
    JAX both do), written as one expression: autodiff built it from a broadcast, an
    equality, a cast, a sum, a division, a product and an addition of full-size tensors;
    here it is an equality, a tie count and one select.
    Tie counts are taken in float32 (exact under bfloat16 too).
    """
    axes = tuple(a % len(x.shape) for a in ((axis,) if isinstance(axis, int) else axis))

    @ops.custom_gradient
    def pooled(x):
        mean = ops.mean(x, axis=axes, keepdims=True)
        peak = ops.max(x, axis=axes, keepdims=True)

        def grad(*args, upstream=None):
            upstream = args[0] if upstream is None else upstream
            d_mean, d_peak = ops.split(upstream, 2, axis=-1)
            shape = ops.shape(x)
            size = 1
            for a in axes:
                size = size * shape[a]
            hit = ops.equal(x, peak)
            ties = ops.sum(ops.cast(hit, "float32"), axis=axes, keepdims=True)
            share = ops.cast(ops.cast(d_peak, "float32") / ties, x.dtype)
            spread = ops.cast(ops.cast(d_mean, "float32") / ops.cast(size, "float32"), x.dtype)
            # One select over the full map (cast(hit) * share + spread took three passes).
            return ops.where(hit, share + spread, spread)

        return ops.concatenate([mean, peak], axis=-1), grad

    return pooled(x)
