"""Symbolic outputs for the layers whose `call` can also return attention weights."""

import inspect

import keras


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
